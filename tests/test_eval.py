"""eval.py: on token shards the loss is train.py's own val loss (same windows, same checkpoint); on
documents loss and bits per byte equal a by-hand computation; an exported Hugging Face folder scores
as its checkpoint; HellaSwag's acc and acc_norm equal lm-evaluation-harness's on the exported model,
for the same local file; a malformed task line names its file and line."""
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as evaluate
import export
import tiny
import train
from common import jsonl_writer, write_shard
from tokenizer import load_tokenizer

DOCS = tiny.TEST_STRINGS + ["A longer page. " * 40, "Zweiter Text über Öl und Ähren.\n\n" * 5]


def run_eval(capsys, *argv):
    report = evaluate.main([str(a) for a in argv] + ["--device=cpu"])
    capsys.readouterr()
    return report


@pytest.fixture(scope="module")
def docs_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    with jsonl_writer(folder / "part-0000.jsonl.gz") as write:
        for i, text in enumerate(DOCS[:7]):
            write({"id": f"a{i}", "text": text})
    with open(folder / "part-0001.jsonl", "w", encoding="utf-8") as f:  # plain .jsonl too
        for i, text in enumerate(DOCS[7:]):
            f.write(json.dumps({"id": f"b{i}", "text": text}) + "\n")
    return folder


def test_token_shards_give_train_val_loss(tmp_path, capsys):
    """train.py continues pretraining from a Hugging Face GPT-2 folder (--init_from=FOLDER, through
    checkpoint.load_pretrained) and logs its val loss; eval.py on the saved checkpoint gives the same."""
    # repetitive text, so that two steps lower the val loss (train.py keeps a checkpoint only then)
    tokens = np.array(load_tokenizer("gpt2").encode_ordinary(" ".join(DOCS) * 12))
    data = tmp_path / "tokens"
    write_shard(data / "val_000000.bin", tokens[:3000])  # no report.json: llm.c-style shards
    write_shard(data / "train_000001.bin", tokens[3000:])
    path, _ = tiny.checkpoint(tmp_path / "base.pt", "gpt2", bias=True)  # block_size 64
    export.export(path, "hf", tmp_path / "hf", "f32", log=lambda msg: None)
    out = tmp_path / "out"
    # (--block_size: train.py opens the data before it reads the folder's architecture)
    train.main([f"--data={data}", f"--out_dir={out}", f"--init_from={tmp_path / 'hf'}", "--block_size=64",
                "--batch_size=3", "--batch_tokens=192", "--max_iters=2", "--eval_interval=2", "--eval_iters=4",
                "--warmup_iters=1", "--learning_rate=1e-2", "--compile=false", "--device=cpu", "--dtype=float32"])
    capsys.readouterr()
    logged = [h for h in map(json.loads, open(out / "log.jsonl")) if "val_loss" in h][-1]  # the saved weights
    report = run_eval(capsys, f"--ckpt={out / 'ckpt.pt'}", f"--data={data}")
    assert report["windows"] == 4 * 192 // 64  # train.py's count: eval_iters x batch_tokens / block_size
    assert report["loss"] == pytest.approx(logged["val_loss"], rel=1e-6)
    assert report["bits_per_byte"] == pytest.approx(logged["val_bpb"], rel=1e-6)
    assert report["perplexity"] == pytest.approx(math.exp(logged["val_loss"]), rel=1e-6)
    # every val window: another number, over all 46 windows of 64 predictions in 3000 tokens
    everything = run_eval(capsys, f"--ckpt={out / 'ckpt.pt'}", f"--data={data}", "--windows=0")
    assert everything["tokens"] == 46 * 64 and everything["loss"] != report["loss"]


