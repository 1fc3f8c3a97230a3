"""Data mixtures and stages (loader.py's mixture sampler, train.py's --data=A:w,B:w and `stages`):
the realized proportions equal the weights, a resume across a stage boundary is bit-identical to an
uninterrupted run, a source that runs out wraps around and says so, and bad mixtures are refused
before any training. (DDP and FSDP with a mixture: test_train.py's distributed test.)"""

import json
import signal

import numpy as np
import pytest
import torch

import loader
import train
from common import write_shard
from test_train import VOCAB, data, losses, markov_tokens, one_thread, run, second  # noqa: F401 (fixtures)


def test_realized_proportions_equal_the_weights():
    weights, per_step, steps = np.array([0.85, 0.12, 0.03]), 16, 3000
    counts = np.array([np.bincount(loader.mixture_sources(5, step, weights, per_step), minlength=3)
                       for step in range(steps)])
    assert (counts.sum(axis=1) == per_step).all()
    # every step gets each source's share to within one sequence (13.6 -> 13 or 14, 0.48 -> 0 or 1) ...
    assert (np.abs(counts - per_step * weights) < 1).all()
    # ... and over many steps the proportions equal the weights within sampling error (3 sigma of
    # independent draws, an upper bound for this stratified sampler)
    n = steps * per_step
    assert (np.abs(counts.sum(axis=0) / n - weights) < 3 * np.sqrt(weights * (1 - weights) / n)).all()
    assert np.array_equal(loader.mixture_sources(5, 7, weights, 16), loader.mixture_sources(5, 7, weights, 16))
    assert not np.array_equal(loader.mixture_sources(5, 7, weights, 16), loader.mixture_sources(5, 8, weights, 16))


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    """A source of only 4 windows of 32 tokens: it runs out within a step or two."""
    folder = tmp_path_factory.mktemp('small')
    write_shard(folder / 'val_000000.bin', markov_tokens(100, 20))
    write_shard(folder / 'train_000001.bin', markov_tokens(150, 21))
    (folder / 'report.json').write_text(json.dumps({'tokenizer': 'gpt2', 'vocab_size': VOCAB}))
    return folder


