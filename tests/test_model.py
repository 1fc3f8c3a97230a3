"""model.py, the model (Part 1): GPT-2's names and shapes, the Hugging Face weight mapping, the KV
cache against the full forward, generation, the loss paths against each other, MFU bookkeeping."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (conftest.py does it too)

import dataclasses

import pytest
import torch

from model import GPT, GPTConfig, gpt2_from_hf, gpt2_to_hf, peak_flops, sample_next

TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=96, real_vocab_size=90)
MODERN = dict(TINY, rope=True, norm='rmsnorm', mlp='swiglu', n_kv_head=2, bias=False)


def tiny(dtype=torch.float64, **overrides):
    model = GPT(GPTConfig(**{**TINY, **overrides})).to(dtype).eval()
    with torch.no_grad():  # random init makes near-uniform logits; sharpen them so argmax is stable
        model.lm_head.weight.mul_(20)
    return model


def test_gpt2_124m_parameter_names_and_shapes():
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=50257))
    # the published count of GPT-2 small, with the embedding tied to the output head
    assert model.get_num_params(non_embedding=False) == 124_439_808
    assert model.get_num_params() == 124_439_808 - 1024 * 768
    # what train.py, sample.py and eval.py print (sample.py counted the lookup tables, the others not)
    assert model.size_text() == "123.65M parameters (124.44M with the lookup tables)"
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    assert shapes["transformer.wte.weight"] == shapes["lm_head.weight"] == (50257, 768)
    assert shapes["transformer.wpe.weight"] == (1024, 768)
    assert shapes["transformer.h.11.attn.c_attn.weight"] == (3 * 768, 768)   # nn.Linear: (out, in)
    assert shapes["transformer.h.0.mlp.c_fc.weight"] == (4 * 768, 768)
    assert shapes["transformer.h.0.mlp.c_proj.bias"] == (768,)
    assert shapes["transformer.ln_f.bias"] == (768,)
    per_block = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias"}
    want = {f"transformer.h.{i}.{n}" for i in range(12) for n in per_block} | {
        "transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
        "lm_head.weight"}
    assert set(shapes) == want
    assert isinstance(model.transformer.h, torch.nn.ModuleList) and len(model.transformer.h) == 12


def test_hugging_face_gpt2_weights_map_with_conv1d_transposed():
    config = GPTConfig(**{**TINY, "vocab_size": 96, "real_vocab_size": 90, "bias": True})
    c = config.n_embd
    # a state dict laid out as HF's GPT2LMHeadModel: Conv1D weights are (in, out), 90 real tokens
    hf = {"transformer.wte.weight": torch.randn(90, c), "transformer.wpe.weight": torch.randn(24, c),
          "transformer.ln_f.weight": torch.randn(c), "transformer.ln_f.bias": torch.randn(c)}
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        hf.update({p + "ln_1.weight": torch.randn(c), p + "ln_1.bias": torch.randn(c),
                   p + "ln_2.weight": torch.randn(c), p + "ln_2.bias": torch.randn(c),
                   p + "attn.c_attn.weight": torch.randn(c, 3 * c), p + "attn.c_attn.bias": torch.randn(3 * c),
                   p + "attn.c_proj.weight": torch.randn(c, c), p + "attn.c_proj.bias": torch.randn(c),
                   p + "mlp.c_fc.weight": torch.randn(c, 4 * c), p + "mlp.c_fc.bias": torch.randn(4 * c),
                   p + "mlp.c_proj.weight": torch.randn(4 * c, c), p + "mlp.c_proj.bias": torch.randn(c),
                   p + "attn.bias": torch.ones(1, 1, 24, 24), p + "attn.masked_bias": torch.tensor(-1e4)})
    hf["lm_head.weight"] = hf["transformer.wte.weight"]
    model = GPT(config)
    model.load_state_dict(gpt2_from_hf(hf, vocab_size=96))  # strict: every name and shape matches
    x = torch.randn(3, c)
    attn = model.transformer.h[1].attn.c_attn
    # HF's Conv1D computes x @ W + b
    torch.testing.assert_close(attn(x), x @ hf["transformer.h.1.attn.c_attn.weight"] + hf["transformer.h.1.attn.c_attn.bias"])
    mlp = model.transformer.h[0].mlp.c_proj
    h = torch.randn(3, 4 * c)
    torch.testing.assert_close(mlp(h), h @ hf["transformer.h.0.mlp.c_proj.weight"] + hf["transformer.h.0.mlp.c_proj.bias"])
    assert (model.lm_head.weight[90:] == 0).all() and model.lm_head.weight is model.transformer.wte.weight
    back = gpt2_to_hf(model.state_dict(), real_vocab_size=90)
    for name, tensor in hf.items():
        if not name.endswith(("attn.bias", "masked_bias")):
            assert torch.equal(back[name], tensor), name
    # the HF GPT2Model layout (no 'transformer.' prefix, no lm_head) maps too
    bare = {k.removeprefix("transformer."): v for k, v in hf.items() if k != "lm_head.weight"}
    GPT(config).load_state_dict(gpt2_from_hf(bare, vocab_size=96))


@pytest.mark.parametrize("variant", ["gpt2", "modern"])
def test_kv_cache_gives_the_full_forward_logits(variant):
    model = tiny(**(MODERN if variant == "modern" else {}))
    idx = torch.randint(0, 90, (2, 20))
    full, _ = model(idx, all_logits=True)
    cache = model.new_cache()
    steps = [model(idx[:, :7], cache=cache, all_logits=True)[0],   # prefill
             model(idx[:, 7:12], cache=cache, all_logits=True)[0]]  # several tokens after a prefix
    steps += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(12, 20)]  # one at a time
    assert cache["pos"] == 20
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variant", ["gpt2", "modern"])
def test_generate_same_tokens_with_and_without_cache(variant):
    model = tiny(**(MODERN if variant == "modern" else {}))
    idx = torch.randint(0, 90, (3, 5))
    greedy = [torch.cat(list(model.generate(idx, 15, temperature=0, use_cache=c)), dim=1) for c in (True, False)]
    assert greedy[0].shape == (3, 15) and greedy[0].dtype == torch.long
    assert torch.equal(greedy[0], greedy[1])
    assert torch.equal(greedy[0][:, :1], model(idx)[0][:, -1].argmax(-1, keepdim=True))
    drawn = []
    for use_cache in (True, False):
        torch.manual_seed(1)
        drawn.append(torch.cat(list(model.generate(idx, 15, temperature=0.9, top_k=20, top_p=0.9,
                                                   use_cache=use_cache)), dim=1))
    assert torch.equal(drawn[0], drawn[1])


def test_generate_past_block_size_and_never_predicts_padding():
    model = tiny()
    with torch.no_grad():  # make the padded ids (90..95) the most likely ones, were they not masked
        model.lm_head.weight[90:] = model.lm_head.weight[:90].sum(0) * 100
    idx = torch.randint(0, 90, (2, 20))
    for use_cache in (True, False):
        out = torch.cat(list(model.generate(idx, 40, temperature=1.0, use_cache=use_cache)), dim=1)
        assert out.shape == (2, 40) and (out < 90).all() and (out >= 0).all()
    logits, _ = model(idx)
    assert torch.isinf(logits[..., 90:]).all() and torch.isfinite(logits[..., :90]).all()


@pytest.mark.parametrize("variant", ["gpt2", "modern"])
def test_loss_paths_agree(variant):
    # the plain torch loss, the Triton kernel (interpreted on CPU) and the chunked linear path: same
    # loss, same gradients for every parameter, padded vocabulary and ignored targets included
    config = {**(MODERN if variant == "modern" else TINY), "z_loss": 1e-3}
    idx, targets = torch.randint(0, 90, (2, 8)), torch.randint(0, 90, (2, 8))
    targets[0, :3] = -1
    results = {}
    for impl in ("torch", "triton", "chunked"):
        torch.manual_seed(0)
        model = GPT(GPTConfig(**config, loss_impl=impl))
        logits, loss = model(idx, targets)
        assert (logits is None) == (impl != "torch")
        loss.backward()
        results[impl] = loss, {n: p.grad for n, p in model.named_parameters()}
    loss, grads = results["torch"]
    assert 0 < loss.item() < 10
    for impl in ("triton", "chunked"):
        torch.testing.assert_close(results[impl][0], loss, rtol=1e-5, atol=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(results[impl][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert (grads["transformer.wte.weight"][90:] == 0).all()  # padding rows (tied) learn nothing


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**MODERN))
    optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    idx = torch.randint(0, 90, (4, 16))
    losses = []
    for _ in range(8):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


def test_optimizer_decays_only_matrices_and_embeddings():
    model = GPT(GPTConfig(**TINY))
    decay, no_decay = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu").param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.get_num_params(False)


def test_config_round_trips_through_a_plain_dict():
    config = GPTConfig(**MODERN)
    saved = dataclasses.asdict(config)
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in saved.values())
    assert GPTConfig(**saved) == config
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_head=12, n_kv_head=5)
    for zero in (dict(n_head=0), dict(n_embd=0)):  # a ZeroDivisionError; a model of width 0 trained
        with pytest.raises(ValueError, match="n_head and n_embd must be >= 1"):
            GPTConfig(**zero)


def test_flops_and_mfu():
    with torch.device("meta"):
        model = GPT(GPTConfig())
    n = model.get_num_params()
    assert model.flops_per_token() == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA L4") == 121e12 and peak_flops("NVIDIA A10") == 125e12
    assert peak_flops("NVIDIA GeForce RTX 4090") == 165.2e12
    assert peak_flops("NVIDIA A10G") is None and peak_flops("Some Future GPU") is None
    assert model.estimate_mfu(1e5, "cpu") is None
    if torch.cuda.is_available() and peak_flops(torch.cuda.get_device_name()):
        mfu = model.estimate_mfu(1e5, "cuda")
        assert mfu == pytest.approx(model.flops_per_token() * 1e5 / peak_flops(torch.cuda.get_device_name()))


def test_sample_next_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]]))
    assert sample_next(logits, temperature=0).tolist() == [[0], [3]]
    assert sample_next(logits, top_k=1).tolist() == [[0], [3]]
    for _ in range(20):
        # top_p=0.6: row 0 keeps 0.5 and 0.3 (0.5 < 0.6, so the token crossing 0.6 stays); row 1 0.4, 0.3
        token = sample_next(logits, top_p=0.6)
        assert token[0, 0] in (0, 1) and token[1, 0] in (3, 2)
        # top_k=3, then top_p over what is left: row 1 renormalised (0.2, 0.3, 0.4)/0.9 -> keeps 3 and 2
        assert sample_next(logits, top_k=3, top_p=0.5)[1, 0] in (3, 2)
