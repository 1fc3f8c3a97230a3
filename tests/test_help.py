"""Every script's --help runs and opens with whole sentences: a description cut at the docstring's first
line ("... signatures of word 5-grams,") reads as broken."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([p.name for p in ROOT.glob("*.py") if "if __name__ ==" in p.read_text(encoding="utf-8")] +
                 [f"bench/{p.name}" for p in (ROOT / "bench").glob("*.py")])
SENTENCE_END = re.compile(r"""[.?!]["')\]]*$""")


# one interpreter runs every script's --help in turn (runpy, as __main__), so torch and the other
# heavy imports load once: a process per script took ~45 s of CPU on 2 cores, this takes a fraction
DRIVER = """
import contextlib, io, json, runpy, sys
results = {}
for script in sys.argv[1:]:
    out, err, status = io.StringIO(), io.StringIO(), 0
    sys.argv = [script, "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            status, err = 1, io.StringIO(f"{type(e).__name__}: {e}")
    results[script] = [status, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory):
    """{script: (exit status, stdout, stderr)} of `python SCRIPT --help`, run from an empty folder."""
    done = subprocess.run([sys.executable, "-c", DRIVER, *[str(ROOT / s) for s in SCRIPTS]],
                          cwd=tmp_path_factory.mktemp("help"), capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {script: results[str(ROOT / script)] for script in SCRIPTS}


def test_the_scripts_are_found():
    assert {"train.py", "dedup.py", "sample.py", "bench/train.py", "bench/prepare.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_starts_with_whole_sentences(helps, script):
    status, out, err = helps[script]
    assert status == 0, f"{script} --help exited {status}: {err[-1000:]}"
    blocks = out.strip().split("\n\n")  # usage, then the description, then the options
    assert len(blocks) > 2 and blocks[0].startswith("usage:"), f"{script} --help: {out[:500]}"
    description = " ".join(blocks[1].split())
    assert not description.endswith(":") and not re.match(r"(options|positional arguments)\b", description), \
        f"{script} --help has no description"
    assert SENTENCE_END.search(description), f"{script} --help's description stops mid-sentence: ...{description[-80:]!r}"
