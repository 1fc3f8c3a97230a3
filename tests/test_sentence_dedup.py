"""Tests for sentence_dedup.py on real pages with a boilerplate paragraph planted into some of them:
against a brute-force reference (every span's normalized text in a Python set, documents in order),
for any number of workers, machines and hash ranges, and in place after dedup.py's passes."""

import gzip
import json
import sys
import threading
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pytest

import crashsafe
import dedup
import sentence_dedup
import words

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data/sample/docs.jsonl.gz"
BOILERPLATE = ("Sign up for our weekly newsletter to hear about new releases first. We send one e-mail a "
               "week, never more. You can unsubscribe at any time with one click. Read past issues in our archive.")


def read(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)


def plant(doc, k):
    """The boilerplate as a paragraph of its own after the doc's k-th sentence, or None if too short."""
    ends = words.sentence_ends(doc["text"])
    if len(ends) < k + 3 or doc["text"][ends[k]:ends[k] + 1] != "\n":
        return None
    return {**doc, "text": doc["text"][:ends[k]] + "\n" + BOILERPLATE + doc["text"][ends[k]:]}


def spans(text, n=3):
    normalized = [dedup.normalize(s) for s in sentence_dedup.sentences(text)]
    return [" ".join(normalized[i:i + n]) for i in range(len(normalized) - n + 1)]


def reference(docs, n=3, min_doc_words=50):
    """Brute force: each span of n sentences as its normalized text, remembered in a set."""
    seen, out = set(), []
    for doc in docs:
        starts = []
        for i, span in enumerate(spans(doc["text"], n)):
            if span.strip():
                starts.append(i) if span in seen else seen.add(span)
        text = sentence_dedup.remove_spans(doc["text"], starts, n) if starts else doc["text"]
        if not starts or text and words.count_words(text) >= min_doc_words:
            out.append({**doc, "text": text})
    return out


