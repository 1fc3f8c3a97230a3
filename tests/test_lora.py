"""LoRA (lora.py, train.py --lora_rank): at step 0 the model is the base exactly; only the adapters
train (and the tied embedding's adapter only when targeted); merged weights give the unmerged
logits within float32 rounding; a LoRA run's checkpoint holds the frozen base under plain names plus
the adapters, resumes bit-identically, and starts a new run as one merged GPT. (LoRA under DDP and
FSDP: test_train.py's distributed test.)"""

import copy
import signal
from types import SimpleNamespace

import pytest
import torch

import lora
import train
from model import GPT, GPTConfig
from test_train import ROOT, data, losses, one_thread, read_log, run  # noqa: F401 (fixtures)

CONFIG = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=96, bias=True)


def models(targets='all', rslora=False, loss_impl='torch', tied=True):
    torch.manual_seed(0)
    base = GPT(GPTConfig(**CONFIG, loss_impl=loss_impl, tie_embeddings=tied))
    adapted = copy.deepcopy(base)
    config = lora.add_lora(adapted, rank=4, alpha=8, rslora=rslora, targets=targets)
    return base, adapted, config


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 96, (3, 16), generator=g), torch.randint(0, 96, (3, 16), generator=g)


# lm_head as a module, or its weight fused in the loss; tied to the embedding (GPT-2) or not (the demo)
@pytest.mark.parametrize('loss_impl,tied', [('torch', True), ('chunked', True), ('torch', False)])
def test_step_0_is_the_base_and_only_adapters_train(loss_impl, tied):
    x, y = batch()
    base, adapted, _ = models(loss_impl=loss_impl, tied=tied)
    assert torch.equal(base(x, all_logits=True)[0], adapted(x, all_logits=True)[0])
    assert torch.equal(base(x, y)[1], adapted(x, y)[1])
    adapted(x, y)[1].backward()
    trained = {n for n, p in adapted.named_parameters() if p.grad is not None}
    assert trained == {n for n, _ in adapted.named_parameters() if lora.is_adapter(n)}
    # 4 Linears per block, + lm_head (+ an untied embedding's own adapter)
    assert 'lm_head.lora_B' in trained and len(trained) == 2 * (2 * 4 + 1 + (not tied))
    assert tied or 'transformer.wte.lora_B' in trained
    assert all(adapted.get_parameter(n).grad.abs().sum() > 0 for n in trained if n.endswith('lora_B'))
    # not targeted: the embedding (tied to lm_head) gets neither an adapter nor a gradient
    _, attention_only, config = models(targets='c_attn', loss_impl=loss_impl)
    attention_only(x, y)[1].backward()
    trained = {n for n, p in attention_only.named_parameters() if p.grad is not None}
    assert trained == {f'transformer.h.{i}.attn.c_attn.lora_{m}' for i in range(2) for m in 'AB'}
    assert config['targets'] == ('c_attn',) and attention_only.transformer.wte.weight.grad is None


@pytest.mark.parametrize('rslora,tied', [(False, True), (True, True), (False, False)])
def test_merged_equals_unmerged(rslora, tied):
    x, y = batch()
    _, adapted, config = models(rslora=rslora, tied=tied)
    for name, p in adapted.named_parameters():
        if name.endswith('lora_B'):
            torch.nn.init.normal_(p, std=0.05)  # as after training: the update is not zero
    base_state, adapters = lora.split_state(adapted.state_dict())
    merged = GPT(GPTConfig(**CONFIG, tie_embeddings=tied))
    merged.load_state_dict(lora.merge_lora(base_state, dict(config=config, adapters=adapters)))
    # tied: still one matrix; untied: two, each with its own update
    assert torch.equal(merged.lm_head.weight, merged.transformer.wte.weight) == tied
    if not tied:
        for name in ('transformer.wte.weight', 'lm_head.weight'):
            assert not torch.equal(merged.state_dict()[name], base_state[name])
    unmerged_logits, merged_logits = adapted(x, all_logits=True)[0], merged(x, all_logits=True)[0]
    torch.testing.assert_close(merged_logits, unmerged_logits, rtol=1e-5, atol=1e-5)
    base = GPT(GPTConfig(**CONFIG, tie_embeddings=tied))
    base.load_state_dict(base_state)
    assert (base(x, all_logits=True)[0] - unmerged_logits).abs().max() > 1e-2  # the adapters do change the model


