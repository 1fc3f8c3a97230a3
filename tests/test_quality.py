"""Tests for clean.py's model-based quality filter (quality.py), with models the tests make: a tiny
random BERT-style regressor saved as a Hugging Face folder, scored against transformers called
directly, and a fastText classifier trained from two folders of the built-in sample's pages."""

import gzip
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

import clean
import quality

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data/sample/docs.jsonl.gz"


def read(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(doc) + "\n" for doc in docs)


def run_clean(*flags):
    argv = sys.argv
    sys.argv = ["clean.py", *flags]
    try:
        clean.main()
    finally:
        sys.argv = argv


# -----------------------------------------------------------------------------------------------
# a Hugging Face regression model, as FineWeb-Edu's classifier is one


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    import torch
    import transformers  # requirements-test.txt: CI runs these tests, never skips them
    folder = tmp_path_factory.mktemp("tiny_bert")
    counts = Counter(w for doc in read(SAMPLE)[:100] for w in doc["text"].lower().split() if w.isalpha())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in counts.most_common(500)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=48, max_position_embeddings=512, num_labels=1,
                                     problem_type="regression", initializer_range=0.2)  # not 0.02: scores differ
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def direct_scores(folder, texts):
    """transformers on its own, one text at a time: no padding, no batching, nothing of ours."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return [model(**tokenizer(t, truncation=True, max_length=512, return_tensors="pt")).logits[0, 0].item()
                for t in texts]


def test_transformer_scores_equal_transformers(tiny_bert):
    docs = read(SAMPLE)
    texts = [d["text"] for d in docs[:12]] + ["Short.", "word " * 2000]  # most are longer than 512 tokens
    assert max(len(t.split()) for t in texts) > 600
    ours = quality.transformer_scores(quality.load_model(str(tiny_bert), "cpu"), texts)
    expected = direct_scores(tiny_bert, texts)
    assert ours == pytest.approx(expected, abs=1e-4)
    assert max(expected) - min(expected) > 0.01  # the texts really score differently


def test_transformer_filter_in_the_stage(tiny_bert, tmp_path):
    # the model alone as the chain (--filters=quality), on 40 pages in batches of 6 (the last one short)
    docs = read(SAMPLE)[:40]
    write(tmp_path / "in" / "sample.jsonl.gz", docs)
    model = [f"--quality_model={tiny_bert}", "--quality_device=cpu", "--quality_batch_size=6", "--filters=quality"]
    run_clean(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'scored'}", "--workers=1", *model)
    scored = read(tmp_path / "scored" / "sample.jsonl.gz")
    report = json.loads((tmp_path / "scored" / "report.json").read_text())["totals"]
    assert len(scored) == len(docs) and "rejected:quality" not in report  # no threshold: scored, none dropped
    expected = quality.transformer_scores(quality.load_model(str(tiny_bert), "cpu"), [d["text"] for d in docs])
    assert [d["quality_score"] for d in scored] == pytest.approx(expected, abs=1e-3)
    assert sum(v for k, v in report.items() if k.startswith("quality_score:")) == len(scored)
    assert Counter(quality.histogram_bin(d["quality_score"], "huggingface") for d in scored) == {
        k: v for k, v in report.items() if k.startswith("quality_score:")}
    threshold = sorted(set(expected))[len(set(expected)) // 2]
    run_clean(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'kept'}", "--workers=2", "--save_rejected",
              f"--quality_threshold={threshold}", *model)
    kept = read(tmp_path / "kept" / "sample.jsonl.gz")
    below = read(tmp_path / "kept" / "rejected" / "sample.jsonl.gz")
    assert [d["id"] for d in kept] == [d["id"] for d in scored if d["quality_score"] >= threshold]
    assert [d["id"] for d in below] == [d["id"] for d in scored if d["quality_score"] < threshold]
    assert kept and below and all(d["filter"] == "quality" and d["reason"] == "below_threshold" for d in below)
    totals = json.loads((tmp_path / "kept" / "report.json").read_text())["totals"]
    assert totals["rejected:quality:below_threshold"] == len(below) and totals["docs_out"] == len(kept)


def test_flags_that_would_lose_or_keep_everything_are_refused(capsys):
    with pytest.raises(SystemExit):  # it would have filtered nothing, without a word
        clean.parse_config(["--quality_threshold=2.5"])
    assert "--quality_model" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # batches of 0 pages: the loop ended with no page written
        clean.parse_config(["--quality_batch_size=0"])
    assert "--quality_batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["no_model", "language_model", "empty_folder"])
def test_a_quality_model_that_is_not_one_stops_with_one_line(tmp_path, capsys, kind):
    """A file that is no model was a traceback (fastText's ValueError); lid.176 loads but has no
    __label__hq, so every page scored 0 and --quality_threshold dropped them all."""
    write(tmp_path / "in" / "a.jsonl.gz", read(SAMPLE)[:2])
    model = {"no_model": tmp_path / "junk.bin", "empty_folder": tmp_path / "folder",
             "language_model": clean.parse_config([]).language_model}[kind]
    (tmp_path / "junk.bin").write_text("not a model")
    (tmp_path / "folder").mkdir()
    with pytest.raises(SystemExit):
        run_clean(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--filters=quality",
                  f"--quality_model={model}", "--quality_threshold=0.5", "--workers=1")
    err = capsys.readouterr().err
    assert f"error: --quality_model={model}: " in err and "Traceback" not in err
    assert not (tmp_path / "out" / "a.jsonl.gz").exists()


@pytest.fixture(scope="module")
def untrained_heads(tiny_bert, tmp_path_factory):
    """Two folders that AutoModelForSequenceClassification loads with a random head: a causal LM (as
    export.py writes one) and a bare BERT encoder whose config says num_labels=1; tiny_bert's tokenizer."""
    import shutil
    import torch
    import transformers
    folders = {}
    small = dict(vocab_size=transformers.AutoTokenizer.from_pretrained(tiny_bert).vocab_size)
    for kind, model in (("causal_lm", lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
                            **small, n_embd=16, n_layer=1, n_head=2, bos_token_id=2, eos_token_id=3))),
                        ("headless_classifier", lambda: transformers.BertModel(transformers.BertConfig(
                            **small, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, num_labels=1, problem_type="regression")))):
        folders[kind] = tmp_path_factory.mktemp(kind)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_bert / name, folders[kind] / name)
        torch.manual_seed(0)
        model().save_pretrained(folders[kind])
    return folders


