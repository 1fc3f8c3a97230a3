import os
import shutil
import sys
from pathlib import Path

# Triton kernels run on the CPU through Triton's interpreter when no GPU is present: that is how CI
# tests the fused cross-entropy. It must be set before triton is first imported.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# the scripts live flat in the repository root: make them importable as modules
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
