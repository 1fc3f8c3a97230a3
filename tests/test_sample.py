"""sample.py: generation with and without the KV cache, seeding, top-k / top-p, UTF-8 streaming,
and the one-line errors for checkpoints that are not usable. Tiny random models, built here."""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sample
from model import GPT, GPTConfig
from tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def tiny_model(vocab_size, seed=0, **overrides):
    torch.manual_seed(seed)
    args = dict(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=vocab_size, dropout=0.0,
                bias=False)
    args.update(overrides)
    return GPT(GPTConfig(**args)).eval(), args


def save_checkpoint(path, model, model_args, **changes):
    """A checkpoint as train.py writes it, with the torch.compile prefix on the weights."""
    ckpt = {"model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
            "model_args": model_args, "tokenizer": "gpt2", "version": 1, "step": 7}
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory):
    model, args = tiny_model(50304)  # GPT-2's vocabulary padded to a multiple of 64, as nanoGPT
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", model, args)


def generate(model, idx, steps, **kw):
    with torch.no_grad():
        return torch.cat(list(model.generate(idx, steps, **kw)), dim=1)


def last_logits(model, idx):
    """Next-token scores after each row of idx, recomputed from scratch (no cache)."""
    with torch.no_grad():
        logits = model(idx)[0]
    return logits[:, -1, :].float()


def test_greedy_with_and_without_cache_agree():
    model, _ = tiny_model(64)
    idx = torch.randint(0, 64, (3, 5), generator=torch.Generator().manual_seed(1))
    cached = generate(model, idx, 20, temperature=0, use_cache=True)
    uncached = generate(model, idx, 20, temperature=0, use_cache=False)
    assert cached.shape == (3, 20)
    assert torch.equal(cached, uncached)
    # and greedy really is the argmax of the full forward pass at every step
    seq = torch.cat([idx, cached], dim=1)
    for t in range(20):
        assert torch.equal(last_logits(model, seq[:, :5 + t]).argmax(-1), cached[:, t])


def test_generation_runs_past_block_size():
    model, _ = tiny_model(64)  # block_size 32: a 40-token prompt, then 50 more tokens
    idx = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(2))
    for use_cache in (True, False):
        out = generate(model, idx, 50, temperature=0, use_cache=use_cache)
        assert out.shape == (2, 50) and out.max() < 64


def test_sampling_with_and_without_cache_agree_under_same_seed():
    model, _ = tiny_model(64)
    idx = torch.zeros((2, 3), dtype=torch.long)
    torch.manual_seed(5)
    cached = generate(model, idx, 15, temperature=1.0, use_cache=True)
    torch.manual_seed(5)
    uncached = generate(model, idx, 15, temperature=1.0, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.5), (5, 0.3)])
def test_top_k_top_p_never_leave_their_set(top_k, top_p):
    vocab = 64
    model, _ = tiny_model(vocab, seed=3)
    rows, steps, temperature = 256, 4, 1.5
    idx = torch.randint(0, vocab, (1, 4)).repeat(rows, 1)
    torch.manual_seed(0)
    out = generate(model, idx, steps, temperature=temperature, top_k=top_k, top_p=top_p)
    seq = torch.cat([idx, out], dim=1)
    for t in range(steps):
        logits = last_logits(model, seq[:, :4 + t]) / temperature
        allowed = torch.ones_like(logits, dtype=torch.bool)
        if top_k is not None:
            kth = logits.topk(top_k, dim=-1).values[:, [-1]]
            allowed &= logits >= kth - 1e-4
        if top_p is not None:
            # the nucleus: the likeliest tokens until their probability reaches p (the one
            # crossing p included); computed here on the top-k survivors, as the filters chain
            probs = torch.softmax(logits.masked_fill(~allowed, -float("inf")), dim=-1)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            before = sorted_probs.cumsum(-1) - sorted_probs  # probability of the likelier tokens
            in_nucleus = torch.zeros_like(allowed).scatter(1, order, before < top_p + 1e-4)
            allowed &= in_nucleus
        chosen = allowed.gather(1, out[:, [t]]).squeeze(1)
        assert chosen.all(), f"step {t}: a token outside the top-k/top-p set was drawn"
        # the test can fail: the set is a strict subset, and sampling does explore inside it
        assert allowed.sum(-1).max() < vocab and out[:, t].unique().numel() > 1


class ScriptedModel(torch.nn.Module):
    """Stands in for GPT: generate() yields a fixed list of tokens."""

    def __init__(self, tokens):
        super().__init__()
        self.tokens, self.weight = tokens, torch.nn.Parameter(torch.zeros(1))

    def generate(self, idx, max_new_tokens, **kw):
        for token in self.tokens[:max_new_tokens]:
            yield torch.tensor([[token]])