def test_stages_resume_across_the_boundary_bit_identical(data, second, small, tmp_path, monkeypatch, capsys):
    # stage 1: source a alone for 4 steps of 256 tokens; stage 2: a mixture with the small source; the
    # wsd decay runs over stage 2. Cut at step 2 (checkpoint at 3), resume across the boundary at 4.
    preset = tmp_path / 'stages.py'
    preset.write_text(f"sources = {{'a': {str(data)!r}, 'b': {str(second)!r}, 'c': {str(small)!r}}}\n"
                      f"stages = [(4 * 256, 'a'), (None, 'a:0.5,b:0.25,c:0.25')]\n")
    flags = [str(preset), '--max_iters=7', '--schedule=wsd']
    whole = run(None, tmp_path / 'whole', *flags)
    assert 'source c: epoch 1 read to its end at step 5; wrapping around to epoch 2' in capsys.readouterr().out
    get_lr = train.get_lr

    def interrupt_at_step_2(step, config, *rest):
        if step == 2:
            signal.raise_signal(signal.SIGTERM)
        return get_lr(step, config, *rest)
    monkeypatch.setattr(train, 'get_lr', interrupt_at_step_2)
    run(None, tmp_path / 'cut', *flags)
    monkeypatch.setattr(train, 'get_lr', get_lr)
    assert torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)['iter_num'] == 3
    resumed = run(None, tmp_path / 'cut', *flags, '--init_from=resume')
    assert losses(resumed) == losses(whole) and losses(resumed, 'val_loss') == losses(whole, 'val_loss')
    a = torch.load(tmp_path / 'whole' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert a['data_state'] == b['data_state']
    # tokens per source: a alone in stage 1, then a, b, c at 4, 2, 2 sequences of 32 per step
    steps = {h['step']: h for h in whole if 'loss' in h}
    assert steps[4]['source_tokens'] == {'a': 4 * 256, 'b': 0, 'c': 0}
    assert steps[7]['source_tokens'] == {'a': 4 * 256 + 3 * 128, 'b': 3 * 64, 'c': 3 * 64}
    evals = [h for h in whole if 'val_loss' in h]
    assert set(evals[-1]['val_loss_by_source']) == {'a', 'b', 'c'} and evals[-1]['val_bpb_by_source']['c'] > 0
    # warmup 2, constant, then the decay over the final stage from step 4 to min_lr at step 7
    lr = {h['step'] - 1: h['lr'] for h in whole if 'lr' in h}
    assert lr[2] == lr[3] == 3e-3 and lr[4] == pytest.approx(3e-3) and lr[6] == pytest.approx(3e-3 - 2 / 3 * 2.7e-3)


def test_bad_mixtures_are_refused_before_training(data, second, tmp_path):
    cases = [(f'{data}:0,{second}:0', 'sum to 0.0, expected a positive number'),
             (f'{data}:-1,{second}:2', 'weight -1.0, expected a number >= 0'),
             (f'{data}:0.5,web:0.5', "unknown source 'web'"),
             (f'{data}:0.5,{tmp_path}:0.5', 'needs val_\\*.bin and train_\\*.bin shards'),
             # each trained silently on another mixture: the last of two weights (0.2 of 0.7), the
             # folder twice as often (two spellings of it), or the weight typo read as a folder name
             (f'{data}:0.5,{second}:0.3,{data}:0.2', f"source '{data}' appears twice in the mixture"),
             (f'{data}:0.5,{data}/:0.5', f"'{data}' and '{data}/' in the mixture are the same folder"),
             (f'{data}:0.8.5,{second}:0.2', f"source '{data}': weight '0.8.5', expected a number >= 0")]
    for mixture, message in cases:
        with pytest.raises(SystemExit, match=message):
            run(mixture, tmp_path / 'out')
    # a one-source mixture of an unknown name said 'data folder nope does not exist' even where the
    # config names its sources
    with pytest.raises(ValueError, match=r"^unknown source 'nope' in the mixture: not a folder, and the config's "
                                         r"sources define 'web'$"):
        loader.parse_mixture('nope:1', {'web': str(data)})
    assert loader.parse_mixture('web:1', {'web': str(data)}) == {'web': (str(data), 1.0)}
    # spaces around a colon were part of the folder's name ('no such folder')
    assert loader.parse_mixture(f' {data} : 3 , {second}:1', {}) == loader.parse_mixture(f'{data}:3,{second}:1', {})
    preset = tmp_path / 'empty_stage.py'  # the message named neither the stage nor what it held ('got {}')
    preset.write_text(f"stages = [(2048, {str(data)!r}), (None, '')]\n")
    with pytest.raises(SystemExit, match="stage 2: a mixture is 'FOLDER' or .*, got ''$"):
        run(None, tmp_path / 'out', str(preset))
    preset = tmp_path / 'stages.py'
    preset.write_text(f"stages = [(2048, {str(data)!r}), (1024, {str(second)!r})]\n")
    with pytest.raises(SystemExit, match='stage 2: until_tokens=1024 must be a number above'):
        run(None, tmp_path / 'out', str(preset))
    with pytest.raises(SystemExit, match='both --data and stages are set'):
        run(data, tmp_path / 'out', str(preset))
    assert not (tmp_path / 'out').exists()


def test_a_last_train_shard_too_short_for_a_window_adds_none(tmp_path):
    """prepare.py's last train shard ends with the corpus, so it may hold a few tokens: the folder
    is still usable (the shard gives no window); only a train split without a window is refused."""
    write_shard(tmp_path / 'val_000000.bin', markov_tokens(300, 1))
    write_shard(tmp_path / 'train_000001.bin', markov_tokens(200, 2))
    write_shard(tmp_path / 'train_000002.bin', markov_tokens(5, 3))
    source = loader.open_source(str(tmp_path), 32)
    assert source['windows'] == (6, 0)
    mixture = dict(sources=[source])
    rows = [loader.read_windows(mixture, [0], [g], 32, 1) for g in range(12)]  # two epochs
    assert all(r.shape == (1, 33) for r in rows) and len({r.tobytes() for r in rows}) == 6
    with pytest.raises(ValueError, match='train_000001.bin: 200 tokens, fewer than block_size'):
        loader.open_source(str(tmp_path), 200)


def test_machines_that_used_different_tokenizers_are_refused(tmp_path):
    """prepare.py's machine 1 rerun with a retrained tokenizer: two vocabularies in one folder."""
    for machine, tokenizer in enumerate(['gpt2', 'p50k_base']):
        names = [f'val_m{machine:04d}_000000.bin', f'train_m{machine:04d}_000001.bin']
        for name in names:
            write_shard(tmp_path / name, markov_tokens(100, machine))
        report = dict(stage='prepare', complete=True, tokenizer=tokenizer, vocab_size=VOCAB,
                      shards=[dict(name=n, tokens=100) for n in names])
        (tmp_path / f'report_{machine:05d}_of_00002.json').write_text(json.dumps(report))
    with pytest.raises(ValueError, match='report_00001_of_00002.json and .* different tokenizers'):
        loader.open_source(str(tmp_path), 32)
