"""export.py and checkpoint.load_pretrained against the real clients: transformers loads the Hugging
Face folder and computes our logits, greedy tokens and token ids; llama.cpp (llama-cpp-python) runs
the GGUF file to our greedy tokens and token ids. Tiny models and tokenizers from tests/tiny.py.

llama-cpp-python is built from source (minutes), so .ci/run builds it once into a cache and sets
REQUIRE_LLAMA_CPP=1, which turns the skip where it is missing into a failure."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

import checkpoint
import export
import loader
import tiny
import train
from checkpoint import load_model, load_pretrained
from common import load_shard, write_shard
from model import GPT, GPTConfig
from tokenizer import load_tokenizer, same_tokenizer

import transformers  # noqa: E402  (requirements-test.txt)

PROMPTS = ["The quick brown fox", "Ünïcödé 日本語 🙂", "x = 1\nfor i in range(10):\n", ""]
N_NEW = 20


def llama_cpp():
    if os.environ.get("REQUIRE_LLAMA_CPP") == "1":
        import llama_cpp as module  # CI: missing is a failure, not a skip
        return module
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (.ci/run builds it)")


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Decisive tiny models (see tiny.checkpoint) in both layouts, as train.py would save them, with
    the small trained tokenizer (557 tokens, padded to 576): GPT-2's 50k vocabulary would only make
    every forward slower. The GPT-2 vocabulary is tested by the tokenizer tests and the import test."""
    folder = tmp_path_factory.mktemp("ckpt")
    spec = tiny.trained_tokenizer()
    return {layout: tiny.checkpoint(folder / f"{layout}.pt", layout, tokenizer=spec, scale=10.0)
            for layout in ("gpt2", "llama")}


@pytest.fixture(scope="module")
def enc():
    return load_tokenizer(tiny.trained_tokenizer())


@pytest.fixture(scope="module")
def hf_folders(checkpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    return {layout: export.export(path, "hf", folder / layout, "f32", log=quiet)["out"]
            for layout, (path, _) in checkpoints.items()}


def our_greedy(model, prompt_tokens, n=N_NEW):
    out = model.generate(torch.tensor([prompt_tokens]), n, temperature=0)
    return torch.cat(list(out), dim=1)[0].tolist()


def prompt_tokens(enc, text):
    return [enc.eot_token] + enc.encode_ordinary(text)


# -----------------------------------------------------------------------------------------------
# Hugging Face


@pytest.mark.parametrize("layout,cls", [("gpt2", "GPT2LMHeadModel"), ("llama", "LlamaForCausalLM")])
def test_hf_logits_and_greedy_tokens_equal_ours(checkpoints, hf_folders, enc, layout, cls):
    _, model = checkpoints[layout]
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_folders[layout], local_files_only=True).eval()
    assert type(hf).__name__ == cls and hf.dtype == torch.float32
    assert hf.get_input_embeddings().weight.shape[0] == enc.n_vocab  # the padding rows are gone
    assert hf.get_output_embeddings().weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()  # tied
    idx = torch.randint(0, enc.n_vocab, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(idx, all_logits=True)[0][..., :enc.n_vocab]
        theirs = hf(idx).logits
    assert ours.abs().max() > 5  # a decisive model, so the next check means something
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-4)
    for text in PROMPTS:
        tokens = prompt_tokens(enc, text)
        generated = hf.generate(torch.tensor([tokens]), max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                                do_sample=False, pad_token_id=enc.eot_token)[0, len(tokens):].tolist()
        assert generated == our_greedy(model, tokens), text