def test_streaming_decodes_characters_split_over_tokens():
    enc = load_tokenizer("gpt2")
    text = "naïve café, 日本語のテキスト, emoji 🙂 done"
    tokens = enc.encode(text)
    # GPT-2 works on bytes: some of these tokens are pieces of one character
    assert any(not _is_utf8(enc.decode_single_token_bytes(t)) for t in tokens)
    pieces = []
    got = sample.stream_sample(ScriptedModel(tokens + [enc.eot_token, 11, 12]), enc, "", 100,
                               write=pieces.append)
    assert got == tokens  # stopped at end-of-text
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_padding_ids_beyond_the_tokenizer_do_not_crash():
    enc = load_tokenizer("gpt2")
    pieces = []
    tokens = enc.encode("a b") + [50300] + enc.encode(" c")  # 50300: padding, no text
    assert sample.stream_sample(ScriptedModel(tokens), enc, "", 10, write=pieces.append) == tokens
    assert "".join(pieces) == "a b\ufffd c"


def _is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def run_main(capsys, *argv):
    sample.main(list(argv))
    return capsys.readouterr()


def test_same_seed_same_text(gpt2_checkpoint, capsys):
    common = [f"--ckpt={gpt2_checkpoint}", "--prompt=The planner", "--max_new_tokens=12",
              "--num_samples=2", "--device=cpu", "--temperature=1.0"]
    first = run_main(capsys, *common, "--seed=1")
    again = run_main(capsys, *common, "--seed=1")
    other = run_main(capsys, *common, "--seed=2")
    assert first.out == again.out
    assert first.out != other.out
    assert first.out.startswith("The planner") and first.out.count("---------------") == 2
    assert "parameters" in first.err and "tokens/s" in first.err


