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


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "shard.jsonl.gz"
    with pytest.raises(RuntimeError):
        with common.jsonl_writer(target) as write:
            write({"id": "1", "text": "half a shard"})
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