def test_documents_loss_and_bits_per_byte_equal_a_hand_computation(tmp_path, docs_folder, capsys):
    path, model = tiny.checkpoint(tmp_path / "ckpt.pt", "llama", block_size=32)
    enc = load_tokenizer("gpt2")
    report = run_eval(capsys, f"--ckpt={path}", f"--data={docs_folder}", "--batch_size=3",
                      f"--report={tmp_path / 'report.json'}")
    # by hand: prepare.py's stream (<|endoftext|> before each document, files in order), every
    # token after the first predicted once, in windows of 32 predictions
    stream = [t for text in DOCS for t in [enc.eot_token] + enc.encode_ordinary(text)]
    nats, n_bytes = 0.0, 0
    for start in range(0, len(stream) - 1, 32):
        window = torch.tensor(stream[start:start + 33])
        with torch.no_grad():
            logits = model(window[None, :-1], all_logits=True)[0][0].double()
        nats += F.cross_entropy(logits[:, :enc.n_vocab], window[1:], reduction="sum").item()
        n_bytes += sum(len(enc.decode_single_token_bytes(t)) for t in window[1:].tolist() if t != enc.eot_token)
    assert report["tokens"] == len(stream) - 1 and report["bytes"] == n_bytes
    assert report["documents"] == len(DOCS)
    assert report["loss"] == pytest.approx(nats / (len(stream) - 1), rel=1e-5)
    assert report["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
    assert json.loads((tmp_path / "report.json").read_text())["loss"] == report["loss"]


def test_an_exported_hf_folder_scores_as_its_checkpoint(tmp_path, docs_folder, capsys):
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2", block_size=32, bias=True)
    export.export(path, "hf", tmp_path / "hf", "f32", log=lambda msg: None)
    ours = run_eval(capsys, f"--ckpt={path}", f"--data={docs_folder}")
    folder = run_eval(capsys, f"--ckpt={tmp_path / 'hf'}", f"--data={docs_folder}")
    assert folder["tokens"] == ours["tokens"]
    assert folder["loss"] == pytest.approx(ours["loss"], rel=1e-6)


# -----------------------------------------------------------------------------------------------
# HellaSwag


def write_hellaswag(path, n=6, seed=0):
    """A small file in HellaSwag's published format (hellaswag_val.jsonl), WikiHow brackets included."""
    rng = random.Random(seed)
    activities = ["Baking cookies", "Removing ice from car", "Personal Care and Style [title]", "Playing guitar"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            endings = [f"{rng.choice(['puts', 'takes', 'leaves'])} the tray {'very ' * 2 * k}[step] slowly {i}."
                       for k in range(4)]
            f.write(json.dumps(dict(ind=i, activity_label=activities[i % 4],
                                    ctx_a=f"A man stands in a kitchen. [title] He opens oven {i}.",
                                    ctx_b="then he", ctx="", split="val", split_type="indomain",
                                    label=rng.randrange(4), endings=endings, source_id=f"s{i}")) + "\n")
    return path


def harness_hellaswag(model_folder, task_file, workdir, monkeypatch):
    """acc, acc_norm and per-example log-likelihoods from lm-evaluation-harness, offline, with a task
    that is its own hellaswag task (its yaml's settings and its utils.process_docs) on our file."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(workdir / "cache"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = workdir / "tasks"
    tasks.mkdir()
    shutil.copy(Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "utils.py", tasks / "utils.py")
    (tasks / "local_hellaswag.yaml").write_text(f"""task: local_hellaswag
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    validation: {task_file}
output_type: multiple_choice
validation_split: validation
process_docs: !function utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    manager = TaskManager(include_path=str(tasks), include_defaults=False)  # not its 13,000 built-in yamls
    result = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_folder},dtype=float32",
                                     tasks=["local_hellaswag"], task_manager=manager, batch_size=1, device="cpu",
                                     log_samples=True)
    scores = result["results"]["local_hellaswag"]
    samples = sorted(result["samples"]["local_hellaswag"], key=lambda s: s["doc_id"])
    return scores["acc,none"], scores["acc_norm,none"], [[r[0] for r in s["filtered_resps"]] for s in samples]