def test_prompt_file_and_greedy(gpt2_checkpoint, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Überprüfung: ", encoding="utf-8")
    common = [f"--ckpt={gpt2_checkpoint}", f"--prompt_file={prompt}", "--max_new_tokens=8",
              "--temperature=0", "--device=cpu"]
    # greedy ignores the seed, and the cache changes nothing
    a = run_main(capsys, *common, "--seed=1")
    b = run_main(capsys, *common, "--seed=2", "--no_cache")
    assert a.out == b.out and a.out.startswith("Überprüfung: ")


def bad_checkpoints(tmp_path):
    model, args = tiny_model(50304)
    good = save_checkpoint(tmp_path / "good.pt", model, args)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint\n" * 10)
    wrong_shape = dict(args, n_embd=32)
    return {
        "missing": (tmp_path / "nope.pt", "no such file"),
        "garbage": (garbage, "not a PyTorch checkpoint"),
        "truncated": (truncated, "not a PyTorch checkpoint"),
        "not_a_dict": (_save(tmp_path / "list.pt", [1, 2, 3]), "expected a checkpoint dict"),
        "missing_keys": (_save(tmp_path / "keys.pt", {"model": {}, "step": 1}),
                         "missing key(s) model_args, tokenizer, version"),
        "version": (save_checkpoint(tmp_path / "v2.pt", model, args, version=2), "version 2"),
        "wrong_shape": (save_checkpoint(tmp_path / "shape.pt", model, wrong_shape),
                        "do not fit the model"),
        "bad_model_args": (save_checkpoint(tmp_path / "args.pt", model, dict(args, n_wings=2)),
                           "do not fit the model"),
        "code": (_save(tmp_path / "code.pt", {"model": argparse.Namespace(a=1)}),
                 "weights_only=True refuses"),
        "tokenizer": (save_checkpoint(tmp_path / "tok.pt", model, args,
                                      tokenizer=str(tmp_path / "missing.tiktoken")), "tokenizer"),
    }


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_bad_checkpoints_give_one_clear_line(tmp_path, capsys):
    for name, (path, expected) in bad_checkpoints(tmp_path).items():
        with pytest.raises(SystemExit) as exit_info:
            sample.main([f"--ckpt={path}", "--device=cpu", "--max_new_tokens=2"])
        assert exit_info.value.code == 1, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, (name, err)
        assert err.startswith(f"error: {path}:") and expected in err, (name, err)


def test_bad_checkpoint_from_the_command_line_has_no_traceback(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    result = subprocess.run([sys.executable, "sample.py", f"--ckpt={garbage}", "--device=cpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {garbage}: not a PyTorch checkpoint " \
                                    "(not a zip archive: truncated, or another kind of file)"


def test_tiny_temperatures_are_greedy(gpt2_checkpoint, capsys):
    common = [f"--ckpt={gpt2_checkpoint}", "--prompt=The planner", "--max_new_tokens=8", "--device=cpu"]
    greedy = run_main(capsys, *common, "--temperature=0")
    # 1e-40 is below float32's smallest normal: dividing the scores by it gave inf, then NaN
    # probabilities, and torch.multinomial raised
    for tiny_temperature in ("1e-40", "1e-30", "5e-5"):
        assert run_main(capsys, *common, f"--temperature={tiny_temperature}", "--seed=3").out == greedy.out


@pytest.mark.parametrize("temperature", ["nan", "inf", "-inf", "-1"])
def test_temperatures_that_are_not_finite_or_negative_are_refused(gpt2_checkpoint, capsys, temperature):
    with pytest.raises(SystemExit) as exit_info:
        sample.main([f"--ckpt={gpt2_checkpoint}", f"--temperature={temperature}", "--device=cpu"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == f"error: --temperature={float(temperature)} (expected a finite number >= 0)\n"


@pytest.mark.parametrize("flag,expected", [
    ("--top_p=0", "0 < top_p <= 1"), ("--top_p=1.5", "0 < top_p <= 1"), ("--top_p=nan", "0 < top_p <= 1"),
    ("--top_k=-1", "0 or more"), ("--num_samples=0", "1 or more"), ("--max_new_tokens=0", "1 or more")])
def test_a_bad_flag_is_named_with_its_value(gpt2_checkpoint, capsys, flag, expected):
    # one message for all: --top_p=0 read 'need a finite --temperature >= 0 (got 0.8), ...'
    with pytest.raises(SystemExit) as exit_info:
        sample.main([f"--ckpt={gpt2_checkpoint}", flag, "--device=cpu"])
    assert exit_info.value.code == 1
    name, value = flag.split("=")
    parsed = (float if name == "--top_p" else int)(value)
    assert capsys.readouterr().err == f"error: {name}={parsed} (expected {expected})\n"


def test_samples_from_an_exported_hugging_face_folder(gpt2_checkpoint, tmp_path, capsys):
    import export
    export.export(gpt2_checkpoint, "hf", tmp_path / "hf", "f32", log=lambda msg: None)
    common = ["--prompt=The planner", "--max_new_tokens=8", "--device=cpu", "--temperature=0"]
    from_folder = run_main(capsys, f"--ckpt={tmp_path / 'hf'}", *common)
    assert from_folder.out == run_main(capsys, f"--ckpt={gpt2_checkpoint}", *common).out
    assert "tokenizer gpt2" in from_folder.err


@pytest.mark.parametrize("device", ["foo", "cuda"])
def test_a_device_that_is_not_there_gives_one_line(gpt2_checkpoint, capsys, device):
    # both ended in a traceback from inside torch ("Torch not compiled with CUDA enabled")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        sample.main([f"--ckpt={gpt2_checkpoint}", f"--device={device}"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: --device={device}: ")


def test_a_closed_stdout_stops_quietly(gpt2_checkpoint, tmp_path, monkeypatch):
    # `python sample.py | head` ended in a BrokenPipeError traceback
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):  # a real descriptor, for the dup2 that keeps the exit quiet
            return replaced.fileno()
    with open(tmp_path / "stdout", "w") as replaced:
        monkeypatch.setattr(sys, "stdout", ClosedPipe())
        with pytest.raises(SystemExit) as exit_info:
            sample.main([f"--ckpt={gpt2_checkpoint}", "--device=cpu", "--max_new_tokens=2"])
    assert exit_info.value.code == 1


def test_help_says_what_each_flag_does_and_its_default(capsys):
    # --max_new_tokens and --seed had no help, and no default was shown (a top-k cut of 200 applies)
    with pytest.raises(SystemExit):
        sample.get_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [("--max_new_tokens MAX_NEW_TOKENS tokens", 200), ("--top_k TOP_K 0", 200),
                          ("--temperature TEMPERATURE 0", 0.8), ("--seed SEED the", 1337)]:
        assert flag in text and f"(default: {default})" in text.split(flag)[1].split(" --")[0], flag


def test_a_train_out_dir_as_ckpt_names_the_checkpoint_file(gpt2_checkpoint, capsys):
    # --ckpt=out said only that out/ is no Hugging Face folder (no config.json)
    folder = gpt2_checkpoint.parent
    with pytest.raises(SystemExit):
        sample.main([f"--ckpt={folder}", "--device=cpu"])
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"; the checkpoint is the file {gpt2_checkpoint}")