@pytest.mark.parametrize("which", ["gpt2", "trained", "trained_nanochat_pattern"])
def test_hf_tokenizer_encodes_like_ours(tmp_path, which):
    spec = tiny.tokenizer_spec(which)
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", tokenizer=spec)
    export.export(path, "hf", tmp_path / "hf", "f32", log=quiet)
    enc = load_tokenizer(spec)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    for text in tiny.TEST_STRINGS:
        ours = enc.encode_ordinary(text)
        assert hf(text, add_special_tokens=False)["input_ids"] == ours, text
        assert hf(text)["input_ids"] == [enc.eot_token] + ours  # documents start with <|endoftext|>
        assert hf.decode(ours) == text
    assert hf.eos_token_id == hf.bos_token_id == enc.eot_token
    # and the folder reads back as the same tokenizer: 'gpt2' by name, ours by content
    back = checkpoint.tokenizer_from_hf(tmp_path / "hf")
    assert back == "gpt2" if which == "gpt2" else same_tokenizer(back, spec)


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_load_pretrained_reads_our_export_back(checkpoints, hf_folders, enc, layout):
    path, model = checkpoints[layout]
    back = load_pretrained(hf_folders[layout])
    assert same_tokenizer(back["tokenizer"], tiny.trained_tokenizer())
    # the same switches, except that GPT-2 always has biases (we wrote zeros for bias=False)
    assert {k: v for k, v in back["model_args"].items() if k != "bias"} == \
        {k: getattr(model.config, k) for k in back["model_args"] if k != "bias"}
    rebuilt = GPT(GPTConfig(**back["model_args"]))
    rebuilt.load_state_dict(back["model"])
    idx = torch.randint(0, enc.n_vocab, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # nothing was rounded on the way
        torch.testing.assert_close(rebuilt(idx, all_logits=True)[0], model(idx, all_logits=True)[0],
                                   rtol=1e-6, atol=1e-6)


def write_gpt2_vocab_files(folder, enc):
    """GPT-2's tokenizer as the Hub ships it: vocab.json and merges.txt."""
    tokens, _, merges = export.vocabulary(enc)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def test_a_damaged_hf_folder_gets_one_line_naming_the_file(hf_folders, tmp_path):
    # a truncated model.safetensors and config.json without vocab_size ended in tracebacks; a broken
    # tokenizer.json gave json's message alone, naming no file
    cases = [("model.safetensors", lambda b: b[:1000], "model.safetensors: not readable safetensors"),
             ("tokenizer.json", lambda b: b"{bad", "tokenizer.json: not readable JSON"),
             ("config.json", lambda b: b'{"model_type": "gpt2"}', "lack 'vocab_size' for a gpt2 model"),
             ("config.json", lambda b: b"[1]", "model_type None")]  # an AttributeError
    for name, damage, expected in cases:
        folder = tmp_path / f"{name}{len(list(tmp_path.iterdir()))}"
        shutil.copytree(hf_folders["gpt2"], folder)
        (folder / name).write_bytes(damage((folder / name).read_bytes()))
        with pytest.raises(ValueError, match=expected):
            checkpoint.load_pretrained(str(folder))


def test_a_saved_hf_gpt2_loads_into_our_model_and_samples(tmp_path):
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=50257)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():  # every weight, biases and norms too, so each must land in its place
            p.normal_(0, 0.3)
    hf.save_pretrained(tmp_path / "gpt2")
    write_gpt2_vocab_files(tmp_path / "gpt2", load_tokenizer("gpt2"))
    model, enc, info = load_model(str(tmp_path / "gpt2"))
    assert info["tokenizer"] == "gpt2" and model.config.vocab_size == 50304  # padded, as nanoGPT
    assert model.config.real_vocab_size == 50257 and model.config.bias
    idx = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, all_logits=True)[0][..., :50257], hf(idx).logits,
                                   rtol=1e-5, atol=1e-4)
        assert torch.isinf(model(idx)[0][..., 50257:]).all()  # padding is never predicted
    pretrained = load_pretrained(str(tmp_path / "gpt2"))  # what train.py --init_from=FOLDER gets
    assert set(pretrained) >= {"model_args", "model", "tokenizer"} and pretrained["tokenizer"] == "gpt2"

    # train.py --init_from=FOLDER on GPT-2 tokens: the folder's architecture, context length included
    # (the flags say 32 positions), and its first val loss is the Hugging Face model's on those windows
    tokens = tmp_path / "tokens"
    rng = np.random.default_rng(3)
    write_shard(tokens / "val_000000.bin", rng.integers(0, 50257, 2000))
    write_shard(tokens / "train_000001.bin", rng.integers(0, 50257, 3000))
    (tokens / "report.json").write_text(json.dumps({"tokenizer": "gpt2", "vocab_size": 50257}))
    flags = [f"--data={tokens}", f"--out_dir={tmp_path / 'out'}", f"--init_from={tmp_path / 'gpt2'}",
             "--block_size=32", "--batch_size=2", "--batch_tokens=128", "--eval_iters=1", "--max_iters=1",
             "--warmup_iters=0", "--device=cpu", "--dtype=float32", "--compile=false"]
    first = train.main(flags)[0]
    assert first["step"] == 0
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["model_args"]["block_size"] == 64
    windows = loader.val_windows([load_shard(tokens / "val_000000.bin")], 64, 128 // 64)
    x, y = (torch.from_numpy(windows[:, i:i + 64].astype(np.int64)) for i in (0, 1))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten())
    assert first["val_loss"] == pytest.approx(expected.item(), rel=1e-5)