def test_hellaswag_equals_lm_evaluation_harness(tmp_path, capsys, monkeypatch):
    spec = tiny.trained_tokenizer()
    path, model = tiny.checkpoint(tmp_path / "ckpt.pt", "llama", tokenizer=spec, scale=3.0)
    export.export(path, "hf", tmp_path / "hf", "f32", log=lambda msg: None)
    task_file = write_hellaswag(tmp_path / "hellaswag.jsonl")
    report = run_eval(capsys, f"--ckpt={path}", "--task=hellaswag", f"--task_file={task_file}")
    acc, acc_norm, harness_lls = harness_hellaswag(tmp_path / "hf", task_file, tmp_path, monkeypatch)
    examples = evaluate.read_hellaswag(task_file)
    ours, our_lls = evaluate.hellaswag(model, load_tokenizer(spec), examples, "cpu", torch.autocast("cpu", enabled=False))
    np.testing.assert_allclose(our_lls, harness_lls, rtol=1e-5, atol=1e-4)
    assert (report["acc"], report["acc_norm"]) == (ours["acc"], ours["acc_norm"]) == (acc, acc_norm)
    # and the test can tell acc from acc_norm: dividing by the length changes some choices
    lengths = [[len(e) for e in endings] for _, endings, _ in examples]
    assert any(np.argmax(lls) != np.argmax(np.array(lls) / n) for lls, n in zip(our_lls, lengths))


