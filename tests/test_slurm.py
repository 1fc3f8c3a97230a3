"""slurm/ against a real one-node Slurm cluster (Debian's slurm-wlm and munge, started from a
temporary folder): the data pipeline as chained array jobs equals the one-machine commands byte for
byte, with more tasks than CPUs, with one task, and with a task killed mid-run and rerun alone;
train.sbatch under srun + torchrun matches one process, and a job requeued mid-run resumes and
ends bit-identical to an uninterrupted one."""

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import dedup
from common import list_shards

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
RANGE_DOCS = 5  # the killed run cuts the hash range finely, so its buckets tasks run long enough to kill
TRAIN = ["--device=cpu", "--dtype=float32", "--compile=false", "--n_layer=1", "--n_head=2", "--n_embd=16",
         "--block_size=32", "--batch_size=2", "--batch_tokens=128", "--max_iters=16", "--eval_interval=8",
         "--eval_iters=1", "--warmup_iters=2", "--lr_decay_iters=16", "--learning_rate=1e-2", "--min_lr=1e-3"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, what, timeout=300, every=0.2):
    deadline = time.time() + timeout
    while not (result := condition()):
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
    return result


@pytest.fixture(scope="module")
def cluster():
    """munged, slurmctld and slurmd from a temporary folder; SLURM_CONF points the clients there."""
    if not all(os.path.exists(d) for d in DAEMONS):
        if os.environ.get("REQUIRE_SLURM"):  # CI sets it: there the tests must run, not skip
            pytest.fail("REQUIRE_SLURM is set but slurm-wlm or munge is not installed")
        pytest.skip("Slurm is not installed (apt-get install slurm-wlm munge)")
    folder = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))  # munge wants its folder and parents 755
    folder.chmod(0o755)
    for name in ("munge", "state", "spool", "log"):
        (folder / name).mkdir(mode=0o755)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    socket_path = folder / "munge" / "munge.socket"
    host = socket.gethostname()
    conf = folder / "slurm.conf"
    conf.write_text(f"""ClusterName=test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    pid_files = [folder / "munge" / "munged.pid", folder / "slurmctld.pid", folder / "slurmd.pid"]
    try:
        subprocess.run([DAEMONS[0], f"--key-file={key}", f"--socket={socket_path}", f"--pid-file={pid_files[0]}",
                        f"--log-file={folder}/munge/munged.log", f"--seed-file={folder}/munge/seed", "--force"],
                       check=True)
        subprocess.run([DAEMONS[1]], check=True)
        subprocess.run([DAEMONS[2]], check=True)
        wait_for(lambda: subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
                 .stdout.strip() == "idle", "the node to come up", timeout=30)
        yield folder
    finally:
        subprocess.run(["scancel", "--user=root"], capture_output=True)
        for pid_file in reversed(pid_files):  # by their pids, never by name: other clusters may run here
            try:
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not os.path.exists(f"/proc/{pid}"), f"pid {pid} to stop", timeout=20, every=0.05)
            except (OSError, ValueError):
                pass
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        shutil.rmtree(folder, ignore_errors=True)


def environment():
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")


def submit_pipeline(raw, work, tasks, *flags):
    result = subprocess.run(["bash", str(ROOT / "slurm" / "pipeline.sh"), f"--input={raw}", f"--work={work}",
                             f"--tasks={tasks}", *flags], capture_output=True, text=True, env=environment())
    assert result.returncode == 0, result.stderr
    return dict(zip(["clean", "signatures", "buckets", "clusters", "write", "prepare"], result.stdout.split()))


def job_states(job):
    """{task id: (state, reason)} of a job still known to slurmctld."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i %T %r"], capture_output=True, text=True).stdout
    return {line.split()[0]: tuple(line.split()[1:3]) for line in out.splitlines()}


def finished(jobs):
    return not any(job_states(j) for j in jobs)


def logs(work):
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((Path(work) / "logs").glob("*.out")))


def sample_subset(others=300):
    """The built-in sample's documents with a planted copy (both sides of each pair), and the first
    `others` of the rest: the duplicates to find, at a quarter of the sample's cost to clean."""
    planted = json.loads((SAMPLE / "planted.json").read_text())
    wanted = {d[k] for kind in ("exact_duplicates", "near_duplicates") for d in planted[kind]
              for k in ("url", "duplicate_of")}
    lines = gzip.decompress((SAMPLE / "docs.jsonl.gz").read_bytes()).splitlines(keepends=True)
    urls = [json.loads(line)["url"] for line in lines]
    rest = set([i for i, url in enumerate(urls) if url not in wanted][:others])
    return [line for i, (line, url) in enumerate(zip(lines, urls)) if url in wanted or i in rest]