def test_lora_run_checkpoint_resume_and_merge(data, tmp_path, monkeypatch, capsys):
    run(data, tmp_path / 'base', '--max_iters=3')
    capsys.readouterr()
    base_path = tmp_path / 'base' / 'ckpt.pt'
    base = torch.load(base_path, weights_only=True)
    flags = [f'--init_from={base_path}', '--lora_rank=4', '--lora_targets=c_attn,c_fc,wte', '--lora_embedding_lr=3e-4',
             '--max_iters=5', '--eval_interval=3']
    whole = run(data, tmp_path / 'whole', *flags)
    assert whole[0]['val_loss'] == losses(read_log(tmp_path / 'base'), 'val_loss')[-1][1]  # step 0: the base, exactly
    ckpt = torch.load(tmp_path / 'whole' / 'ckpt.pt', weights_only=True)
    assert ckpt['model'].keys() == base['model'].keys()  # the frozen base, plain names, unchanged
    assert all(torch.equal(ckpt['model'][k], base['model'][k]) for k in base['model'])
    assert ckpt['lora']['config']['targets'] == ('c_attn', 'c_fc', 'lm_head') and ckpt['lora']['config']['rank'] == 4
    assert set(ckpt['lora']['adapters']) == {f'transformer.h.{i}.{m}.lora_{ab}' for i in range(2) for m in
                                             ('attn.c_attn', 'mlp.c_fc') for ab in 'AB'} | {'lm_head.lora_A', 'lm_head.lora_B'}
    assert len(ckpt['optimizer']['state']) == 10  # AdamW state for the adapters only
    # it said 'training 1.58M parameters (0.27M of them in LoRA adapters)', as if all of them trained
    adapters = sum(t.numel() for t in ckpt['lora']['adapters'].values())
    assert f", of which only the {adapters / 1e6:.2f}M in LoRA adapters train" in capsys.readouterr().out
    assert sorted(g['lr_scale'] for g in ckpt['optimizer']['param_groups']) == pytest.approx([0.1, 1.0])  # lora_embedding_lr / learning_rate

    get_lr = train.get_lr

    def interrupt_at_step_1(step, config, *rest):
        if step == 1:
            signal.raise_signal(signal.SIGTERM)
        return get_lr(step, config, *rest)
    monkeypatch.setattr(train, 'get_lr', interrupt_at_step_1)
    run(data, tmp_path / 'cut', *flags)
    monkeypatch.setattr(train, 'get_lr', get_lr)
    reordered = [f for f in flags[1:] if not f.startswith('--lora_targets')] + ['--lora_targets=wte,c_fc,c_attn']
    resumed = run(data, tmp_path / 'cut', *reordered, '--init_from=resume')  # the same targets: resumes
    assert losses(resumed) == losses(whole) and losses(resumed, 'val_loss') == losses(whole, 'val_loss')
    again = torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)
    assert all(torch.equal(again['lora']['adapters'][k], v) for k, v in ckpt['lora']['adapters'].items())

    # a new run from the LoRA checkpoint starts from the merged model: its val loss at step 0 is the
    # LoRA run's last (to float32 rounding: merging sums in another order)
    merged = run(data, tmp_path / 'merged', f'--init_from={tmp_path / "whole" / "ckpt.pt"}', '--max_iters=0')
    assert merged[0]['val_loss'] == pytest.approx(losses(whole, 'val_loss')[-1][1], rel=1e-5)



def demo(*flags):
    return train.get_config([str(ROOT / 'config' / 'tiny_cpu.py'), *flags])


