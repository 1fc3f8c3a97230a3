"""train.py on CPU with a tiny model and tiny synthetic shards: accumulation, exact resume, crash
safety while saving, continued pretraining, bad input, NaN handling, and one process vs torchrun
DDP / FSDP (gloo) on the same global batch."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import loader
import train
from common import write_shard

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS='1')
VOCAB = 256
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', f'--vocab_size={VOCAB}',
        '--batch_size=4', '--batch_tokens=256', '--compile=false', '--device=cpu', '--dtype=float32',
        '--eval_iters=3', '--eval_interval=100', '--warmup_iters=2', '--learning_rate=3e-3',
        '--lr_decay_iters=8', '--min_lr=3e-4', '--max_iters=4']


def markov_tokens(n, seed):
    """A learnable stream: mostly next = 3 * prev + 1 (mod VOCAB), sometimes a random token."""
    rng = np.random.default_rng(seed)
    tokens = np.empty(n, dtype=np.int64)
    tokens[0] = 0
    noise = rng.random(n) < 0.1
    random_tokens = rng.integers(0, VOCAB, n)
    for i in range(1, n):
        tokens[i] = random_tokens[i] if noise[i] else (3 * tokens[i - 1] + 1) % VOCAB
    return tokens


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    # a tiny model gains nothing from more threads, and on a busy machine threads waiting on each other
    # make every matmul slow; the subprocesses get the same through OMP_NUM_THREADS
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tokens')
    write_shard(folder / 'val_000000.bin', markov_tokens(3000, 0))
    write_shard(folder / 'train_000001.bin', markov_tokens(5000, 1))
    write_shard(folder / 'train_000002.bin', markov_tokens(3500, 2))  # shards of unequal size
    (folder / 'report.json').write_text(json.dumps({'tokenizer': 'gpt2', 'vocab_size': VOCAB}))
    return folder


def run(data, out, *flags):  # data None: the default, or what a config file's stages say
    train.main(TINY + ([] if data is None else [f'--data={data}']) + [f'--out_dir={out}', *flags])
    return read_log(out)


def read_log(out):
    return [json.loads(line) for line in open(Path(out) / 'log.jsonl')]


def losses(log, key='loss'):
    return [(h['step'], h[key]) for h in log if key in h]


def params(path):
    return torch.load(path, weights_only=True)['model']


def test_config_files_and_flags(tmp_path):
    preset = tmp_path / 'preset.py'
    preset.write_text("n_layer = 3\nlearning_rate = 1  # an int is fine for a float\nimport math\n")
    config = train.get_config([str(preset), '--n_embd', '64', '--compile=false'])
    assert (config['n_layer'], config['learning_rate'], config['n_embd'], config['compile']) == (3, 1.0, 64, False)
    (tmp_path / 'typo.py').write_text("n_layers = 3\n")
    with pytest.raises(SystemExit, match="unknown setting 'n_layers'"):
        train.get_config([str(tmp_path / 'typo.py')])
    (tmp_path / 'wrong.py').write_text("max_iters = '10'\n")
    with pytest.raises(SystemExit, match="max_iters = '10' is a str, expected int"):
        train.get_config([str(tmp_path / 'wrong.py')])
    with pytest.raises(SystemExit):
        train.get_config(['--max_iters=ten'])
    with pytest.raises(SystemExit):
        train.get_config(['--no_such_knob=1'])
    gpt2 = train.get_config([str(ROOT / 'config' / 'gpt2_124m.py')])  # the presets parse, and add up
    assert gpt2['batch_tokens'] == 8 * gpt2['batch_size'] * gpt2['block_size'] == 524288
    tiny = train.get_config([str(ROOT / 'config' / 'tiny_cpu.py')])
    assert tiny['batch_tokens'] % (tiny['batch_size'] * tiny['block_size']) == 0 and not tiny['compile']


def test_lr_schedules():
    config = train.get_config(['--learning_rate=1.0', '--min_lr=0.1', '--warmup_iters=10',
                               '--lr_decay_iters=110', '--max_iters=110'])
    lr = [train.get_lr(s, config) for s in range(111)]
    assert lr[0] == pytest.approx(1 / 11) and lr[10] == pytest.approx(1.0) and lr[110] == pytest.approx(0.1)
    assert lr[60] == pytest.approx(0.55) and all(a >= b for a, b in zip(lr[10:], lr[11:]))
    config['schedule'], config['decay_frac'] = 'wsd', 0.2
    wsd = [train.get_lr(s, config) for s in range(111)]
    assert wsd[50] == wsd[88] == 1.0 and wsd[110] == pytest.approx(0.1) and wsd[99] == pytest.approx(0.55)


def test_data_order_depends_only_on_seed_and_position(data):
    source = loader.open_source(str(data), 32)
    one = dict(sources=[source], stages=[(0, np.array([1.0]))])

    def windows(first, count, seed):
        return loader.read_windows(one, np.zeros(count, dtype=np.int64), np.arange(first, first + count), 32, seed)
    whole = windows(10, 8, 7)
    assert np.array_equal(whole, np.concatenate([windows(10, 4, 7), windows(14, 4, 7)]))
    epoch = windows(0, 265, 7)  # 156 + 109 windows
    assert len({tuple(row) for row in epoch}) == 265  # each window once per epoch
    assert not np.array_equal(whole, windows(10, 8, 8))  # another seed
    # a step's plan: one source reads its order straight on, so step s holds sequences s*8 .. s*8+7
    sources, index, after = loader.plan_step(one, 7, 3, 8, [24])
    assert index.tolist() == list(range(24, 32)) and after.tolist() == [32]


def test_accumulation_equals_one_big_batch(data, tmp_path):
    big = run(data, tmp_path / 'big', '--batch_size=8')  # one pass of 8 sequences per step
    small = run(data, tmp_path / 'small', '--batch_size=2')  # four accumulated passes of 2
    assert [s for s, _ in losses(big)] == [1, 2, 3, 4]
    np.testing.assert_allclose([l for _, l in losses(small)], [l for _, l in losses(big)], rtol=1e-5)
    a, b = params(tmp_path / 'big' / 'ckpt.pt'), params(tmp_path / 'small' / 'ckpt.pt')
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_interrupt_and_resume_is_bit_identical(data, tmp_path, monkeypatch):
    flags = ['--max_iters=6', '--eval_interval=4']
    whole = run(data, tmp_path / 'whole', *flags)
    get_lr = train.get_lr

    def interrupt_at_step_2(step, config, *rest):  # a real SIGTERM in the middle of step 2, delivered twice
        if step == 2:                             # (as torchrun passes it on to its workers)
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
        return get_lr(step, config, *rest)
    monkeypatch.setattr(train, 'get_lr', interrupt_at_step_2)
    run(data, tmp_path / 'cut', *flags)
    saved = torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)
    assert saved['iter_num'] == 3  # step 2 finished, then saved and stopped
    monkeypatch.setattr(train, 'get_lr', get_lr)
    resumed = run(data, tmp_path / 'cut', *flags, '--init_from=resume')
    assert losses(resumed) == losses(whole) and losses(resumed, 'val_loss') == losses(whole, 'val_loss')
    a = torch.load(tmp_path / 'whole' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)
    for name in a['model']:
        assert torch.equal(a['model'][name], b['model'][name]), name
    for name, state in a['optimizer']['state'].items():
        for key in state:
            assert torch.equal(state[key], b['optimizer']['state'][name][key]), (name, key)
    assert a['data_state'] == b['data_state'] and a['iter_num'] == b['iter_num'] == 6
    assert (tmp_path / 'cut' / 'loss.png').exists() or not pytest.importorskip('matplotlib')


def test_killed_while_saving_leaves_previous_checkpoint(data, tmp_path):
    # the second save writes a few bytes and then the process is SIGKILLed, mid-write
    script = f"""
