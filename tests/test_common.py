"""The plumbing the data stages share: ordered bounded parallel map, shard listing, resumable runs."""

import argparse
import gzip
import json
from collections import Counter

import pytest

import common


def square(x):
    return x * x


def test_parallel_map_keeps_order_and_reads_ahead_only_a_little():
    consumed = []

    def items():
        for i in range(10_000):
            consumed.append(i)
            yield i

    results = common.parallel_map(square, items(), workers=2, batch_size=10)
    first = next(results)
    # at most 2 batches per worker in flight, plus the batch being filled
    assert first == 0 and len(consumed) <= 2 * 2 * 10 + 10
    assert [first, *results] == [i * i for i in range(10_000)]


def test_list_shards_splits_files_across_machines(tmp_path):
    for name in ["b.jsonl.gz", "a.jsonl", "c.jsonl.gz", "notes.txt"]:
        (tmp_path / name).write_text("")
    everything = [p.name for p in common.list_shards(str(tmp_path))]
    assert everything == ["a.jsonl", "b.jsonl.gz", "c.jsonl.gz"]
    parts = [[p.name for p in common.list_shards(str(tmp_path), i, 2)] for i in range(2)]
    assert sorted(parts[0] + parts[1]) == everything and not set(parts[0]) & set(parts[1])
    assert [p.name for p in common.list_shards(str(tmp_path / "*.gz"))] == ["b.jsonl.gz", "c.jsonl.gz"]
    with pytest.raises(SystemExit):
        common.list_shards(str(tmp_path / "missing"))


