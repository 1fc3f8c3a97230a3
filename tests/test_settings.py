"""train.py's settings (configurator.py): the checks that turn a value that parses but makes no
sense into a one-line error before any time is spent, and the notes for legitimate ones that a
newcomer would not expect (a run that ends before its learning-rate decay)."""

import types

import pytest

import train
from test_train import ROOT, TINY


def test_a_config_file_with_an_error_is_one_line_naming_its_line(tmp_path):
    # a syntax error or an undefined name in a config file was a Python traceback
    for text, message in (
            ("n_layer = 3\nstages = [(4096, 'web:1'), (None 'code:1')]\n", "line 2: SyntaxError: "),
            ("stages = [(4096, web)]\n", "line 1: NameError: name 'web' is not defined"),
            ("import math\nn_layer = math.sqrt(-1)\n", "line 2: ValueError: math domain error")):
        preset = tmp_path / 'preset.py'
        preset.write_text(text)
        with pytest.raises(SystemExit, match=f'^train.py: error: {preset}, {message}'):
            train.get_config([str(preset)])


def test_a_config_file_that_does_not_exist_says_so():
    # it said 'expected a config file (config/PRESET.py) or a --key=value flag' of a preset's own name
    with pytest.raises(SystemExit, match=r'^train.py: error: config/my_finetune.py: no such config file '
                                         r'\(the presets: config/gpt2_124m.py, config/tiny_cpu.py\)$'):
        train.get_config(['config/my_finetune.py'])
    with pytest.raises(SystemExit, match='^train.py: error: tiny: expected a config file'):
        train.get_config(['tiny'])


def test_schedules_that_jump_are_refused_and_the_presets_pass():
    # --lr_decay_iters below --warmup_iters trained with a rate that fell from the peak to min_lr in
    # one step at the warmup's end; a min_lr above learning_rate "decayed" upwards
    bad = ['--learning_rate=1.0', '--min_lr=0.1', '--warmup_iters=10', '--max_iters=100']
    config = train.get_config(bad + ['--lr_decay_iters=50'])
    config['lr_decay_iters'] = 5  # what the check refuses: the jump it would train with
    assert train.get_lr(9, config) == pytest.approx(10 / 11) and train.get_lr(10, config) == 0.1
    for decay in ('5', '10', '0'):
        with pytest.raises(SystemExit, match=f'^train.py: error: --lr_decay_iters={decay}: expected '
                                             f'more than --warmup_iters=10 '):
            train.get_config(bad + [f'--lr_decay_iters={decay}'])
    with pytest.raises(SystemExit, match=r'^train.py: error: --min_lr=6e-05 is above '
                                         r'--learning_rate=1e-05: '):
        train.get_config(['--learning_rate=1e-5'])  # a fine-tune's rate with the default min_lr
    for fine in (['--lr_decay_iters=1000'],  # past max_iters: cut off
                 ['--lr_decay_iters=50'],  # min_lr from step 50 on, as nanoGPT
                 ['--lr_decay_iters=5', '--schedule=wsd'],  # wsd has no lr_decay_iters
                 ['--lr_decay_iters=50', '--min_lr=1.0'],  # constant
                 ['--learning_rate=0', '--min_lr=0', '--lr_decay_iters=50']):
        config = train.get_config(bad + fine)
        lr = [train.get_lr(s, config) for s in range(101)]  # no step changes the rate by more than
        assert max(abs(a - b) for a, b in zip(lr, lr[1:])) <= 1 / 11 + 1e-9, fine  # a warmup step
    for preset in sorted((ROOT / 'config').glob('*.py')):  # as it is, and with the other schedule
        for schedule in ('cosine', 'wsd'):
            train.get_config([str(preset), f'--schedule={schedule}'])


@pytest.mark.parametrize('flag', ['--beta1=1.5', '--beta2=1.0', '--dropout=2.0', '--lora_dropout=1.5',
                                  '--seed=-1', '--lora_alpha=0.0', '--rope_theta=0.0', '--beta1=nan'])
def test_values_torch_or_numpy_refuse_later_are_refused_first(flag):
    # a traceback (AdamW's betas, numpy's seed), torch's "dropout probability has to be between 0 and
    # 1" naming no flag, or a silently useless run: lora_alpha=0 trains adapters that change nothing,
    # rope_theta=0 a NaN loss blamed on the learning rate
    key, value = flag[2:].split('=')
    with pytest.raises(SystemExit, match=f'^train.py: error: --{key}={value}: expected a '):
        train.get_config(TINY + [flag])
    train.get_config(TINY + ['--beta1=0', '--dropout=0.5', '--seed=0', '--lora_alpha=1', '--lora_rank=4'])  # fine


@pytest.mark.parametrize('flag, expected', [
    ('--stages=foo', 'a list'), ('--stages={}', 'a list'), ('--sources=web', 'a dict'),
    ('--sources=[1]', 'a dict'), ('--n_kv_head=two', 'a whole number'),
    ('--n_kv_head=-1', 'a whole number'), ('--real_vocab_size=1.5', 'a whole number')])