# -----------------------------------------------------------------------------------------------
# llama.cpp


@pytest.fixture(scope="module")
def gguf_files(checkpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {(layout, dtype): export.export(path, "gguf", folder / f"{layout}-{dtype}.gguf", dtype, log=quiet)["out"]
            for layout, (path, _) in checkpoints.items() for dtype in ("f32", "f16", "q8_0")}


def llama_greedy(llm, tokens, n=N_NEW):
    llm.reset()
    out = []
    for token in llm.generate(tokens, top_k=1, temp=0.0, reset=True):
        out.append(token)
        if len(out) == n:
            return out


def last_logits(llm, tokens):
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[llm.n_tokens - 1])


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_gguf_greedy_tokens_equal_ours(checkpoints, gguf_files, enc, layout):
    Llama = llama_cpp().Llama
    _, model = checkpoints[layout]
    for dtype in ("f32", "f16"):
        llm = Llama(gguf_files[layout, dtype], n_ctx=64, n_threads=1, logits_all=True, verbose=False)
        try:
            assert llm.n_vocab() == enc.n_vocab
            for text in PROMPTS:
                tokens = prompt_tokens(enc, text)
                assert llama_greedy(llm, tokens) == our_greedy(model, tokens), (dtype, text)
            if dtype == "f32":
                tokens = prompt_tokens(enc, PROMPTS[0])
                with torch.no_grad():
                    ours = model(torch.tensor([tokens]))[0][0, -1, :enc.n_vocab].numpy()
                np.testing.assert_allclose(last_logits(llm, tokens), ours, rtol=1e-3, atol=2e-2)
        finally:
            llm.close()


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_gguf_q8_0_loads_and_runs(checkpoints, gguf_files, enc, layout):
    llm = llama_cpp().Llama(gguf_files[layout, "q8_0"], n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    _, model = checkpoints[layout]
    try:
        for text in PROMPTS:
            tokens = prompt_tokens(enc, text)
            out = llama_greedy(llm, tokens)
            assert len(out) == N_NEW and all(0 <= t < enc.n_vocab for t in out)
            with torch.no_grad():
                ours = model(torch.tensor([tokens]))[0][0, -1, :enc.n_vocab].numpy()
            # 8-bit weights move the scores a little, not the model's first choice out of its top few
            assert int(ours.argmax()) in np.argsort(last_logits(llm, tokens))[-3:]
    finally:
        llm.close()
    assert os.path.getsize(gguf_files[layout, "q8_0"]) < 0.4 * os.path.getsize(gguf_files[layout, "f32"])


@pytest.mark.parametrize("which", ["gpt2", "trained", "trained_nanochat_pattern"])
def test_gguf_tokenizer_encodes_like_ours(tmp_path, which):
    spec = tiny.tokenizer_spec(which)
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", tokenizer=spec)
    out = export.export(path, "gguf", tmp_path / "model.gguf", "f32", log=quiet)["out"]
    enc = load_tokenizer(spec)
    assert export.llama_cpp_pre(export.split_pattern(enc)) == ("gpt-2" if which == "gpt2" else "llama-bpe")
    llm = llama_cpp().Llama(out, vocab_only=True, verbose=False)
    try:
        for text in tiny.TEST_STRINGS:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == enc.encode_ordinary(text), text
        assert llm.tokenize(b"Hi", add_bos=True)[0] == enc.eot_token == llm.token_bos() == llm.token_eos()
    finally:
        llm.close()


def test_gguf_keeps_the_embedding_tied_and_drops_the_padding(gguf_files, enc):
    import gguf

    for layout in ("gpt2", "llama"):
        reader = gguf.GGUFReader(gguf_files[layout, "f32"])
        tensors = {t.name: t for t in reader.tensors}
        assert "output.weight" not in tensors  # llama.cpp then reads token_embd for the output layer
        assert list(tensors["token_embd.weight"].shape) == [64, enc.n_vocab]  # ggml order: (n_embd, rows)
        assert reader.fields["general.architecture"].contents() == layout


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_an_untied_output_layer_is_exported_and_read_back(tmp_path, enc, layout):
    """tie_embeddings=False (the CPU demo's preset): HF gets its own lm_head and tie_word_embeddings
    false, GGUF an output tensor, and load_pretrained rebuilds the same untied model. Its lm_head is
    a fresh random matrix, so writing the embedding in its place changes every logit."""
    path, model = tiny.checkpoint(tmp_path / "untied.pt", layout, tokenizer=tiny.trained_tokenizer(), scale=10.0,
                                  tie_embeddings=False)
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    folder = export.export(path, "hf", tmp_path / "hf", "f32", log=quiet)["out"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    assert hf.get_output_embeddings().weight.data_ptr() != hf.get_input_embeddings().weight.data_ptr()
    idx = torch.randint(0, enc.n_vocab, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(idx, all_logits=True)[0]
        torch.testing.assert_close(hf(idx).logits, ours[..., :enc.n_vocab], rtol=1e-5, atol=1e-4)
        back = load_pretrained(folder)
        assert back["model_args"]["tie_embeddings"] is False
        rebuilt = GPT(GPTConfig(**back["model_args"]))
        rebuilt.load_state_dict(back["model"])
        torch.testing.assert_close(rebuilt(idx, all_logits=True)[0], ours, rtol=1e-6, atol=1e-6)

    import gguf

    out = export.export(path, "gguf", tmp_path / "untied.gguf", "f32", log=quiet)["out"]
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert list(tensors["output.weight"].shape) == [64, enc.n_vocab]
    np.testing.assert_array_equal(np.asarray(tensors["output.weight"].data),
                                  model.lm_head.weight[:enc.n_vocab].detach().numpy())
    llm = llama_cpp().Llama(out, n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    try:
        for text in PROMPTS[:2]:
            tokens = prompt_tokens(enc, text)
            assert llama_greedy(llm, tokens) == our_greedy(model, tokens), text
    finally:
        llm.close()


def test_a_hf_tokenizer_tiktoken_cannot_reproduce_is_refused(tmp_path, hf_folders):
    folder = tmp_path / "hf"
    shutil.copytree(hf_folders["gpt2"], folder)
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    merges = data["model"]["merges"]
    merges[10], merges[20] = merges[20], merges[10]  # merge priority no longer follows the ids
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merge 12 .* is out of id order, so tiktoken cannot reproduce"):
        load_pretrained(str(folder))


def test_an_unknown_split_pattern_is_refused_for_gguf_only():
    with pytest.raises(ValueError, match="no pre-tokenizer that splits"):
        export.llama_cpp_pre(r"\w+|\s+|[^\w\s]+")


# -----------------------------------------------------------------------------------------------
# what cannot be exported, and the command line


def test_a_layout_no_standard_architecture_has_names_the_switch(tmp_path):
    path, _ = tiny.checkpoint(tmp_path / "odd.pt", "gpt2", mlp="swiglu")  # learned positions + SwiGLU
    with pytest.raises(ValueError, match=r"rope=False with mlp='swiglu'.*needs.*mlp='gelu'"):
        export.export(path, "hf", tmp_path / "hf", "f32", log=quiet)
    path, _ = tiny.checkpoint(tmp_path / "odd2.pt", "llama", norm="layernorm")
    with pytest.raises(ValueError, match=r"rope=True with norm='layernorm'"):
        export.export(path, "gguf", tmp_path / "x.gguf", "f32", log=quiet)
    assert not (tmp_path / "hf").exists() and not (tmp_path / "x.gguf").exists()


def run_main(*argv):
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(a) for a in argv])
    return exit_info.value.code


def test_existing_output_is_refused_unless_force(checkpoints, tmp_path, capsys):
    path, _ = checkpoints["gpt2"]
    for fmt, out in (("hf", tmp_path / "hf"), ("gguf", tmp_path / "m.gguf")):
        export.main([f"--ckpt={path}", f"--format={fmt}", f"--out={out}"])
        assert "wrote" in capsys.readouterr().err
        before = sorted(os.listdir(out)) if out.is_dir() else out.stat().st_size
        assert run_main(f"--ckpt={path}", f"--format={fmt}", f"--out={out}") == 1
        assert f"{out} already exists: pass --force" in capsys.readouterr().err
        export.main([f"--ckpt={path}", f"--format={fmt}", f"--out={out}", "--force"])
        assert (sorted(os.listdir(out)) if out.is_dir() else out.stat().st_size) == before
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_force_never_deletes_the_checkpoint_it_exports(tmp_path, capsys):
    # --out=out --force removed train.py's whole out/ folder, ckpt.pt and log.jsonl with it
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2")
    (tmp_path / "log.jsonl").write_text("{}\n")
    assert run_main(f"--ckpt={path}", f"--out={tmp_path}", "--force") == 1
    assert f"--out={tmp_path} holds --ckpt={path}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "log.jsonl"]


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_force_never_replaces_the_checkpoint_file_itself(tmp_path, capsys, fmt):
    # --out=out/ckpt.pt --force: the hf export replaced the file by a folder, the gguf one by a GGUF
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2")
    before = path.read_bytes()
    assert run_main(f"--ckpt={path}", f"--format={fmt}", f"--out={path}", "--force") == 1
    err = capsys.readouterr().err
    assert f"--out={path} is --ckpt={path}, which replacing it would delete" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_an_out_that_cannot_be_written_is_one_line(tmp_path, capsys, fmt):
    # a file where the parent folder should be (as root, the way to be refused): a traceback
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2")
    out = tmp_path / "log.jsonl" / "export"
    out.parent.write_text("{}\n")
    assert run_main(f"--ckpt={path}", f"--format={fmt}", f"--out={out}") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: --out={out}: cannot write there: {out.parent} is not a folder", err
    assert (tmp_path / "log.jsonl").read_text() == "{}\n"


def test_force_replaces_an_export_but_not_a_folder_of_other_files(checkpoints, tmp_path, capsys,
                                                                   monkeypatch):
    # --ckpt=lora/ckpt.pt --out=out --force deleted the base run's out/ckpt.pt and log.jsonl
    path, _ = checkpoints["gpt2"]
    base = tmp_path / "out"
    base.mkdir()
    (base / "ckpt.pt").write_bytes(b"the base run")
    (base / "log.jsonl").write_text("{}\n")
    assert run_main(f"--ckpt={path}", f"--out={base}", "--force") == 1
    assert capsys.readouterr().err.strip() == (f"error: --out={base} holds files no export writes "
                                               f"(ckpt.pt, log.jsonl), which --force would delete: "
                                               f"pass another --out, or empty it first")
    assert sorted(p.name for p in base.iterdir()) == ["ckpt.pt", "log.jsonl"]
    monkeypatch.chdir(base)  # --out=. was "error: PosixPath('.') has an empty name"
    assert run_main(f"--ckpt={path}", "--out=.", "--force") == 1
    assert f"--out={base} holds files no export writes" in capsys.readouterr().err
    assert run_main(f"--ckpt={path}", f"--out={base / 'log.jsonl'}", "--force") == 1
    assert "is a file; a Hugging Face export is a folder" in capsys.readouterr().err
    assert run_main(f"--ckpt={path}", "--format=gguf", f"--out={base / 'log.jsonl'}", "--force") == 1
    assert "is not a GGUF file, which --force would replace" in capsys.readouterr().err
    assert (base / "log.jsonl").read_text() == "{}\n"
    export.export(path, "hf", tmp_path / "hf", "f32", log=quiet)  # an export, and an empty folder,
    (tmp_path / "empty").mkdir()  # are replaced: their files are export.HF_FILES
    assert {p.name for p in (tmp_path / "hf").iterdir()} == export.HF_FILES
    for out in ("hf", "empty"):
        export.export(path, "hf", tmp_path / out, "f16", force=True, log=quiet)
        assert json.loads((tmp_path / out / "config.json").read_text())["torch_dtype"] == "float16"


def test_a_gguf_export_onto_a_folder_is_refused_first(tmp_path, capsys):
    # with --force it failed at the final rename, after all the work, with IsADirectoryError
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2")
    (tmp_path / "hf").mkdir()
    assert run_main(f"--ckpt={path}", "--format=gguf", f"--out={tmp_path / 'hf'}", "--force") == 1
    assert capsys.readouterr().err.strip() == (f"error: --out={tmp_path / 'hf'} is a folder; a GGUF "
                                               f"export is one file: pass --out=FILE.gguf")


def test_a_killed_runs_temporary_folder_is_removed(checkpoints, tmp_path):
    stale = export.partial_folder(tmp_path / "hf", pid=999999999)  # a process that is not running
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    export.export(checkpoints["gpt2"][0], "hf", tmp_path / "hf", "f32", log=quiet)
    assert not stale.exists() and (tmp_path / "hf" / "model.safetensors").exists()


def test_every_file_of_a_hf_folder_is_on_disk_before_its_rename(checkpoints, tmp_path, monkeypatch):
    """The GGUF file was synced before its rename and the folder was not: after a power cut the
    folder could be there, named as complete, with empty files in it."""
    synced, renamed, real_fsync, real_replace = set(), set(), os.fsync, os.replace

    def fsync(fd):
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        if os.path.isdir(src):
            renamed.update(os.path.join(src, name) for name in os.listdir(src))
        real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    export.export(checkpoints["gpt2"][0], "hf", tmp_path / "hf", "f32", log=quiet)
    assert renamed and renamed <= synced


def test_inputs_that_are_not_a_model_get_one_clear_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint\n" * 10)
    not_ours = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, not_ours)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases = [(garbage, "not a PyTorch checkpoint"), (not_ours, "not a train.py checkpoint"),
             (tmp_path / "missing.pt", "no such file"), (bert, "model_type 'bert'")]
    for path, expected in cases:
        assert run_main(f"--ckpt={path}", f"--out={tmp_path / 'out'}") == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, (path, err)
    assert run_main(f"--ckpt={garbage}", "--format=gguf", "--dtype=bf16") == 1
    assert "--dtype=bf16 is not one of f32, f16, q8_0" in capsys.readouterr().err


# -----------------------------------------------------------------------------------------------
# LoRA: a checkpoint with adapters is exported (and loaded) as one plain GPT


def lora_checkpoint(tmp_path):
    """A LoRA checkpoint as train.py --lora_rank writes it: the frozen base in 'model', the adapters and
    their config in 'lora' (lora.split_state), with the B matrices moved off zero as training would.
    Returns (path, the LoRA model itself, whose forward adds the adapters through hooks)."""
    import lora

    path, model = tiny.checkpoint(tmp_path / "base.pt", "llama", tokenizer=tiny.trained_tokenizer())
    config = lora.add_lora(model, rank=2, alpha=4.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.5)
    base, adapters = lora.split_state(model.state_dict())
    ckpt = torch.load(path, weights_only=True)
    ckpt.update(model=base, lora=dict(config=config, adapters=adapters))
    torch.save(ckpt, path)
    return path, model


def test_lora_checkpoint_without_lora_module_says_so(tmp_path, monkeypatch):
    path, _ = lora_checkpoint(tmp_path)
    monkeypatch.setitem(sys.modules, "lora", None)  # as if lora.py did not exist
    with pytest.raises(ValueError, match="holds LoRA adapters, but lora.merge_lora cannot be imported"):
        load_pretrained(path)


def test_lora_adapters_are_merged_into_the_export(tmp_path, enc):
    path, lora_model = lora_checkpoint(tmp_path)
    export.export(path, "hf", tmp_path / "hf", "f32", log=quiet)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    idx = torch.randint(0, enc.n_vocab, (2, 30), generator=torch.Generator().manual_seed(3))
    ckpt = torch.load(path, weights_only=True)
    base = GPT(GPTConfig(**ckpt["model_args"])).eval()
    base.load_state_dict(ckpt["model"])  # the frozen weights alone
    with torch.no_grad():
        theirs, ours = hf(idx).logits, lora_model(idx, all_logits=True)[0][..., :enc.n_vocab]
        without = base(idx, all_logits=True)[0][..., :enc.n_vocab]
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)  # the plain export computes the LoRA model
    assert (without - ours).abs().max() > 0.1  # which the base alone does not


def test_help_describes_the_script_in_a_whole_sentence(capsys):
    """The description was the docstring's first line, cut at '(transformers, vLLM,'."""
    with pytest.raises(SystemExit):
        export.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "or one GGUF file (llama.cpp, Ollama, LM Studio)." in text