@pytest.mark.parametrize("kind", ["causal_lm", "headless_classifier"])
def test_a_model_without_a_trained_head_is_refused_before_any_shard(untrained_heads, tmp_path, capsys, kind):
    """A causal LM got a random score head: transformers printed its load report, and the run failed
    on its 2 outputs only inside the first shard. A classifier saved without its head (num_labels=1)
    scored every page with random weights, without a word. Both: one line, nothing written."""
    write(tmp_path / "in" / "a.jsonl.gz", read(SAMPLE)[:2])
    folder = untrained_heads[kind]
    with pytest.raises(SystemExit):
        run_clean(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", f"--quality_model={folder}",
                  "--quality_device=cpu", "--workers=1")
    out, err = capsys.readouterr()
    head = {"causal_lm": "score.weight", "headless_classifier": "classifier.bias, classifier.weight"}[kind]
    assert f"error: --quality_model={folder}: no weights for {head} in the checkpoint" in err
    assert "LOAD REPORT" not in out + err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # not even the stage report: it stopped before the first shard


def test_histogram_bins():
    assert quality.histogram_bin(2.49, "huggingface") == "quality_score:2.0-2.5"
    assert quality.histogram_bin(2.5, "huggingface") == "quality_score:2.5-3.0"
    assert quality.histogram_bin(-0.1, "huggingface") == "quality_score:<0"
    assert quality.histogram_bin(5.2, "huggingface") == "quality_score:>=5"
    assert quality.histogram_bin(0.95, "fasttext") == "quality_score:0.9-1.0"
    assert quality.histogram_bin(1.0, "fasttext") == "quality_score:>=1"


def test_a_nan_score_is_counted_and_never_written():
    """A model that returns NaN for a page must not crash the histogram, nor write NaN, which is no
    JSON (the next stage would set the page aside as a bad line)."""
    for threshold, reason in ((None, None), (2.0, "no_score")):
        cfg, doc, stats = clean.parse_config(["--filters=pii"]), {"text": "a page"}, Counter()
        cfg.quality_threshold, cfg.quality_kind = threshold, "huggingface"
        assert quality.quality_reason(doc, float("nan"), cfg, stats) == reason
        assert doc["quality_score"] is None and stats == {"quality_score:nan": 1}


# -----------------------------------------------------------------------------------------------
# a fastText classifier (DCLM's kind), trained on two kinds of pages the sample has


def held_out(doc):
    return int(hashlib.sha256(doc["id"].encode()).hexdigest(), 16) % 4 == 0


class FakeModel:  # real training takes seconds (2 M hash buckets): these tests check the call
    def save_model(self, path):
        Path(path).write_bytes(b"model")

    def predict(self, text, k):
        return [quality.HIGH], [1.0]