def test_settings_of_python_values_are_checked_from_flags(flag, expected):
    # a flag that is no Python literal arrived as a str: --stages=foo was read as three stages 'f',
    # 'o', 'o' ("stage 1: expected (until_tokens, mixture), got 'f'"), --sources=web as a str that
    # the mixture searched by substring, --n_kv_head=two reached the model as a str
    key, value = flag[2:].split('=')
    with pytest.raises(SystemExit, match=f'^train.py: error: --{key}=.*: expected {expected}'):
        train.get_config(TINY + [flag])
    config = train.get_config(TINY + ["--stages=[(512, 'a'), (None, 'b')]", '--n_kv_head=1',
                                      "--sources={'a': 'x', 'b': 'y'}", '--real_vocab_size=200'])
    assert config['stages'] == [(512, 'a'), (None, 'b')] and config['n_kv_head'] == 1


def test_a_run_that_ends_before_its_decay_says_so():
    # a short test of a staged recipe (wsd decays over the final stage) or of nanoGPT's default
    # lr_decay_iters trained at the peak rate to the end, and nothing said so
    lines = []
    run = types.SimpleNamespace(log=lines.append, world=1, device='cpu', dtype='float32',
                                distributed=False)
    gpt = types.SimpleNamespace(size_text=lambda: '1 parameter', parameters=lambda: [])
    sources = [dict(name=n, folder=n, shards=[]) for n in ('web', 'code')]
    ends = ', after --max_iters=10: this run ends at a rate of '
    for schedule, stages, decay, said in (
            ('wsd', [(0, [1, 0]), (20, [0, 1])], 8, f'over the final stage, from step 20{ends}3.00e-03'),
            ('cosine', [(0, [1, 1])], 30, f'until --lr_decay_iters=30{ends}2.60e-03'),
            ('wsd', [(0, [1, 0]), (5, [0, 1])], 8, None),  # decays in the run
            ('cosine', [(0, [1, 1])], 10, None)):
        config = train.get_config(TINY + [f'--schedule={schedule}', f'--lr_decay_iters={decay}',
                                          '--max_iters=10'])
        lines.clear()
        train.describe(gpt, dict(sources=sources, stages=stages, tokenizer='gpt2'), config, run, 4, 1, 0)
        notes = [line for line in lines if line.startswith('note: the learning rate decays')]
        assert notes == ([] if said is None else
                         [f"note: the learning rate decays {said}, not at --min_lr=3.00e-04"])
        late = any('(after --max_iters=10: not in this run)' in line for line in lines)
        assert late == (stages[-1][0] >= 10)
    # a resume past --max_iters (the checkpoint at step 12) did nothing, and said only "steps 12 to 10"
    data = dict(sources=sources[:1], stages=[(0, [1])], tokenizer='gpt2')
    train.describe(gpt, data, config, run, 4, 1, 12)
    assert lines[-1].endswith('; steps 12 to 10 (none to train: raise --max_iters to continue)')


@pytest.mark.parametrize('flag', ['--lora_alpha=16', '--lora_dropout=0.1', '--rslora=true',
                                  '--lora_targets=c_attn', '--lora_embedding_lr=1e-4'])
def test_a_lora_flag_without_a_rank_is_refused(flag, tmp_path):
    # at lora_rank=0 it was ignored: the run trained every weight, as if the flag had not been given
    key = flag[2:].split('=')[0]
    for rank in ([], ['--lora_rank=0']):
        with pytest.raises(SystemExit, match=f'^train.py: error: --{key} needs --lora_rank > 0 '):
            train.get_config(TINY + rank + [flag])
    train.get_config(TINY + ['--lora_rank=4', flag])
    preset = tmp_path / 'preset.py'  # a config file may set it for a later --lora_rank
    preset.write_text(f"{key} = {train.get_config(TINY + ['--lora_rank=4', flag])[key]!r}\n")
    train.get_config(TINY + [str(preset)])


def test_an_empty_out_dir_and_nothing_to_resume_are_one_line(tmp_path):
    # --out_dir= was a FileNotFoundError traceback (os.makedirs('')) once the data and model were loaded
    for empty in ('', ' '):
        with pytest.raises(SystemExit, match=f"^train.py: error: --out_dir='{empty}': expected a folder for ckpt.pt"):
            train.main(TINY + [f'--out_dir={empty}', '--data=/nonexistent'])
    # resume was "OUT/ckpt.pt: no such file (train a model first ...)", after reading the data
    for out in (tmp_path / 'empty', tmp_path / 'missing'):
        (tmp_path / 'empty').mkdir(exist_ok=True)
        with pytest.raises(SystemExit, match=f'^train.py: error: nothing to resume in {out} \\(no ckpt.pt\\)'):
            train.main(TINY + [f'--out_dir={out}', '--init_from=resume', '--data=/nonexistent'])
    assert not (tmp_path / 'missing').exists()


def test_a_number_as_the_last_stages_end_is_refused(tmp_path):
    # it was silently ignored: the last stage ran on to --max_iters whatever it said
    preset = tmp_path / 'stages.py'
    for stages, message in (("[(2048, 'web'), (4096, 'web:1,code:1')]", 'stage 2: until_tokens=4096'),
                            ("[(8e9, 'web')]", 'stage 1: until_tokens=8000000000.0')):
        preset.write_text(f"sources = {{'web': '{tmp_path}/web', 'code': '{tmp_path}/code'}}\nstages = {stages}\n")
        with pytest.raises(SystemExit, match=f'^train.py: error: {message}, expected None: until_tokens is the '
                                             f'tokens seen when a stage ends and the next begins, and the last '
                                             f'stage runs to the end of training'):
            train.main(TINY + [str(preset), f'--out_dir={tmp_path / "out"}'])