def test_list_shards_refuses_inputs_that_would_overwrite_each_other(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for name in ["a.jsonl", "a.jsonl.gz", "x/b.jsonl.gz", "y/b.jsonl"]:
        (tmp_path / name).write_text("")
    for pattern in [str(tmp_path), str(tmp_path / "*" / "b.jsonl*")]:  # a folder, and a glob over two
        with pytest.raises(SystemExit):
            common.list_shards(pattern)
        assert "would both be written as" in capsys.readouterr().err


def test_run_stage_skips_done_shards_and_reports_all(tmp_path):
    inputs = []
    for k in range(3):
        path = tmp_path / "in" / f"part{k}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps({"id": f"{k}-{i}", "text": f"doc {i}"}) + "\n" for i in range(k + 1)))
        inputs.append(path)
    calls = []

    def copy_shard(in_path, out_path):
        calls.append(in_path.name)
        stats = Counter()
        with common.jsonl_writer(out_path) as write:
            for _, doc in common.read_documents(in_path, stats):
                write(doc)
                stats["documents_in"] += 1
        return stats

    args = argparse.Namespace(input=str(tmp_path / "in"), num_shards=1, shard=0)
    common.run_stage("copy", copy_shard, inputs[:2], tmp_path / "out", args)
    assert calls == ["part0.jsonl", "part1.jsonl"]
    # a crash after writing a shard but before its stats: that shard is redone, the others skipped
    (tmp_path / "out" / ".stats" / "part1.jsonl.gz.json").unlink()
    report = common.run_stage("copy", copy_shard, inputs, tmp_path / "out", args)
    assert calls == ["part0.jsonl", "part1.jsonl", "part1.jsonl", "part2.jsonl"]
    assert report["totals"]["documents_in"] == 1 + 2 + 3 and report["shards_skipped_done"] == 1
    with gzip.open(tmp_path / "out" / "part2.jsonl.gz", "rt") as f:
        assert [json.loads(line)["id"] for line in f] == ["2-0", "2-1", "2-2"]
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_run_stage_redoes_a_shard_made_under_other_settings_or_from_another_input(tmp_path):
    path = tmp_path / "in" / "part0.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"id": "a", "text": "one"}) + "\n")
    calls = []

    def count_shard(in_path, out_path):
        calls.append(in_path.name)
        stats = Counter(documents_in=sum(1 for _ in common.read_documents(in_path, Counter())))
        with common.jsonl_writer(out_path) as write:
            write({"id": "x", "text": "made"})
        return stats

    args = argparse.Namespace(input=str(tmp_path / "in"), num_shards=1, shard=0)

    def run(**settings):
        return common.run_stage("copy", count_shard, [path], tmp_path / "out", args, settings=settings)

    run(languages={"en"}, threshold=0.5)
    run(languages={"en"}, threshold=0.5)
    assert calls == ["part0.jsonl"]  # the same settings, read back from JSON: done
    run(languages={"de"}, threshold=0.5)
    assert len(calls) == 2
    path.write_text("".join(json.dumps({"id": k, "text": "two"}) + "\n" for k in "ab"))
    report = run(languages={"de"}, threshold=0.5)
    assert len(calls) == 3 and report["totals"] == {"documents_in": 2}
    # a stats file of an older run (plain stats, no settings recorded) still counts as done
    (tmp_path / "out" / ".stats" / "part0.jsonl.gz.json").write_text('{"documents_in": 2}')
    assert run(threshold=0.9)["shards_skipped_done"] == 1 and len(calls) == 3


def test_run_stage_refuses_to_overwrite_its_input_or_to_write_into_a_file(tmp_path, capsys):
    path = tmp_path / "part0.jsonl.gz"
    with common.jsonl_writer(path) as write:
        write({"id": "a", "text": "the raw page"})
    args = argparse.Namespace(input=str(tmp_path), num_shards=1, shard=0)
    for output in (tmp_path, path):  # in place; a file where the folder should be
        with pytest.raises(SystemExit):
            common.run_stage("clean", lambda i, o: Counter(), [path], output, args)
        assert "Traceback" not in capsys.readouterr().err
    assert [d["text"] for _, d in common.read_documents(path, Counter())] == ["the raw page"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part0.jsonl.gz"]


def test_a_killed_sentence_pass_makes_its_folder_incomplete(tmp_path):
    path = tmp_path / "part0.jsonl.gz"
    with common.jsonl_writer(path) as write:
        write({"id": "a", "text": "a page"})
    shards = [{"name": path.name}]
    common.write_json(tmp_path / "report.json", {"stage": "dedup", "complete": True, "shards": shards})
    common.write_json(tmp_path / "report_sentences.json", {"stage": "sentence_dedup", "complete": False,
                                                           "shards": []})
    assert common.check_input(str(tmp_path), [path])["input_complete"] is False


def test_a_shard_its_report_lists_but_the_folder_lacks_makes_it_incomplete(tmp_path):
    """A complete report is not enough: a shard it lists may be gone (deleted by hand, or given up
    on by a run whose report was rewritten after a kill). It read complete, one shard short."""
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"part{k}.jsonl.gz")
        with common.jsonl_writer(paths[-1]) as write:
            write({"id": str(k), "text": "a page"})
    common.write_json(tmp_path / "report.json", {"stage": "clean", "complete": True,
                                                 "shards": [{"name": p.name} for p in paths]})
    assert common.check_input(str(tmp_path), paths)["input_complete"] is True
    paths[1].unlink()
    check = common.check_input(str(tmp_path), paths[:1])
    assert check["input_complete"] is False
    assert check["input_problems"] == [f"{tmp_path}: 1 shard(s) its report lists are missing: part1.jsonl.gz"]
    # an --input glob that takes only some of the shards is no gap, while the rest are there
    with common.jsonl_writer(paths[1]) as write:
        write({"id": "1", "text": "a page"})
    assert common.check_input(str(tmp_path / "part0*"), paths[:1])["input_complete"] is True


def test_list_shards_takes_a_file_path_as_written_not_as_a_glob(tmp_path):
    path = tmp_path / "crawl [2024]" / "a.jsonl.gz"  # [2024] as a pattern matches one character
    path.parent.mkdir()
    with common.jsonl_writer(path) as write:
        write({"id": "a", "text": "a page"})
    assert common.list_shards(str(path)) == [path]


def test_a_run_on_another_number_of_machines_replaces_the_old_reports(tmp_path):
    """Two machines, then one over the same folder: the old machines' reports would have the next
    stage warn for ever that runs of two --num_shards are mixed."""
    paths = []
    for k in range(2):
        paths.append(tmp_path / "in" / f"part{k}.jsonl")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_text(json.dumps({"id": str(k), "text": "a page"}) + "\n")

    def copy(in_path, out_path):
        with common.jsonl_writer(out_path) as write:
            write({"id": in_path.name, "text": "a page"})
        return Counter(documents_in=1)

    out = tmp_path / "out"
    for shard in range(2):
        args = argparse.Namespace(input=str(tmp_path / "in"), num_shards=2, shard=shard)
        common.run_stage("copy", copy, paths[shard::2], out, args)
    common.run_stage("copy", copy, paths, out, argparse.Namespace(input="", num_shards=1, shard=0))
    assert sorted(p.name for p in out.glob("report*.json")) == ["report.json"]
    assert common.check_input(str(out), sorted(out.glob("*.jsonl.gz")))["input_complete"] is True


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "shard.jsonl.gz"
    with pytest.raises(RuntimeError):
        with common.jsonl_writer(target) as write:
            write({"id": "1", "text": "half a shard"})
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