def adapter_rates(config):
    """{parameter name: its learning rate / learning_rate} of train.py's optimizer for config."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(**{k: config[k] for k in GPTConfig.__dataclass_fields__}))
    if config['lora_rank']:
        lora.add_lora(gpt, config['lora_rank'], config['lora_alpha'], targets=config['lora_targets'])
    optimizer = train.build_optimizer(gpt, config, SimpleNamespace(device_type='cpu'))
    group = {id(p): g['lr_scale'] for g in optimizer.param_groups for p in g['params']}
    return {n: group[id(p)] for n, p in gpt.named_parameters() if p.requires_grad}


def test_unknown_targets_are_refused_with_the_known_ones():
    # the message said "wte = lm_head: they are one tied matrix", untrue of the demo's untied model
    for text in ('foo', 'c_attn,mlp', ' , '):
        with pytest.raises(ValueError) as error:
            lora.parse_targets(text)
        assert str(error.value) == (f"--lora_targets={text}: expected 'all' or a comma list of c_attn, c_proj, "
                                    f"c_fc, lm_head (wte: the same target as lm_head)")
    assert lora.parse_targets(' wte, c_fc ,lm_head') == ('lm_head', 'c_fc')


def test_adapters_are_not_trained_at_the_embedding_tables_rate():
    # the demo preset trains its embedding table at embedding_lr = 0.2, 100x the rest; its adapters
    # got that rate too (lm_head's as well, untied), and a LoRA run of the demo diverged
    assert demo()['embedding_lr'] == 100 * demo()['learning_rate']
    assert adapter_rates(demo())['transformer.wte.weight'] == pytest.approx(100)  # full training
    rates = adapter_rates(demo('--lora_rank=4'))
    assert len(rates) == 2 * (4 * 4 + 2) and set(rates.values()) == {1.0}  # all at learning_rate
    # the guides' tenth, on the embedding's adapter: untied its own, tied lm_head's (one matrix)
    rates = adapter_rates(demo('--lora_rank=4', '--lora_embedding_lr=2e-4'))
    assert {n for n, r in rates.items() if r != 1.0} == {'transformer.wte.lora_A', 'transformer.wte.lora_B'}
    assert rates['transformer.wte.lora_A'] == pytest.approx(0.1)
    rates = adapter_rates(demo('--lora_rank=4', '--lora_embedding_lr=2e-4', '--tie_embeddings=true'))
    assert {n for n, r in rates.items() if r != 1.0} == {'lm_head.lora_A', 'lm_head.lora_B'}


def test_lora_with_the_demos_learning_rates_learns(data, tmp_path):
    # the demo's optimizer settings (embedding_lr 0.2, untied, its betas) on the tiny model
    config = demo()
    flags = [f'--{k}={config[k]}' for k in ('learning_rate', 'embedding_lr', 'weight_decay', 'beta1',
                                            'beta2', 'tie_embeddings')] + ['--warmup_iters=0']
    run(data, tmp_path / 'base', *flags, '--max_iters=8')
    log = run(data, tmp_path / 'lora', *flags, f'--init_from={tmp_path / "base" / "ckpt.pt"}',
              '--lora_rank=4', '--max_iters=8', '--eval_interval=4')
    val = [v for _, v in losses(log, 'val_loss')]
    assert val[2] < val[1] < val[0], val


def test_a_rank_as_large_as_the_width_is_refused(data, tmp_path):
    # rank 32 of a 32-wide model is no low-rank adapter: B A can be any matrix, in more numbers than
    # the weight itself, and it trained without a word
    for rank, targets in ((32, 'all'), (40, 'c_fc'), (32, 'lm_head')):
        torch.manual_seed(0)
        gpt = GPT(GPTConfig(**CONFIG))
        with pytest.raises(ValueError, match=rf'^--lora_rank={rank}: expected less than 32, the smaller side of '):
            lora.add_lora(gpt, rank, 8.0, targets=targets)
        assert not any(lora.is_adapter(n) for n, _ in gpt.named_parameters())  # refused before changing it
    lora.add_lora(GPT(GPTConfig(**CONFIG)), 31, 8.0)  # the largest allowed
    with pytest.raises(SystemExit, match=r'^train.py: error: --lora_rank=32: expected less than 32, the smaller '
                                         r'side of transformer.h.0.attn.c_attn.weight \(96 x 32\); '):
        run(data, tmp_path / 'out', '--lora_rank=32')
    assert not (tmp_path / 'out').exists()