@pytest.mark.parametrize("line,expected", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "label": 0}', "expected 'endings'"),
    ('{"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["p", "q"], "label": 5}', "expected 'label'"),
    ('{"activity_label": 3, "ctx_a": "a", "ctx_b": "b", "endings": ["p", "q"], "label": 0}', "expected a string 'activity_label'"),
])
def test_a_malformed_task_line_names_file_and_line(tmp_path, capsys, line, expected):
    task_file = write_hellaswag(tmp_path / "hellaswag.jsonl", n=2)
    with open(task_file, "a") as f:
        f.write(line + "\n")
    with pytest.raises(SystemExit) as exit_info:  # before any model is loaded: the checkpoint is missing
        evaluate.main([f"--ckpt={tmp_path / 'missing.pt'}", "--task=hellaswag", f"--task_file={task_file}"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {task_file}:3: {expected}"), err


def test_task_lines_are_split_at_newlines_only_as_the_harness_reads_them(tmp_path, capsys):
    # a raw U+2028 in a string (valid JSON) was a line break to str.splitlines: a valid file was
    # refused, and a bad line after it was reported one line early
    import pyarrow.json  # what lm-evaluation-harness reads a local .jsonl with (datasets' json loader)

    task_file = write_hellaswag(tmp_path / "hellaswag.jsonl", n=3)
    lines = task_file.read_text(encoding="utf-8").split("\n")
    doc = json.loads(lines[1])
    doc["ctx_a"] = "He opens\u2028 the oven\u0085 and\u2029 waits."
    lines[1] = json.dumps(doc, ensure_ascii=False)
    task_file.write_text("\n".join(lines), encoding="utf-8")
    reference = pyarrow.json.read_json(task_file).to_pylist()
    examples = evaluate.read_hellaswag(task_file)
    assert len(examples) == len(reference) == 3
    assert [e[0] for e in examples] == [evaluate.preprocess(
        f"{d['activity_label']}: {d['ctx_a']} {d['ctx_b'].capitalize()}") for d in reference]
    with open(task_file, "a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError) as error:
        evaluate.read_hellaswag(task_file)
    assert str(error.value).startswith(f"{task_file}:4: not valid JSON")


def test_a_task_file_with_a_byte_order_mark_or_gzipped_reads_as_the_harness_reads_it(tmp_path):
    # both were 'not valid JSON' / 'cannot read it'; the harness's json loader (pyarrow) reads them
    import gzip

    import pyarrow.json

    plain = write_hellaswag(tmp_path / "hellaswag.jsonl", n=3)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    packed = tmp_path / "hellaswag.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    expected = evaluate.read_hellaswag(plain)
    assert len(pyarrow.json.read_json(bom).to_pylist()) == len(expected) == 3
    assert evaluate.read_hellaswag(bom) == evaluate.read_hellaswag(packed) == expected
    damaged = bytearray(packed.read_bytes())
    damaged[20:40] = b"x" * 20
    packed.write_bytes(damaged)
    with pytest.raises(ValueError, match="cannot read it"):
        evaluate.read_hellaswag(packed)


def test_a_checkpoint_that_is_not_ours_and_foreign_shards_get_clear_errors(tmp_path, capsys):
    not_ours = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    with pytest.raises(SystemExit):
        evaluate.main([f"--ckpt={not_ours}", f"--data={tmp_path}"])
    assert "not a train.py checkpoint" in capsys.readouterr().err
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2", block_size=32)
    data = tmp_path / "tokens"
    write_shard(data / "val_000000.bin", np.arange(100))
    (data / "report.json").write_text(json.dumps({"tokenizer": "cl100k_base"}))
    with pytest.raises(SystemExit):
        evaluate.main([f"--ckpt={path}", f"--data={data}", "--device=cpu"])
    assert "holds cl100k_base tokens, but the model was trained with gpt2" in capsys.readouterr().err


def test_shards_of_a_larger_vocabulary_without_a_report_name_the_token(tmp_path, capsys):
    # the error was printed at the end of the progress bar's line, not on a line of its own
    path, model = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2", tokenizer=tiny.trained_tokenizer(),
                                  block_size=32)
    tokens = np.where(np.arange(200) % 5, np.arange(200) % 50, 50000)  # a GPT-2 id, no report.json
    write_shard(tmp_path / "tokens" / "val_000000.bin", tokens)
    with pytest.raises(SystemExit):
        evaluate.main([f"--ckpt={path}", f"--data={tmp_path / 'tokens'}", "--device=cpu"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: token id 50000 in the data is outside the model's vocabulary of "
        f"{model.config.vocab_size}: tokens of another tokenizer?")


def test_documents_with_no_tokens_to_score_are_an_error(tmp_path, capsys):
    # the report said loss 0, perplexity 1, bits per byte 0 on 0 tokens: a perfect score on nothing
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2", block_size=32)
    docs = tmp_path / "docs"
    with jsonl_writer(docs / "part-0000.jsonl.gz"):
        pass
    (docs / "part-0001.jsonl").write_text('{"id": "x", "text": ""}\nnot json\n', encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([f"--ckpt={path}", f"--data={docs}", "--device=cpu"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {docs}: no tokens to score (0 documents, 2 bad lines)"


@pytest.mark.parametrize("device", ["foo", "cuda"])
def test_a_device_that_is_not_there_gives_one_line(tmp_path, capsys, device):
    # both ended in a traceback from inside torch ("Torch not compiled with CUDA enabled")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2", block_size=32)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([f"--ckpt={path}", f"--data={tmp_path}", f"--device={device}"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: --device={device}: ")


def test_a_report_path_that_is_a_folder_is_refused_first(tmp_path, capsys):
    # it ended in an IsADirectoryError traceback after all the scoring
    with pytest.raises(SystemExit):
        evaluate.get_args([f"--report={tmp_path}"])
    err = capsys.readouterr().err
    assert err.startswith(f"error: --report={tmp_path} is a folder; expected a file")


def test_a_last_train_shard_too_short_for_a_window_adds_none(tmp_path, capsys):
    """prepare.py's last train shard can hold a few tokens: train.py trains on such a folder, so
    eval.py --split=train scores it too, the other shards' windows."""
    tokens = np.array(load_tokenizer("gpt2").encode_ordinary(" ".join(DOCS) * 12))
    data = tmp_path / "tokens"
    write_shard(data / "val_000000.bin", tokens[:3000])
    write_shard(data / "train_000001.bin", tokens[3000:5000])
    write_shard(data / "train_000002.bin", tokens[5000:5010])
    path, _ = tiny.checkpoint(tmp_path / "ckpt.pt", "gpt2", bias=True)  # block_size 64
    report = run_eval(capsys, f"--ckpt={path}", f"--data={data}", "--split=train", "--windows=0")
    assert report["tokens"] == (2000 - 1) // 64 * 64


def test_help_describes_the_script_in_a_whole_sentence(capsys):
    """The description was the docstring's first line, which stops at 'or multiple-choice'."""
    with pytest.raises(SystemExit):
        evaluate.get_args(["--help"])
    assert "or multiple-choice accuracy on HellaSwag." in " ".join(capsys.readouterr().out.split())