def fake_training(tmp_path, monkeypatch, train_supervised):
    """Two tiny folders to train on, and fastText's trainer replaced by `train_supervised`."""
    import fasttext
    for name in ("pos", "neg"):
        write(tmp_path / name / "a.jsonl.gz", [{"id": f"{name}{i}", "text": f"{name} {i}"} for i in range(4)])
    monkeypatch.setattr(fasttext, "train_supervised", train_supervised)


def test_fasttext_training_with_few_workers_uses_11_threads(tmp_path, monkeypatch):
    """fastText initialises its weights a tenth per thread: under 11 threads part of them keeps what
    the memory held (a model that changed with the tests run before it, and once NaN in CI). And
    --workers=0 (one process, for the other stages) must not reach it as 0 threads (SIGFPE)."""
    threads = []
    fake_training(tmp_path, monkeypatch, lambda **options: threads.append(options["thread"]) or FakeModel())
    for workers in (0, 1, 2, 16):
        quality.train_fasttext(tmp_path / "pos", tmp_path / "neg", tmp_path / "m.bin", threads=workers)
    assert threads == [11, 11, 11, 16]


def test_fasttext_training_that_diverges_is_one_line_and_writes_no_model(tmp_path, monkeypatch, capsys):
    """fastText stops with "Encountered NaN." when its weights blow up: one line that names the rate
    and says to lower it, not a traceback, and no model file."""
    def train_supervised(**options):
        raise RuntimeError("Encountered NaN.")
    fake_training(tmp_path, monkeypatch, train_supervised)
    with pytest.raises(SystemExit):
        quality.train_fasttext(tmp_path / "pos", tmp_path / "neg", tmp_path / "m.bin", lr=0.8)
    assert capsys.readouterr().err.endswith(
        "error: --train_quality: fastText failed at --quality_lr=0.8: Encountered NaN. (try a lower --quality_lr)\n")
    assert not (tmp_path / "m.bin").exists()


def test_fasttext_trained_on_two_folders_separates_held_out_pages(tmp_path):
    docs, seen = [], set()
    for doc in read(SAMPLE):  # one copy of each text, so no page is in both parts
        if doc["text"] not in seen:
            seen.add(doc["text"])
            docs.append(doc)
    # PostgreSQL's SQL reference pages against the Debian handbook's English prose, as many of each
    postgres = [d for d in docs if "postgresql.org/docs/15/sql-" in d["url"]]
    handbook = [d for d in docs if "debian-handbook.info/browse/en-US/" in d["url"]]
    postgres, handbook = postgres[:len(handbook)], handbook[:len(postgres)]
    assert len(postgres) > 80 and len(handbook) > 80
    for name, kind in (("postgres", postgres), ("handbook", handbook)):
        write(tmp_path / name / "train.jsonl.gz", [d for d in kind if not held_out(d)])
        write(tmp_path / "held_out" / f"{name}.jsonl.gz", [d for d in kind if held_out(d)])
    model = tmp_path / "quality.bin"
    run_clean(f"--train_quality={tmp_path / 'postgres'},{tmp_path / 'handbook'}", f"--output_model={model}",
              "--quality_epoch=20", "--quality_lr=0.25", "--workers=1")
    scorer = quality.load_model(str(model))
    for kind, high in ((postgres, True), (handbook, False)):
        test = [d for d in kind if held_out(d)]
        right = sum((quality.fasttext_score(scorer, d["text"]) >= 0.5) == high for d in test)
        assert right >= 0.9 * len(test) and len(test) >= 20
    # and as the last filter of the stage (alone here): in the workers, same output for 1 or 2 of them
    for workers in (1, 2):
        run_clean(f"--input={tmp_path / 'held_out'}", f"--output={tmp_path / f'out{workers}'}", "--filters=quality",
                  f"--quality_model={model}", "--quality_threshold=0.5", f"--workers={workers}")
    kept = read(tmp_path / "out1" / "postgres.jsonl.gz") + read(tmp_path / "out1" / "handbook.jsonl.gz")
    assert all(d["quality_score"] >= 0.5 for d in kept)
    assert sum("postgresql.org" in d["url"] for d in kept) >= 0.9 * len(kept)
    for name in ("postgres.jsonl.gz", "handbook.jsonl.gz"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    totals = json.loads((tmp_path / "out1" / "report.json").read_text())["totals"]
    assert totals["docs_in"] == sum(v for k, v in totals.items() if k.startswith("quality_score:"))
