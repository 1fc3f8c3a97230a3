"""bench/ scripts with their defaults: they must run as the README shows them, not only with --data."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# the demo preset's vocabulary and layout, shrunk so that a run takes seconds
SMALL_PRESET = """exec(open({tiny!r}).read())
n_layer, n_head, n_embd, block_size, batch_size, batch_tokens = 1, 2, 32, 64, 2, 128
"""


def test_bench_train_default_data_fits_a_trained_tokenizer_preset(tmp_path):
    # the preset has the demo's 4,096-token vocabulary: the sample tokenized with GPT-2 (50,257 tokens)
    # stopped every CPU mode; now a tokenizer of that size is trained on the sample first
    preset = tmp_path / "small.py"
    preset.write_text(SMALL_PRESET.format(tiny=str(ROOT / "config" / "tiny_cpu.py")))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train.py"), "--mode=mixture", "--steps=4",
                           "--repeats=1", f"--preset={preset}"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3-source mixture" in done.stdout and "one folder" in done.stdout
    # the mixture's sources carry the trained tokenizer too, not GPT-2's assumed for a folder with no report
    assert "gpt2 tokens assumed" not in done.stdout + done.stderr
    assert "tokenizer gpt2" not in done.stdout