@pytest.fixture(scope="module")
def pipelines(cluster, tmp_path_factory):
    """Real pages with planted duplicates in 6 shards, through (a) clean.py, dedup.py and prepare.py
    on this machine, (b) slurm/pipeline.sh with 1 task and (c) with 4 tasks on the 2-CPU node, where
    one buckets task is killed mid-run and rerun alone with slurm/rerun.sh. All three at once."""
    tmp = tmp_path_factory.mktemp("pipelines")
    raw = tmp / "raw"
    raw.mkdir()
    lines = sample_subset()
    for i in range(6):
        (raw / f"part-{i}.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[i::6]), mtime=0))
    one, four, ref = tmp / "one", tmp / "four", tmp / "ref"
    jobs_four = submit_pipeline(raw, four, 4, f"--dedup=--range_docs={RANGE_DOCS}")
    jobs_one = submit_pipeline(raw, one, 1)
    py = sys.executable
    reference = subprocess.Popen(
        ["bash", "-c", f"{py} clean.py --input={raw} --output={ref}/clean --workers=2 && "
                       f"{py} dedup.py --input={ref}/clean --output={ref}/dedup --workers=2 && "
                       f"{py} prepare.py --input={ref}/dedup --output={ref}/tokens --workers=2"],
        cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # kill buckets task 1 of the 4-task chain once it has written some of its units, not all
    buckets = jobs_four["buckets"]
    wait_for(lambda: job_states(buckets).get(f"{buckets}_1", ("",))[0] == "RUNNING", "buckets task 1 to run")
    args = types.SimpleNamespace(output=four / "dedup", bands=14, rows=8, range_docs=RANGE_DOCS)
    units = dedup.bucket_units(list_shards(str(four / "clean")), args)[1::4]
    task_files = [dedup.pairs_path(args, *unit) for unit in units]
    wait_for(lambda: any(p.exists() for p in task_files), "buckets task 1 to write", every=0.01)
    subprocess.run(["scancel", "--signal=KILL", "--full", f"{buckets}_1"], check=True)
    wait_for(lambda: f"{buckets}_1" not in job_states(buckets), "the killed task to end")
    killed_midway = not all(p.exists() for p in task_files)
    clusters = jobs_four["clusters"]
    state = wait_for(lambda: job_states(clusters).get(clusters), "the clusters job")
    wait_for(lambda: job_states(clusters)[clusters][1] == "DependencyNeverSatisfied", "the chain to stop")
    rerun = subprocess.run(["bash", str(ROOT / "slurm" / "rerun.sh"), str(four), buckets, "1"],
                           capture_output=True, text=True, env=environment())
    assert rerun.returncode == 0, rerun.stderr

    everything = [*jobs_four.values(), *jobs_one.values(), rerun.stdout.strip()]
    wait_for(lambda: finished(everything), "the pipelines to finish", timeout=400, every=0.5)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    return dict(ref=ref, one=one, four=four, killed_midway=killed_midway, waited=state[0] == "PENDING")


def assert_same_outputs(work, ref):
    for stage, pattern in (("clean", "*.jsonl.gz"), ("dedup", "*.jsonl.gz"), ("tokens", "*.bin")):
        expected = sorted(p.name for p in (ref / stage).glob(pattern))
        assert expected and sorted(p.name for p in (work / stage).glob(pattern)) == expected, logs(work)
        for name in expected:
            assert (work / stage / name).read_bytes() == (ref / stage / name).read_bytes(), f"{stage}/{name}"


def test_four_tasks_on_two_cpus_equal_one_machine(pipelines):
    assert_same_outputs(pipelines["four"], pipelines["ref"])
    # dedup did its job on the planted copies (the exact count depends on what clean.py keeps)
    totals = [json.loads(p.read_text())["totals"] for p in (pipelines["four"] / "dedup").glob("report_*.json")]
    assert len(totals) == 4
    assert sum(t.get("removed_exact_duplicates", 0) for t in totals) >= 6
    assert sum(t.get("removed_near_duplicates", 0) for t in totals) >= 6
    report = json.loads((pipelines["four"] / "tokens" / "report.json").read_text())
    assert report == {**json.loads((pipelines["ref"] / "tokens" / "report.json").read_text()),
                      **{k: report[k] for k in ("seconds", "tokens_per_second", "input", "output")}}


def test_one_task_equals_one_machine(pipelines):
    assert_same_outputs(pipelines["one"], pipelines["ref"])


def test_task_killed_mid_run_is_rerun_alone_and_the_chain_waits(pipelines):
    assert pipelines["killed_midway"], "the buckets task finished before it was killed"
    assert pipelines["waited"]  # the clusters job stayed pending, then ran after the rerun
    jobs = (pipelines["four"] / "logs" / "jobs.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in jobs] == ["clean", "dedup-signatures", "dedup-buckets", "dedup-clusters",
                                                      "dedup-write", "prepare"]
    assert_same_outputs(pipelines["four"], pipelines["ref"])  # the rerun's output is the same


def test_pipeline_trains_the_tokenizer_prepare_then_uses(tmp_path):
    """With --tokenizer, a tokenizer job runs between dedup's write and prepare, and prepare reads
    its folder: the README's recipe trains one, but the chain had no stage for it, so a prepare flag
    --tokenizer=DIR/tokenizer named a folder nothing would write. A stand-in sbatch records each
    submission (no cluster needed)."""
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$*" >> "$SBATCH_LOG"\nwc -l < "$SBATCH_LOG"\n')
    fake.chmod(0o755)
    env = dict(environment(), PATH=f"{fake.parent}:{os.environ['PATH']}", SBATCH_LOG=str(tmp_path / "log"))
    for flags, names in ((["--tokenizer=--vocab_size=300"], ["write", "tokenizer", "prepare"]),
                         ([], ["write", "prepare"])):
        (tmp_path / "log").unlink(missing_ok=True)
        work = tmp_path / f"work{len(flags)}"
        result = subprocess.run(["bash", str(ROOT / "slurm" / "pipeline.sh"), f"--input={tmp_path}", f"--work={work}",
                                 "--tasks=2", "--prepare_cpus=8", *flags, "--prepare=--shard_size=1e6"],
                                capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        jobs = [line.split("\t") for line in (work / "logs" / "jobs.tsv").read_text().splitlines()]
        assert [j[0] for j in jobs][4:] == ["dedup-" + names[0], *names[1:]]
        calls = (tmp_path / "log").read_text().splitlines()
        ids = dict(zip([j[0] for j in jobs], [j[1] for j in jobs]))
        prepare = calls[-1]
        assert f"--dependency=afterok:{ids['dedup-write' if not flags else 'tokenizer']}" in prepare
        assert prepare.endswith("--shard_size=1e6") and "--cpus-per-task=8" in prepare
        assert (f"--tokenizer={work}/tokenizer" in prepare) == bool(flags)
        if flags:
            assert calls[-2].endswith(f"slurm/tokenizer.sbatch --input={work}/dedup --output={work}/tokenizer "
                                      "--vocab_size=300") and f"afterok:{ids['dedup-write']}" in calls[-2]
            assert "--cpus-per-task=8" in calls[-2]
        assert result.stdout.split() == [j[1] for j in jobs if j[0] != "tokenizer"] + [ids.get("tokenizer")] * bool(flags)


# -----------------------------------------------------------------------------------------------
# training


def read_log(out):
    return [json.loads(line) for line in open(out / "log.jsonl")]


def losses(log, key):
    return [(h["step"], h[key]) for h in log if key in h]


def submit_training(out, *flags):
    env = dict(environment(), NPROC_PER_NODE="2", RDZV_PORT=str(free_port()))
    # one CPU each, so both runs fit on the 2-CPU node at once (nothing pins processes to CPUs here)
    result = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=1", f"--chdir={ROOT}",
                             f"--output={out}.out", str(ROOT / "slurm" / "train.sbatch"), *flags,
                             f"--out_dir={out}"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


@pytest.fixture(scope="module")
def trained(pipelines, tmp_path_factory):
    """The tokens of the pipeline, trained by train.sbatch with 2 processes twice, one run requeued
    mid-run, and by one plain process, all three at once."""
    tmp = tmp_path_factory.mktemp("train")
    data = [f"--data={pipelines['ref'] / 'tokens'}", *TRAIN]
    whole, requeued = submit_training(tmp / "whole", *data), submit_training(tmp / "requeued", *data)
    one = subprocess.Popen([sys.executable, "train.py", *data, f"--out_dir={tmp / 'one'}"], cwd=ROOT,
                           env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp / "requeued" / "log.jsonl"
    wait_for(lambda: log.exists() and any(h.get("step", 0) >= 3 for h in map(json.loads, open(log))),
             "the requeued run to train a few steps", every=0.05)
    subprocess.run(["scontrol", "requeue", requeued], check=True)
    wait_for(lambda: job_states(requeued).get(requeued, ("",))[0] == "PENDING", "the job to be requeued")
    # Slurm holds a requeued job back for a while (BeginTime); a preempted job would just wait
    subprocess.run(["scontrol", "update", f"JobId={requeued}", "StartTime=now"], check=True)
    wait_for(lambda: finished([whole, requeued]), "the training jobs to finish", every=0.5)
    output = one.communicate(timeout=300)[0]
    assert one.returncode == 0, output
    return dict(one=tmp / "one", whole=tmp / "whole", requeued=tmp / "requeued")


def test_train_sbatch_two_processes_match_one(trained):
    reference, log = read_log(trained["one"]), read_log(trained["whole"])
    assert "2 x cpu" in (trained["whole"].parent / "whole.out").read_text()
    for key in ("loss", "val_loss"):
        assert [s for s, _ in losses(log, key)] == [s for s, _ in losses(reference, key)]
        np.testing.assert_allclose([v for _, v in losses(log, key)], [v for _, v in losses(reference, key)], rtol=1e-5)


def test_requeued_mid_run_resumes_bit_identical(trained):
    output = (trained["requeued"].parent / "requeued.out").read_text()
    assert "stopped by a signal: saved" in output and "restart 1: resuming" in output, output[-3000:]
    whole, requeued = read_log(trained["whole"]), read_log(trained["requeued"])
    assert [(h["step"], h.get("loss"), h.get("val_loss")) for h in requeued] == \
           [(h["step"], h.get("loss"), h.get("val_loss")) for h in whole]
    a = torch.load(trained["whole"] / "ckpt.pt", weights_only=True)
    b = torch.load(trained["requeued"] / "ckpt.pt", weights_only=True)
    assert a["iter_num"] == b["iter_num"] == 16
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