def args(**kw):
    return Namespace(**{"workers": 1, "shard": 0, "num_shards": 1, "min_doc_words": 50, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """200 pages of the sample in 3 shards, the boilerplate planted into every 3rd of those that
    share no span with another page (so that it cuts no span that would be removed anyway)."""
    tmp = tmp_path_factory.mktemp("sentences")
    docs = read(SAMPLE)[:200]
    docs = docs[0::3] + docs[1::3] + docs[2::3]  # input order: 3 shards, one after another
    before = reference(docs)
    count = Counter(span for d in docs for span in spans(d["text"]))
    untouched = {d["id"] for d in docs if all(count[span] == 1 for span in spans(d["text"]))}
    planted = []
    for i, doc in enumerate(docs):
        if doc["id"] in untouched and len(planted) * 3 <= len(untouched) and (p := plant(doc, 2 + i % 5)):
            docs[i] = p
            planted.append(doc["id"])
    sizes = [len(range(k, 200, 3)) for k in range(3)]
    for k in range(3):
        write(tmp / "in" / f"part-{k}.jsonl.gz", docs[sum(sizes[:k]):sum(sizes[:k + 1])])
    assert len(planted) >= 20
    order = docs
    return tmp, order, planted, {d["id"]: d for d in before}


def run(tmp, name, **kw):
    out = tmp / name
    report = sentence_dedup.run(sorted((tmp / "in").glob("*.jsonl.gz")), out, args(**kw))
    return out, report


def output_docs(out):
    return [d for i in range(3) for d in read(out / f"part-{i}.jsonl.gz")]


def test_planted_boilerplate_is_removed_everywhere_but_once(corpus):
    tmp, docs, planted, before = corpus
    out, report = run(tmp, "one")
    got = output_docs(out)
    assert got == reference(docs)
    first = next(d["id"] for d in docs if d["id"] in planted)  # the first planted page in input order
    assert [d["id"] for d in got if BOILERPLATE in d["text"]] == [first]
    # and nothing else changes: every other page is what it is without the boilerplate
    assert [d for d in got if d["id"] != first] == [before[d["id"]] for d in docs if d["id"] != first and d["id"] in before]
    totals = report["totals"]
    assert totals["documents_in"] == len(docs) and totals["documents_out"] == len(got)
    assert totals["documents_dropped"] == len(docs) - len(got)
    assert totals["spans_removed"] >= 2 * (len(planted) - 1)  # its 4 sentences are 2 windows of 3


def test_same_output_for_any_workers_machines_and_ranges(corpus):
    tmp, _, _, _ = corpus
    one, _ = run(tmp, "one")
    two, _ = run(tmp, "two_workers", workers=2, rows_per_range=500)  # many ranges of hash values
    machines = []
    for shard in range(2):  # two machines at once, sharing the output folder
        machines.append(threading.Thread(target=run, args=(tmp, "two_machines"), kwargs=dict(shard=shard, num_shards=2)))
        machines[-1].start()
    for machine in machines:
        machine.join(timeout=120)
    for i in range(3):
        name = f"part-{i}.jsonl.gz"
        assert (one / name).read_bytes() == (two / name).read_bytes() == (tmp / "two_machines" / name).read_bytes()
    assert json.loads((tmp / "two_machines" / "report_sentences_00001_of_00002.json").read_text())["complete"]
    # the next stage reads these reports as it reads every stage's: complete, nothing missing
    shards = sorted((tmp / "two_machines").glob("*.jsonl.gz"))
    check = crashsafe.check_input(tmp / "two_machines", shards)
    assert check == {"input_complete": True, "input_problems": []}


def test_rerun_skips_done_shards(corpus):
    tmp, _, _, _ = corpus
    out, first = run(tmp, "one")
    before = [(out / f"part-{i}.jsonl.gz").stat().st_mtime_ns for i in range(3)]
    _, again = run(tmp, "one")
    assert again["totals"] == first["totals"]
    # the summary said every shard processed, none already done
    assert (again["shards_skipped_done"], again["shards_processed"]) == (3, 0)
    assert [(out / f"part-{i}.jsonl.gz").stat().st_mtime_ns for i in range(3)] == before


def test_in_place_after_dedup_passes(corpus, tmp_path):
    tmp, docs, _, _ = corpus
    argv = sys.argv
    try:
        sys.argv = ["dedup.py", f"--input={tmp / 'in'}", f"--output={tmp_path / 'plain'}", "--workers=1"]
        dedup.main()
        sys.argv = ["dedup.py", f"--input={tmp / 'in'}", f"--output={tmp_path / 'both'}", "--workers=1", "--sentences"]
        dedup.main()
        dedup.main()  # a rerun changes nothing
    finally:
        sys.argv = argv
    survivors = [d for i in range(3) for d in read(tmp_path / "plain" / f"part-{i}.jsonl.gz")]
    assert len(survivors) < len(docs)  # the sample's duplicate pages went first
    assert output_docs(tmp_path / "both") == reference(survivors)
    report = json.loads((tmp_path / "both" / "report_sentences.json").read_text())
    assert report["complete"] and report["totals"]["documents_in"] == len(survivors)


def test_a_kill_between_dedup_and_its_sentence_pass_leaves_a_folder_that_reads_incomplete(corpus, tmp_path,
                                                                                      monkeypatch):
    """dedup.py --sentences wrote report.json complete before the sentence pass said it had begun:
    killed in between, the folder read complete to prepare.py with every repeated span still in it."""
    tmp, docs, _, _ = corpus
    out = tmp_path / "both"

    def killed(*a, **kw):
        raise KeyboardInterrupt("killed before the sentence pass")

    argv = sys.argv
    try:
        sys.argv = ["dedup.py", f"--input={tmp / 'in'}", f"--output={out}", "--workers=1", "--sentences"]
        with monkeypatch.context() as m:
            m.setattr(sentence_dedup, "dedup_sentences", killed)
            with pytest.raises(KeyboardInterrupt):
                dedup.main()
        shards = sorted(out.glob("*.jsonl.gz"))
        assert len(shards) == 3 and crashsafe.check_input(out, shards)["input_complete"] is False
        report = json.loads((out / "report_sentences.json").read_text())
        assert report["pid"] > 0 and report["host"] and report["started"]  # who to look for, as every stage
        dedup.main()  # the rerun completes the folder
    finally:
        sys.argv = argv
    assert crashsafe.check_input(out, sorted(out.glob("*.jsonl.gz")))["input_complete"] is True
    assert json.loads((out / "report_sentences.json").read_text())["complete"]


def test_short_document_left_is_dropped(tmp_path):
    prose = " ".join(f"Sentence number {w} is here." for w in "one two three four five six".split())
    docs = [{"id": "a", "text": prose + "\n" + BOILERPLATE}, {"id": "b", "text": BOILERPLATE + "\nThe end, with more words."}]
    write(tmp_path / "in" / "x.jsonl.gz", docs)
    out = tmp_path / "out"
    report = sentence_dedup.run([tmp_path / "in" / "x.jsonl.gz"], out, args(min_doc_words=10))
    assert read(out / "x.jsonl.gz") == reference(docs, min_doc_words=10) == [docs[0]]
    assert report["totals"]["documents_dropped"] == 1 and report["totals"]["spans_removed"] == 2
    assert report["totals"]["characters_removed"] == len(BOILERPLATE) + 1


def test_rerun_with_another_min_doc_words_redoes_the_shard(tmp_path):
    docs = [{"id": "a", "text": BOILERPLATE + " One more line."},
            {"id": "b", "text": BOILERPLATE + " The end."}]
    write(tmp_path / "in" / "x.jsonl.gz", docs)
    shards, out = [tmp_path / "in" / "x.jsonl.gz"], tmp_path / "out"
    first = sentence_dedup.run(shards, out, args(min_doc_words=10))
    assert first["totals"]["documents_dropped"] == 1
    report = sentence_dedup.run(shards, out, args(min_doc_words=1))
    assert [d["id"] for d in read(out / "x.jsonl.gz")] == ["a", "b"]
    assert "documents_dropped" not in report["totals"]


def test_rerun_after_editing_the_input_into_another_folder_redoes_the_shard(tmp_path):
    """Into another folder, an edited input shard was taken for our own rewrite of it (the check
    meant for dedup.py --sentences, in place): the old output stayed, reported as done."""
    docs = [{"id": "a", "text": BOILERPLATE + " One more line."}, {"id": "b", "text": BOILERPLATE + " The end."}]
    write(tmp_path / "in" / "x.jsonl.gz", docs)
    shards, out = [tmp_path / "in" / "x.jsonl.gz"], tmp_path / "out"
    sentence_dedup.run(shards, out, args(min_doc_words=1))
    edited = [docs[1], {"id": "c", "text": "A page of its own. " + BOILERPLATE}]
    write(tmp_path / "in" / "x.jsonl.gz", edited)
    report = sentence_dedup.run(shards, out, args(min_doc_words=1))
    assert read(out / "x.jsonl.gz") == reference(edited, min_doc_words=1)
    assert report["shards_processed"] == 1 and report["totals"]["documents_in"] == 2
