"""
The GPT language model in one file, for train.py and sample.py.

Part 1, the model: GPT-2's architecture with nanoGPT's module names (so GPT-2's weights load 1:1, see
gpt2_from_hf), a few modern switches (RoPE, RMSNorm, SwiGLU, grouped-query attention; all off by
default), and a KV cache for generation.
The loss lives in cross_entropy.py: cross-entropy fused into one Triton kernel that computes the loss
and its gradient in a single forward pass and writes the gradient over the logits, so training never
holds a second tokens x vocabulary tensor; and a chunked linear + cross-entropy that never holds the
logits at all. Off GPU the same functions run in plain torch.

References: GPT-2 (Radford et al. 2019), nanoGPT and llm.c (Karpathy), Liger-Kernel (LinkedIn).
"""
import inspect
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from cross_entropy import cross_entropy_torch, linear_cross_entropy, triton


@dataclass
class GPTConfig:
    block_size: int = 1024       # context length
    vocab_size: int = 50304      # GPT-2's 50257 padded up to a multiple of 64: faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True            # biases in Linears and LayerNorms, like GPT-2; False is a bit faster
    # one matrix for the input embedding and the output layer (GPT-2). Untied, a small model learns
    # bigrams sooner: tied, the direct path wte -> lm_head scores token j after token i by e_i . e_j,
    # symmetric, and the model sits longer at the unigram plateau
    tie_embeddings: bool = True
    # tokens the tokenizer really has (50257 for GPT-2); the ids from here to vocab_size are padding,
    # never predicted: left out of the loss, -inf in the logits. None: all vocab_size ids are real.
    real_vocab_size: Optional[int] = None
    # the modern variant (Llama's choices); the defaults are GPT-2
    n_kv_head: Optional[int] = None  # grouped-query attention: heads share n_kv_head keys/values
    rope: bool = False           # rotary position embeddings instead of learned ones (no wpe)
    rope_theta: float = 10000.0
    norm: str = 'layernorm'      # 'layernorm' | 'rmsnorm'
    mlp: str = 'gelu'            # 'gelu' | 'swiglu'
    # the loss (cross_entropy.py): 'auto' = the Triton kernel on CUDA, plain torch elsewhere
    loss_impl: str = 'auto'      # 'auto' | 'triton' | 'chunked' | 'torch'
    z_loss: float = 0.0          # PaLM's z-loss weight (1e-4 there): keeps log Z near 0; 0 = off

    def __post_init__(self):
        if self.n_head < 1 or self.n_embd < 1:  # else a modulo by zero below, or a model of width 0
            raise ValueError(f"GPTConfig: n_head and n_embd must be >= 1 (got {self})")
        kv = self.n_kv_head or self.n_head
        checks = [(self.n_embd % self.n_head == 0, "n_embd must be a multiple of n_head"),
                  (self.n_head % kv == 0, "n_head must be a multiple of n_kv_head"),
                  (not self.rope or (self.n_embd // self.n_head) % 2 == 0, "rope needs an even head size"),
                  (self.norm in ('layernorm', 'rmsnorm'), "norm must be 'layernorm' or 'rmsnorm'"),
                  (self.mlp in ('gelu', 'swiglu'), "mlp must be 'gelu' or 'swiglu'"),
                  (self.loss_impl in ('auto', 'triton', 'chunked', 'torch'),
                   "loss_impl must be 'auto', 'triton', 'chunked' or 'torch'"),
                  (0 < (self.real_vocab_size or self.vocab_size) <= self.vocab_size,
                   "real_vocab_size must be between 1 and vocab_size")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"GPTConfig: {message} (got {self})")


class Norm(nn.Module):
    """LayerNorm (GPT-2), or RMSNorm (Llama), which skips the mean and the bias."""

    def __init__(self, dim, config):
        super().__init__()
        self.rms = config.norm == 'rmsnorm'
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if config.bias and not self.rms else None

    def forward(self, x):
        if self.rms:
            return F.rms_norm(x, self.weight.shape, self.weight, eps=1e-6)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def rope_tables(positions, head_dim, theta):
    """cos and sin of each position times each rotation frequency, (T, head_dim / 2), in float32."""
    dims = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device)
    freqs = theta ** (-dims / head_dim)
    angles = positions.float()[:, None] * freqs[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate the pairs (x[i], x[i + d/2]) of each head by position * frequency ('rotate half', as in
    GPT-NeoX and Llama): a query-key dot product then depends only on their distance."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head or config.n_head
        self.head_dim, self.block_size = config.n_embd // config.n_head, config.block_size
        # queries, keys and values from one matmul (GPT-2's c_attn); with GQA keys and values are narrower
        qkv = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, qkv, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope=None, cache=None, pos=0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split([self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
                                        self.n_kv_head * self.head_dim], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask = None
        if cache is not None:  # generation: store these keys/values at pos, attend to all so far
            if 'k' not in cache:
                cache['k'] = k.new_empty(B, self.n_kv_head, self.block_size, self.head_dim)
                cache['v'] = torch.empty_like(cache['k'])
            cache['k'][:, :, pos:pos + T], cache['v'][:, :, pos:pos + T] = k, v
            k, v = cache['k'][:, :, :pos + T], cache['v'][:, :, :pos + T]
            if pos > 0 and T > 1:  # new queries see every cached key, and are causal among themselves
                mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=T > 1 and pos == 0,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.swiglu = config.mlp == 'swiglu'
        # SwiGLU has three matrices instead of two: 2/3 of the width keeps the parameter count
        hidden = 64 * math.ceil(8 * config.n_embd / 3 / 64) if self.swiglu else 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.swiglu else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)
        if self.swiglu:
            gate, up = x.chunk(2, dim=-1)
            x = F.silu(gate) * up
        else:
            x = F.gelu(x, approximate='tanh')  # GPT-2's GELU
        return self.dropout(self.c_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1, self.attn = Norm(config.n_embd, config), CausalSelfAttention(config)
        self.ln_2, self.mlp = Norm(config.n_embd, config), MLP(config)

    def forward(self, x, rope=None, cache=None, pos=0):
        x = x + self.attn(self.ln_1(x), rope, cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            **({} if config.rope else dict(wpe=nn.Embedding(config.block_size, config.n_embd))),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=Norm(config.n_embd, config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # one matrix reads and writes tokens
        # GPT-2's init: N(0, 0.02), biases 0, and the projections into the residual stream scaled by
        # 1/sqrt(2 * n_layer), since 2 * n_layer of them add up along it
        for name, p in self.named_parameters():
            if name.endswith('bias'):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith('c_proj.weight') else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def head_weight(self):
        """The output layer's weight (lm_head's, tied to wte); lora.py replaces this to add its low-rank
        update, on every loss path (the fused ones take a weight, not a module)"""
        return self.lm_head.weight

    def get_num_params(self, non_embedding=True):
        """Parameters (a tied wte/lm_head once); non_embedding leaves out the lookup tables, which cost no
        matmul: the position embeddings, and the token embedding when it is not tied to lm_head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and not self.config.rope:
            n -= self.transformer.wpe.weight.numel()
        if non_embedding and not self.config.tie_embeddings:
            n -= self.transformer.wte.weight.numel()
        return n

    def size_text(self):
        """'1.31M parameters (1.87M with the lookup tables)': what computes, and what the file holds."""
        n, total = self.get_num_params(), self.get_num_params(non_embedding=False)
        return f"{n / 1e6:.2f}M parameters" + (f" ({total / 1e6:.2f}M with the lookup tables)" if total != n else "")

    def new_cache(self):
        """An empty KV cache for forward(cache=...): each layer's keys and values are allocated on first
        use (block_size long, in the dtype the keys come in); 'pos' counts the tokens it holds."""
        return dict(pos=0, layers=[{} for _ in self.transformer.h])

    def forward(self, idx, targets=None, all_logits=False, cache=None, n_tokens=None):
        """idx (B, T) token ids -> (logits, loss).

        With targets (B, T) (-1 = ignore): loss is the mean cross-entropy over the non-ignored targets,
        or their sum / n_tokens when n_tokens (a global count of targets) is given, for gradient
        accumulation and DDP. logits is None when loss_impl is 'triton' or 'chunked': there the loss
        and the gradients of lm_head and of x are computed together in this forward, over all rows at
        once ('triton') or 2048 at a time ('chunked', whose logits never exist whole), and the logits
        are gone; 'torch' returns them (B, T, V).
        Without targets: loss is None and logits (B, 1, V) for the last position, or (B, T, V) with
        all_logits. Padded vocabulary ids get -inf logits. cache: from new_cache(), for generation."""
        B, T = idx.shape
        pos = cache['pos'] if cache is not None else 0
        if pos + T > self.config.block_size:
            raise ValueError(f"{pos + T} tokens do not fit in block_size={self.config.block_size}")
        positions = torch.arange(pos, pos + T, device=idx.device)
        x, rope = self.transformer.wte(idx), None
        if self.config.rope:
            rope = rope_tables(positions, self.config.n_embd // self.config.n_head, self.config.rope_theta)
        else:
            x = x + self.transformer.wpe(positions)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, None if cache is None else cache['layers'][i], pos)
        if cache is not None:
            cache['pos'] += T
        x = self.transformer.ln_f(x)

        n_valid = self.config.real_vocab_size or self.config.vocab_size
        impl = self.config.loss_impl
        if impl == 'auto':
            impl = 'triton' if x.is_cuda and triton is not None else 'torch'
        options = dict(n_valid=n_valid, z_loss=self.config.z_loss, n_tokens=n_tokens)
        if targets is not None and impl in ('triton', 'chunked'):  # the fused paths (cross_entropy.py)
            x, targets = x.flatten(0, 1), targets.flatten()
            chunk = 2048 if impl == 'chunked' else x.shape[0]
            return None, linear_cross_entropy(x, self.head_weight(), targets, chunk=chunk, **options)
        logits = F.linear(x if targets is not None or all_logits else x[:, [-1], :], self.head_weight())
        if n_valid < self.config.vocab_size:
            logits[..., n_valid:] = float('-inf')  # padding: never predicted
        if targets is None:
            return logits, None
        return logits, cross_entropy_torch(logits.flatten(0, 1), targets.flatten(), **options)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True):
        """Continue idx (B, T): yields the next token of each row, (B, 1), max_new_tokens times.

        temperature 0 = greedy; see sample_next. With use_cache the prompt runs through the model once
        and then each step feeds a single token, reusing the cached keys and values. Past block_size,
        use_cache=False slides the window (the last block_size tokens, as nanoGPT), while the cache,
        when full, is refilled with the last block_size // 2 tokens, so a step stays one token's work
        (each step then sees between half and all of a block)."""
        block, cache = self.config.block_size, None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(idx[:, -block:])
            elif cache is None or cache['pos'] == block:  # first step, or the cache is full: (re)fill it
                keep = block if cache is None else max(1, block // 2)
                cache = self.new_cache()
                logits, _ = self(idx[:, -keep:], cache=cache)
            else:
                logits, _ = self(idx[:, -1:], cache=cache)
            next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p)
            idx = torch.cat([idx, next_token], dim=1)
            yield next_token

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices and embeddings (>= 2-D) only, not on biases and norm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
                  dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        extra = dict(fused=True) if fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_token(self):
        """Training FLOPs per token (PaLM, appendix B): 6 per weight (a multiply-add in the forward,
        twice that in the backward) plus attention's scores and weighted sums, 12 * L * H * Q * T."""
        c = self.config
        return 6 * self.get_num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size

    def estimate_mfu(self, tokens_per_second, device=None):
        """Model FLOPs utilisation: achieved training FLOP/s over the device's dense bf16 peak, as a
        fraction; None when the device's peak is unknown (the caller should say so, not guess)."""
        peak = peak_flops(device)
        return None if peak is None else self.flops_per_token() * tokens_per_second / peak


# dense bf16 tensor-core peaks in FLOP/s (vendor data sheets, no sparsity). First match in the
# device name wins, so the more specific names come first.
PEAK_FLOPS = [('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H200 NVL', 835e12), ('GH200', 989e12),
              ('H100', 989e12), ('H200', 989e12), ('H800', 989e12), ('B200', 2250e12), ('B100', 1750e12),
              ('A100', 312e12), ('A800', 312e12), ('A10G', None), ('A6000', 154.8e12), ('A10', 125e12),
              ('L40S', 362e12), ('L40', 181e12), ('L4', 121e12), ('RTX 4090', 165.2e12),
              ('RTX 3090', 71e12), ('V100', 125e12), ('T4', 65e12), ('MI300X', 1307e12), ('MI250X', 383e12)]


def peak_flops(device=None):
    """The dense bf16 peak of a CUDA device (by its name, e.g. 'NVIDIA H100 80GB HBM3'), or None."""
    if isinstance(device, str) and not device.startswith(('cuda', 'cpu', 'mps')):
        name = device  # a device name itself
    else:
        device = torch.device(device or 'cuda')
        if device.type != 'cuda' or not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS if key in name), None)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None):
    """Draw one token per row from logits (B, V) -> (B, 1): temperature 0 takes the argmax; else
    logits / temperature, keep the top_k largest, then the smallest set of most likely tokens whose
    probabilities reach top_p (the token that crosses top_p is kept), and draw from what is left."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits[logits < kth] = float('-inf')
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        sorted_logits[probs.cumsum(dim=-1) - probs >= top_p] = float('-inf')
        logits = logits.scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1)


_CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')


def gpt2_from_hf(hf_state, vocab_size=50304, tie_embeddings=True):
    """A Hugging Face GPT-2 state dict (GPT2LMHeadModel or GPT2Model) -> ours, for
    GPT(GPTConfig(vocab_size=50304, real_vocab_size=50257, bias=True, ...sizes...)).
    The names are the same; HF's GPT-2 uses Conv1D layers, which keep their weight as (in, out), the
    transpose of nn.Linear's (out, in), so those four weights are transposed. The attention-mask
    buffers are dropped, and wte gets zero rows for the padded vocabulary; lm_head is tied to it, or
    with tie_embeddings=False (GPT2Config(tie_word_embeddings=False)) is HF's own lm_head, padded alike."""
    ours = {}
    for name, tensor in hf_state.items():
        if name.endswith(('.attn.bias', '.attn.masked_bias')):  # causal-mask buffers, not weights
            continue
        name = name if name.startswith(('transformer.', 'lm_head.')) else 'transformer.' + name
        ours[name] = tensor.t().contiguous() if name.endswith(_CONV1D) else tensor
    ours['transformer.wte.weight'] = pad_rows(ours['transformer.wte.weight'], vocab_size)
    ours['lm_head.weight'] = ours['transformer.wte.weight'] if tie_embeddings else pad_rows(ours['lm_head.weight'], vocab_size)
    return ours


def pad_rows(weight, vocab_size):
    """An embedding or output weight with zero rows added for the padded vocabulary ids."""
    if vocab_size > weight.shape[0]:
        weight = torch.cat([weight, weight.new_zeros(vocab_size - weight.shape[0], weight.shape[1])])
    return weight


def gpt2_to_hf(state, real_vocab_size=50257):
    """Ours -> a Hugging Face GPT2LMHeadModel state dict (gpt2_from_hf's inverse; GPT-2 layout only).
    An untied model's lm_head stays its own (GPT2Config(tie_word_embeddings=False) then)."""
    hf = {name: t.t().contiguous() if name.endswith(_CONV1D) else t for name, t in state.items()}
    for name in ('transformer.wte.weight', 'lm_head.weight'):
        hf[name] = state[name][:real_vocab_size]
    return hf