import os, signal, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import loader
import train
saves = []
real_save = torch.save
def dying_save(obj, f, *args, **kwargs):
    saves.append(1)
    if len(saves) == 2:
        with open(f, 'wb') as half:  # train.py saves to a temporary path
            half.write(b'half a checkpoint'); half.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = dying_save
train.main({TINY!r} + ['--data={data}', '--out_dir={tmp_path}', '--eval_interval=2'])
"""
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    saved = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert saved['iter_num'] == 2
    assert len(list(tmp_path.glob('.ckpt.pt.tmp*'))) == 1  # the half-written temp of the killed save
    resumed = run(data, tmp_path, '--init_from=resume')
    assert not list(tmp_path.glob('.ckpt.pt.tmp*'))  # a rerun removes it
    assert [s for s, _ in losses(resumed)] == [1, 2, 3, 4]  # the log was cut back to the checkpoint


class Killed(BaseException):
    """Raised where a kill would stop a run: nothing in train.py catches it, so the files are left as
    a SIGKILL there leaves them (in a second, where a killed subprocess costs five)."""


def killed_run(data, out, monkeypatch, obj, name, kill, *flags):
    """run() with obj.name wrapped: kill(*args) true stops the run there, as a kill would."""
    real = getattr(obj, name)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def dying(*args):
        result = real(*args)
        if kill(*args):
            raise Killed
        return result
    monkeypatch.setattr(obj, name, dying)
    try:
        with pytest.raises(Killed):
            run(data, out, *flags)
    finally:
        monkeypatch.setattr(obj, name, real)
        for s, handler in handlers.items():  # the run's own were left in place
            signal.signal(s, handler)


def test_the_log_always_belongs_to_the_checkpoint_beside_it(data, tmp_path, monkeypatch):
    # a new run into an out_dir that holds an older run's ckpt.pt emptied log.jsonl at once: killed
    # before its first save, it left the old checkpoint with the new run's lines (or none), and a
    # resume continued that log
    old = run(data, tmp_path, '--max_iters=3', '--eval_interval=2')
    old_plot = (tmp_path / 'loss.png').read_bytes() if (tmp_path / 'loss.png').exists() else None
    killed_run(data, tmp_path, monkeypatch, train, 'get_lr', lambda step, *_: step == 2,
               '--learning_rate=1e-3')
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['iter_num'] == 3  # the old run's
    assert read_log(tmp_path) == old  # what a resume from that ckpt.pt continues
    # and the plot is the old run's too (the killed run drew its step-0 eval under a pending name),
    # and no glob of logs takes the killed run's pending log for a finished one
    if old_plot is not None:
        assert (tmp_path / 'loss.png').read_bytes() == old_plot
        assert len(list(tmp_path.glob('loss.pending-*.png'))) == 1
    assert [p.name for p in tmp_path.glob('*.jsonl')] == ['log.jsonl']
    # killed between its first save (ckpt.pt renamed into place) and anything after it: the resume
    # takes that run's log
    killed_run(data, tmp_path, monkeypatch, os, 'replace',
               lambda _, target: os.path.basename(target) == 'ckpt.pt',
               '--max_iters=2', '--eval_interval=2', '--learning_rate=1e-3')
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['iter_num'] == 2
    again = run(data, tmp_path, '--max_iters=3', '--eval_interval=2', '--init_from=resume',
                '--learning_rate=1e-3')
    assert [s for s, _ in losses(again)] == [1, 2, 3] and again[-1]['step'] == 3
    assert losses(again)[:2] != losses(old)[:2]  # the lines of the run that saved, at 1e-3
    assert sorted(p.name for p in tmp_path.glob('log*')) == ['log.jsonl']


def test_a_pending_run_settles_only_its_own_files(tmp_path):
    # the pending log was log.RUN_ID.jsonl, which every log glob took for a finished log, and the
    # first save removed every log.*.jsonl, a user's log.old.jsonl too; the plot was redrawn at
    # once from the new run's records, so loss.png did not match log.jsonl until that save
    from types import SimpleNamespace

    import run_files
    for name, text in (('ckpt.pt', 'old'), ('log.jsonl', '{"step": 9}\n'), ('loss.png', 'old plot'),
                       ('log.old.jsonl', 'mine'), ('log.0badc0de.jsonl', 'killed, older train.py'),
                       ('log.jsonl.pending-0badbeef', 'killed'), ('loss.pending-0badbeef.png', 'killed')):
        (tmp_path / name).write_text(text)
    paths = SimpleNamespace(ckpt=str(tmp_path / 'ckpt.pt'), log=str(tmp_path / 'log.jsonl'),
                            plot=str(tmp_path / 'loss.png'))
    run = SimpleNamespace(master=True, log=lambda message: None)
    _, write_log = run_files.open_log(dict(out_dir=str(tmp_path), init_from='scratch'), 0, paths, run, '12345678')
    write_log({'step': 0, 'val_loss': 5.0})
    Path(paths.plot).write_text('new plot')  # what run_files.plot draws, at paths.plot
    assert sorted(p.name for p in tmp_path.glob('*.jsonl')) == ['log.0badc0de.jsonl', 'log.jsonl', 'log.old.jsonl']
    assert (tmp_path / 'log.jsonl').read_text() == '{"step": 9}\n' and (tmp_path / 'loss.png').read_text() == 'old plot'
    run_files.settle_log(paths, '12345678')  # its first save
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pt', 'log.jsonl', 'log.old.jsonl', 'loss.png']
    assert read_log(tmp_path) == [{'step': 0, 'val_loss': 5.0}] and (tmp_path / 'loss.png').read_text() == 'new plot'
    assert (paths.log, paths.plot) == (str(tmp_path / 'log.jsonl'), str(tmp_path / 'loss.png'))


def test_continued_pretraining_starts_from_the_weights(data, tmp_path):
    first = run(data, tmp_path / 'first', '--max_iters=6')
    # new run, new optimizer and schedule; the architecture comes from the checkpoint, not the flags
    second = run(data, tmp_path / 'second', f'--init_from={tmp_path / "first" / "ckpt.pt"}', '--n_layer=5',
                 '--block_size=16', '--max_iters=3', '--warmup_iters=0')
    assert second[0]['step'] == 0
    assert second[0]['val_loss'] == pytest.approx(losses(first, 'val_loss')[-1][1], rel=1e-6)
    assert losses(second)[0][0] == 1 and losses(second, 'val_loss')[-1][1] < losses(first, 'val_loss')[0][1]
    saved = torch.load(tmp_path / 'second' / 'ckpt.pt', weights_only=True)
    assert saved['model_args']['n_layer'] == 2 and saved['model_args']['block_size'] == 32  # the same windows
    # resumed with the same flags, it keeps the checkpoint's architecture (not the flags' n_layer=5)
    again = run(data, tmp_path / 'second', '--init_from=resume', '--n_layer=5', '--max_iters=4', '--warmup_iters=0')
    assert losses(again)[-1][0] == 4


def test_bad_input_is_refused_before_training(data, tmp_path):
    with pytest.raises(SystemExit, match='does not exist: run prepare.py first'):
        run(tmp_path / 'nowhere', tmp_path / 'out')
    with pytest.raises(SystemExit, match='train_000001.bin is a file: give the folder'):
        run(data / 'train_000001.bin', tmp_path / 'out')
    broken = tmp_path / 'broken'
    broken.mkdir()
    for name in ('val_000000.bin', 'train_000001.bin', 'report.json'):
        (broken / name).write_bytes((data / name).read_bytes())
    (broken / 'train_000001.bin').write_bytes((data / 'train_000001.bin').read_bytes()[:-100])
    with pytest.raises(SystemExit, match='train_000001.bin.*truncated or corrupt'):
        run(broken, tmp_path / 'out')
    with pytest.raises(SystemExit, match='vocabulary of 256 tokens, more than the model'):
        run(data, tmp_path / 'out', '--vocab_size=128')
    with pytest.raises(SystemExit, match=r'nothing to resume in .*out \(no ckpt.pt\)'):
        run(data, tmp_path / 'out', '--init_from=resume')
    run(data, tmp_path / 'out', '--max_iters=1')
    with pytest.raises(SystemExit, match=r'other settings: n_layer=2 \(now 3\)'):
        run(data, tmp_path / 'out', '--init_from=resume', '--n_layer=3')
    weights_only = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    del weights_only['config']  # as another script saves weights: a KeyError, before
    torch.save(weights_only, tmp_path / 'out' / 'ckpt.pt')
    with pytest.raises(SystemExit, match='not a train.py run to resume'):
        run(data, tmp_path / 'out', '--init_from=resume')
    assert not (tmp_path / 'nowhere').exists()


def test_nonfinite_loss_stops_and_never_saves_poison(data, tmp_path, monkeypatch):
    forward = train.GPT.forward
    calls = []

    def poisoned(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        calls.extend([1] if self.training else [])
        return logits, (loss * float('nan') if len(calls) > 4 else loss)  # from the third step on
    monkeypatch.setattr(train.GPT, 'forward', poisoned)
    with pytest.raises(SystemExit, match='step 2: loss nan.*the last checkpoint .* is intact'):
        run(data, tmp_path / 'stop', '--eval_interval=1', '--eval_iters=1')
    saved = torch.load(tmp_path / 'stop' / 'ckpt.pt', weights_only=True)
    assert saved['iter_num'] == 2 and all(t.isfinite().all() for t in saved['model'].values())
    calls.clear()
    log = run(data, tmp_path / 'skip', '--eval_interval=1', '--eval_iters=1', '--skip_nonfinite=true')
    assert losses(log)[-1][0] == 4
    saved = torch.load(tmp_path / 'skip' / 'ckpt.pt', weights_only=True)
    assert all(t.isfinite().all() for t in saved['model'].values())


@pytest.fixture(scope='module')
def second(tmp_path_factory):
    """A second source for mixtures: the same kind of stream, other tokens."""
    folder = tmp_path_factory.mktemp('second')
    write_shard(folder / 'val_000000.bin', markov_tokens(2000, 10))
    write_shard(folder / 'train_000001.bin', markov_tokens(4000, 11))
    (folder / 'report.json').write_text(json.dumps({'tokenizer': 'gpt2', 'vocab_size': VOCAB}))
    return folder


DISTRIBUTED = """
import json, sys
sys.path.insert(0, {root!r})
import torch.distributed as dist
import train
dist.init_process_group('gloo')  # one group for all the runs of this launch (torchrun starts are slow)
for flags in json.loads(sys.argv[1]):
    train.main(flags)
"""


def test_ddp_and_fsdp_match_one_process(data, second, tmp_path):
    # the same global batch of 8 sequences per step: 4 passes of 2 in one process, or 2 ranks x 1 pass of
    # 4 (--batch_size=8 is lowered to share the step), on a mixture of two sources; full training, then
    # LoRA from the full run's checkpoint
    mixture, base = f'{data}:0.7,{second}:0.3', tmp_path / 'one' / 'full' / 'ckpt.pt'
    lora_flags = [f'--init_from={base}', '--lora_rank=4', '--lora_embedding_lr=1e-3']
    reference = {'full': run(mixture, tmp_path / 'one' / 'full', '--batch_size=2', '--max_iters=3'),
                 'lora': run(mixture, tmp_path / 'one' / 'lora', '--batch_size=2', '--max_iters=3', *lora_flags)}
    script = tmp_path / 'runs.py'
    script.write_text(DISTRIBUTED.format(root=str(ROOT)))
    jobs = {}
    for parallel in ('ddp', 'fsdp'):
        flags = TINY + [f'--data={mixture}', f'--parallel={parallel}', '--batch_size=8', '--max_iters=3']
        runs = [flags + [f'--out_dir={tmp_path / parallel / "full"}'],
                flags + [f'--out_dir={tmp_path / parallel / "lora"}', *lora_flags]]
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                   str(script), json.dumps(runs)]
        jobs[parallel] = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
    for parallel, job in jobs.items():
        output = job.communicate(timeout=300)[0]
        assert job.returncode == 0, output
        assert 'instead of --batch_size=8, so that 2 process(es) share the 8 sequences' in output
        for kind in ('full', 'lora'):
            log = read_log(tmp_path / parallel / kind)
            for key in ('loss', 'val_loss'):
                assert [s for s, _ in losses(log, key)] == [s for s, _ in losses(reference[kind], key)]
                np.testing.assert_allclose([l for _, l in losses(log, key)], [l for _, l in losses(reference[kind], key)],
                                           rtol=1e-5, err_msg=f'{parallel} {kind} {key}')
            a = torch.load(tmp_path / 'one' / kind / 'ckpt.pt', weights_only=True)
            b = torch.load(tmp_path / parallel / kind / 'ckpt.pt', weights_only=True)
            assert a['model'].keys() == b['model'].keys()  # plain names: no 'module.' or '_orig_mod.' prefixes
            tensors = [(a['model'], b['model'])] + ([(a['lora']['adapters'], b['lora']['adapters'])] if kind == 'lora' else [])
            for x, y in tensors:
                assert x.keys() == y.keys()
                for name in x:  # (Adam divides tiny gradients by their own size: rounding shows)
                    torch.testing.assert_close(x[name], y[name], rtol=1e-4, atol=5e-5, msg=lambda m: f'{parallel} {kind} {name}: {m}')


def test_help_typos_and_bad_settings(capsys):
    with pytest.raises(SystemExit):
        train.get_config(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for key, default, help_text in train.SETTINGS:  # every flag says what it does, its default and choices
        assert f'--{key} ' in text and f"{' '.join(help_text.split())} (default: {default!r}" in text, key
    assert "(default: 'layernorm'; one of layernorm, rmsnorm)" in text
    assert 'model.py GPTConfig setting' not in text  # --tie_embeddings said only that
    with pytest.raises(SystemExit, match='--embedding_lr needs --learning_rate > 0'):
        train.get_config(TINY + ['--learning_rate=0', '--embedding_lr=0.1'])  # ZeroDivisionError
    with pytest.raises(SystemExit, match='--lora_embedding_lr needs --learning_rate > 0'):
        train.get_config(TINY + ['--learning_rate=0', '--lora_embedding_lr=0.1'])
    with pytest.raises(SystemExit, match="unknown setting 'n_layers'; did you mean 'n_layer'"):
        train.get_config(['--n_layers=3'])
    with pytest.raises(SystemExit, match='^train.py: error: --norm=batchnorm: expected one of layernorm, rmsnorm$'):
        train.get_config(['--norm=batchnorm'])


@pytest.mark.parametrize('flag', ['--eval_interval=0', '--log_interval=0', '--batch_size=0',
                                  '--eval_iters=0', '--batch_tokens=0', '--block_size=0',
                                  '--grad_clip=-1.0', '--learning_rate=nan', '--max_iters=-1'])
def test_edge_values_are_refused_with_one_line(flag):
    # each crashed with a traceback (modulo by zero, an empty val set) or, grad_clip < 0, flipped
    # the gradient
    key, value = flag[2:].split('=')
    message = f'^train.py: error: --{key}={value}: expected a .*>= [01]$'
    with pytest.raises(SystemExit, match=message):
        train.get_config(TINY + [flag])


def test_a_step_is_shared_among_processes():
    from types import SimpleNamespace
    config = train.get_config(['--batch_size=16', '--block_size=128', '--batch_tokens=2048'])  # the tiny demo's

    def layout(world):
        return train.batch_layout(config, SimpleNamespace(world=world, log=lambda *a: None))
    assert layout(1) == (16, 1) and layout(2) == (8, 1) and layout(16) == (1, 1)
    with pytest.raises(SystemExit, match='cannot be shared by 3 processes: set --batch_tokens to a multiple of 384'):
        layout(3)
    gpt2 = train.get_config([str(ROOT / 'config' / 'gpt2_124m.py')])
    assert train.batch_layout(gpt2, SimpleNamespace(world=4, log=print)) == (64, 2)


def test_val_loss_and_bits_per_byte_do_not_depend_on_the_batch(tmp_path):
    # GPT-2 token ids 0..511: bytes, then merges of 2-3 bytes, so bytes and tokens differ
    import torch.nn.functional as F
    from model import GPT, GPTConfig
    from tokenizer import load_tokenizer
    folder = tmp_path / 'tokens'
    write_shard(folder / 'val_000000.bin', markov_tokens(3000, 3) * 2 + 1)
    write_shard(folder / 'train_000001.bin', markov_tokens(3000, 4) * 2)
    flags = ['--max_iters=0', '--vocab_size=512']
    at = {b: run(folder, tmp_path / str(b), *flags, f'--batch_size={b}')[0] for b in (8, 3)}
    assert at[8]['val_loss'] == pytest.approx(at[3]['val_loss'], rel=1e-6)
    assert at[8]['val_bpb'] == pytest.approx(at[3]['val_bpb'], rel=1e-6)
    config = train.get_config(TINY + flags)  # the reference: the same initial model, on the same windows
    torch.manual_seed(config['seed'])
    gpt = GPT(GPTConfig(**{**{f: config[f] for f in GPTConfig.__dataclass_fields__}, 'real_vocab_size': 512}))
    windows = torch.from_numpy(loader.val_windows(loader.open_source(str(folder), 32)['val'], 32, 24).astype(np.int64))
    assert len(windows) == 24 and len({tuple(w.tolist()) for w in windows}) == 24
    targets = windows[:, 1:].flatten()
    with torch.no_grad():
        nats = F.cross_entropy(gpt(windows[:, :-1], all_logits=True)[0].flatten(0, 1), targets, reduction='sum').item()
    enc = load_tokenizer('gpt2')
    n_bytes = sum(len(enc.decode_single_token_bytes(t)) for t in targets.tolist())
    assert n_bytes > 1.2 * len(targets)
    assert at[8]['val_loss'] == pytest.approx(nats / len(targets), rel=1e-5)
    assert at[8]['val_bpb'] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)


def test_token_folders_are_checked_before_training(data, tmp_path, capsys):
    val, tokens = markov_tokens(3000, 0), markov_tokens(5000, 1)

    def folder(name, report, shards=None, report_name='report.json'):
        path = tmp_path / name
        for shard, t in (shards or {'val_000000.bin': val, 'train_000001.bin': tokens}).items():
            write_shard(path / shard, t)
        if report is not None:
            (path / report_name).write_text(report if isinstance(report, str) else json.dumps(report))
        return path

    def listed(top=255, **report):
        return dict(tokenizer='gpt2', vocab_size=50257, complete=True, **report,
                    shards=[dict(name='val_000000.bin', tokens=3000, max_token=255),
                            dict(name='train_000001.bin', tokens=5000, max_token=top)])
    out = tmp_path / 'out'
    with_60000 = tokens.copy()
    with_60000[1234] = 60000
    cases = [  # the report's max_token is trusted (no 10B-token read at start-up): this shard has no 60000
             (folder('listed', listed(top=60000)), 'train_000001.bin: token id 60,000, but the tokenizer has 50,257'),
             # no max_token: the shards are read; 50300 is in GPT-2's padded part (50257..50303)
             (folder('scanned', {'tokenizer': 'gpt2', 'vocab_size': 50257}, {'val_000000.bin': val, 'train_000001.bin':
                     np.where(np.arange(5000) == 99, 50300, tokens)}), 'token id 50,300, but the tokenizer has 50,257'),
             (folder('no_report', None, {'val_000000.bin': val, 'train_000001.bin': with_60000}),
              "vocabulary of 60,001 tokens, more than the model's vocab_size=256"),
             (folder('corrupt', '{"complete": tru'), r'report.json: not a readable prepare.py report .*rerun prepare.py'),
             (folder('killed', {**listed(), 'complete': False}), 'prepare.py did not finish .*rerun prepare.py'),
             (folder('mixed', listed(), {'val_000000.bin': val, 'train_000001.bin': tokens, 'train_000002.bin': tokens}),
              r'not the ones report.json lists \(not listed: train_000002.bin\).*rerun prepare.py'),
             (folder('one_of_two', listed(), report_name='report_00000_of_00002.json'), '1 report files for a prepare.py run on 2')]
    for path, message in cases:
        with pytest.raises(SystemExit, match=message):
            run(path, out)
    assert not out.exists()
    run(folder('llm_c', None), out, '--max_iters=1')  # shards of another tool train, with a note
    assert 'no report.json of prepare.py: completeness not checked' in capsys.readouterr().out


def test_bad_checkpoints_and_devices(data, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    for content in (b'', os.urandom(4096)):
        (out / 'ckpt.pt').write_bytes(content)
        with pytest.raises(SystemExit, match='ckpt.pt: not a PyTorch checkpoint'):
            run(data, out, '--init_from=resume')
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='--device=cuda: CUDA is not available on this machine'):
            run(data, out, '--device=cuda')
    for typo in ('foo', 'cuda:x', 'meta'):  # a traceback from deep inside torch, after the data was read
        with pytest.raises(SystemExit, match=f'^train.py: error: --device={typo}: expected auto, cpu, cuda'):
            run(data, out, f'--device={typo}')
    with pytest.raises(SystemExit, match='--out_dir=.*ckpt.pt is a file; expected a folder'):
        run(data, out / 'ckpt.pt')  # a FileExistsError traceback, after the model was built
    # weights that do not fit the checkpoint's own model_args: a RuntimeError traceback
    run(data, tmp_path / 'base', '--max_iters=1')
    saved = torch.load(tmp_path / 'base' / 'ckpt.pt', weights_only=True)
    del saved['model']['lm_head.weight']
    torch.save(saved, tmp_path / 'cut.pt')
    with pytest.raises(SystemExit, match=r'^train.py: error: Error\(s\) in loading state_dict for GPT: '
                                         r'Missing key\(s\) in state_dict: "lm_head.weight"\.$'):
        run(data, out, f'--init_from={tmp_path / "cut.pt"}')


def test_a_diverging_run_keeps_the_last_good_checkpoint(data, tmp_path, capsys):
    run(data, tmp_path, '--max_iters=2', '--eval_interval=2')
    good = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    run(data, tmp_path, '--init_from=resume', '--max_iters=4', '--eval_interval=1', '--learning_rate=1e3',
        '--skip_nonfinite=true')
    text = capsys.readouterr().out
    assert f'not saving {tmp_path / "ckpt.pt"}: the val loss is' in text and 'it keeps the last good checkpoint' in text
    kept = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert kept['iter_num'] == 2 and all(torch.equal(kept['model'][k], v) for k, v in good['model'].items())


def test_a_run_that_saved_nothing_says_so(data, tmp_path, capsys):
    # its last line said 'out/ckpt.pt is from step None' and listed a ckpt.pt never written
    run(data, tmp_path, '--max_iters=1', '--eval_interval=1', '--learning_rate=1e3',
        '--skip_nonfinite=true')  # its one eval is worse than the start: refused
    text = capsys.readouterr().out
    assert f'not saving {tmp_path / "ckpt.pt"}: the val loss is worse than at the start' in text
    assert 'there is none yet' in text and 'keeps' not in text  # it said it keeps one
    done = text.strip().splitlines()[-1]
    assert done.startswith('done at step 1') and '; no checkpoint saved; ' in done and 'None' not in done
    assert not (tmp_path / 'ckpt.pt').exists()


def test_the_run_time_rounds_to_whole_seconds_before_splitting_minutes(data, tmp_path, capsys, monkeypatch):
    """2 min 59.7 s printed as 'done at step 880 in 2m60s' (the demo's last line, once)."""
    import types
    clock = iter([0.0])  # the start; every later look at the clock: 179.7 s
    monkeypatch.setattr(train, 'time', types.SimpleNamespace(time=lambda: next(clock, 179.7)))
    run(data, tmp_path, '--max_iters=0', '--eval_iters=1')
    assert 'done at step 0 in 3m00s: ' in capsys.readouterr().out


def test_eta_rounds_to_whole_minutes_before_splitting_hours():
    """59 min 50 s left printed as 'eta 0h60m'."""
    import types
    lines = []
    run = types.SimpleNamespace(world=1, device='cpu', log=lines.append)
    gpt = types.SimpleNamespace(estimate_mfu=lambda *a: None)
    config = dict(batch_tokens=1024, max_iters=3590, block_size=256)
    p = types.SimpleNamespace(step=0, positions=[0])
    train.log_step(gpt, dict(sources=[{}]), config, run, p, 1.0, 1e-3, 0.5, 1.0, 1.0, lambda r: None)
    assert lines[0].endswith('| eta 1h00m')


def test_decay_frac_is_checked_at_startup():
    # wsd trained silently with --decay_frac=1.5 (the rate fell from 1 to 0.64 at the warmup's end: a
    # decay that began at step -max_iters/2) or -0.5 (it never decayed)
    for value in ('1.5', '-0.5', 'nan'):
        with pytest.raises(SystemExit, match=f'^train.py: error: --decay_frac={value}: expected a number '
                                             f'from 0 to 1 '):
            train.get_config(['--schedule=wsd', f'--decay_frac={value}'])
    for fine in (['--decay_frac=0', '--max_iters=100'], ['--decay_frac=1', '--warmup_iters=0'],
                 ['--max_iters=5', '--warmup_iters=20'],  # all warmup: a smoke test
                 ['--decay_frac=0.5', '--max_iters=25', '--warmup_iters=20']):  # a short demo run
        train.get_config(['--schedule=wsd', *fine])


def test_a_resume_trains_with_its_own_optimizer_settings(data, tmp_path):
    # the checkpoint's betas and group rates came back with Adam's moments: --beta1 or --embedding_lr
    # changed on resume was noted ('now ...') and not used
    run(data, tmp_path, '--max_iters=2', '--beta1=0.5', '--embedding_lr=3e-2')
    run(data, tmp_path, '--max_iters=3', '--beta1=0.8', '--embedding_lr=3e-4', '--init_from=resume')
    groups = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['optimizer']['param_groups']
    assert {tuple(g['betas']) for g in groups} == {(0.8, 0.95)}
    assert sorted(g['lr_scale'] for g in groups) == pytest.approx([0.1, 1.0, 1.0])
