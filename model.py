"""
The GPT language model in one file, for train.py and sample.py.

Part 1, the model: GPT-2's architecture with nanoGPT's module names (so GPT-2's weights load 1:1, see
gpt2_from_hf), a few modern switches (RoPE, RMSNorm, SwiGLU, grouped-query attention; all off by
default), and a KV cache for generation.
Part 2, the loss: cross-entropy fused into one Triton kernel that computes the loss and its gradient in
a single forward pass and writes the gradient over the logits, so training never holds a second
tokens x vocabulary tensor; and a chunked linear + cross-entropy that never holds the logits at all.
Off GPU the same functions run in plain torch.

References: GPT-2 (Radford et al. 2019), nanoGPT and llm.c (Karpathy), Liger-Kernel (LinkedIn).
"""
import inspect
import math
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton: the plain torch path is used everywhere
    triton = None


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
    # the loss (Part 2): 'auto' = the Triton kernel on CUDA, plain torch elsewhere
    loss_impl: str = 'auto'      # 'auto' | 'triton' | 'chunked' | 'torch'
    z_loss: float = 0.0          # PaLM's z-loss weight (1e-4 there): keeps log Z near 0; 0 = off

    def __post_init__(self):
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
        if targets is not None and impl in ('triton', 'chunked'):  # the fused paths (Part 2)
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


def gpt2_from_hf(hf_state, vocab_size=50304):
    """A Hugging Face GPT-2 state dict (GPT2LMHeadModel or GPT2Model) -> ours, for
    GPT(GPTConfig(vocab_size=50304, real_vocab_size=50257, bias=True, ...sizes...)).
    The names are the same; HF's GPT-2 uses Conv1D layers, which keep their weight as (in, out), the
    transpose of nn.Linear's (out, in), so those four weights are transposed. The attention-mask
    buffers are dropped, and wte gets zero rows for the padded vocabulary (lm_head is tied to it)."""
    ours = {}
    for name, tensor in hf_state.items():
        if name.endswith(('.attn.bias', '.attn.masked_bias')):  # causal-mask buffers, not weights
            continue
        name = name if name.startswith(('transformer.', 'lm_head.')) else 'transformer.' + name
        ours[name] = tensor.t().contiguous() if name.endswith(_CONV1D) else tensor
    wte = ours['transformer.wte.weight']
    if vocab_size > wte.shape[0]:
        wte = torch.cat([wte, wte.new_zeros(vocab_size - wte.shape[0], wte.shape[1])])
    ours['transformer.wte.weight'] = ours['lm_head.weight'] = wte
    return ours


def gpt2_to_hf(state, real_vocab_size=50257):
    """Ours -> a Hugging Face GPT2LMHeadModel state dict (gpt2_from_hf's inverse; GPT-2 layout only).
    An untied model's lm_head stays its own (GPT2Config(tie_word_embeddings=False) then)."""
    hf = {name: t.t().contiguous() if name.endswith(_CONV1D) else t for name, t in state.items()}
    for name in ('transformer.wte.weight', 'lm_head.weight'):
        hf[name] = state[name][:real_vocab_size]
    return hf


# -----------------------------------------------------------------------------------------------------
# Part 2: the loss.
#
# The logits of a batch are tokens x vocabulary: 65536 x 50304 in bf16 is 6.6 GB, more than the 124M
# model with its optimizer state. Unfused, F.cross_entropy reads them and writes log-probabilities,
# then the backward reads those and writes a gradient as large again. Yet all the loss needs is one
# sweep of each row: its maximum and sum of exponentials together (an "online" softmax rescales the
# running sum when the maximum grows), then the gradient softmax - onehot, which can go straight into
# the logits' own memory, since nothing reads them afterwards. The floor is one read and one write per
# logit (4 bytes in bf16). cross_entropy() below takes logits; its backward only scales the gradient
# by grad_output, and skips even that when it is 1. The model uses linear_cross_entropy(), which also
# runs lm_head's matmuls, so the backward scales only the small gradients of x and of the weight.
# Traps, each tested: row offsets need int64 (N * V passes 2^31); the true-class gradient p - 1 is
# computed in fp32 (a bf16 read-modify-write rounds p ~ 1 to 1 and the gradient to 0); ignored rows
# get zero gradient; all rows ignored gives 0, not 0/0; and writing over a tensor that autograd saved
# elsewhere fails loudly (the custom op bumps the version counter autograd checks).
# -----------------------------------------------------------------------------------------------------

INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'  # Triton's CPU interpreter: how the tests run it

if triton is not None:
    @triton.jit
    def _row_start(base, row, stride):
        # widen before multiplying: in int32, row * stride wraps once N * V passes 2^31
        return base + row.to(tl.int64) * stride

    @triton.jit
    def _grad(x, cols, target, lse, z_loss, scale):
        # d loss / d x = softmax * (1 + 2 z lse) - onehot, all in fp32: p - 1 for the true class is
        # never rounded to bf16 before the subtraction
        return (tl.exp(x - lse) * (1.0 + 2.0 * z_loss * lse) - tl.where(cols == target, 1.0, 0.0)) * scale

    @triton.jit
    def _cross_entropy_kernel(logits_ptr, stride, targets_ptr, loss_ptr, scale_ptr, n_cols, n_valid,
                              ignore_index, z_loss, WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
                              ONE_PASS: tl.constexpr):
        row = tl.program_id(0)  # one program per row (token)
        ptr = _row_start(logits_ptr, row, stride)
        target = tl.load(targets_ptr + row)
        cols = tl.arange(0, BLOCK)
        dtype = logits_ptr.dtype.element_ty
        if target == ignore_index:  # no loss, zero gradient
            tl.store(loss_ptr + row, 0.0)
            if WRITE_GRAD:
                for start in range(0, n_cols, BLOCK):
                    tl.store(ptr + start + cols, tl.zeros([BLOCK], dtype=tl.float32).to(dtype),
                             mask=start + cols < n_cols)
        else:
            if ONE_PASS:  # the row fits in one block: read it once and keep it in registers
                x = tl.load(ptr + cols, mask=cols < n_valid, other=float('-inf')).to(tl.float32)
                m = tl.max(x, axis=0)
                lse = m + tl.log(tl.sum(tl.exp(x - m), axis=0))
            else:  # online softmax: running max m, and sum d of exp(x - m) rescaled when m grows
                m, d = float('-inf'), 0.0
                for start in range(0, n_valid, BLOCK):
                    xs = tl.load(ptr + start + cols, mask=start + cols < n_valid, other=float('-inf'))
                    m_new = tl.maximum(m, tl.max(xs.to(tl.float32), axis=0))
                    d = d * tl.exp(m - m_new) + tl.sum(tl.exp(xs.to(tl.float32) - m_new), axis=0)
                    m = m_new
                lse = m + tl.log(d)  # log Z, in fp32
            x_true = tl.load(ptr + target).to(tl.float32)
            tl.store(loss_ptr + row, lse - x_true + z_loss * lse * lse)
            if WRITE_GRAD:  # the gradient goes over the logits; padding columns get 0
                scale = tl.load(scale_ptr)
                if ONE_PASS:
                    grad = _grad(x, cols, target, lse, z_loss, scale)
                    tl.store(ptr + cols, grad.to(dtype), mask=cols < n_cols)
                else:  # a second read of the row, mostly from L2: it was just read
                    for start in range(0, n_cols, BLOCK):
                        c = start + cols
                        xs = tl.load(ptr + c, mask=c < n_valid, other=float('-inf')).to(tl.float32)
                        grad = _grad(xs, c, target, lse, z_loss, scale)
                        tl.store(ptr + c, grad.to(dtype), mask=c < n_cols)

    @triton.jit
    def _scale_rows_kernel(grad_ptr, stride, g_ptr, g_stride, n_cols, BLOCK: tl.constexpr,
                           ONE_PASS: tl.constexpr):  # (ONE_PASS unused: the loop serves both)
        row = tl.program_id(0)
        g = tl.load(g_ptr + row * g_stride).to(tl.float32)
        if g != 1.0:  # loss.backward() passes 1: then no memory is touched, and no host sync asked why
            ptr = _row_start(grad_ptr, row, stride)
            cols = tl.arange(0, BLOCK)
            for start in range(0, n_cols, BLOCK):
                c = start + cols
                x = tl.load(ptr + c, mask=c < n_cols).to(tl.float32)
                tl.store(ptr + c, (x * g).to(grad_ptr.dtype.element_ty), mask=c < n_cols)


def _use_triton(t):
    return triton is not None and (t.is_cuda or (INTERPRET and t.device.type == 'cpu'))


def _launch(block, n_cols):
    """Columns per step of a row (a power of 2), warps, and whether one step covers the row. The
    default is a guess until measured on a GPU: python bench/ce.py --blocks=2048,4096,8192,65536"""
    block = block or min(1 << (n_cols - 1).bit_length(), 4096)
    return dict(BLOCK=block, num_warps=32 if block >= 32768 else min(16, max(4, block // 512)),
                ONE_PASS=block >= n_cols)


# custom ops: torch.compile sees one opaque call with a known output (no graph break, no host sync),
# and autograd learns the logits were overwritten (their version counter is bumped)
@torch.library.custom_op('model::cross_entropy_fwd', mutates_args=('logits',))
def _cross_entropy_fwd(logits: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, n_valid: int,
                       ignore_index: int, z_loss: float, write_grad: bool, block: int) -> torch.Tensor:
    """Per-row loss (float32); if write_grad, logits (N, V) become d loss / d logits times scale."""
    loss = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    if _use_triton(logits):
        n_rows, n_cols = logits.shape
        _cross_entropy_kernel[(n_rows,)](logits, logits.stride(0), targets, loss, scale, n_cols, n_valid,
                                         ignore_index, z_loss, write_grad, **_launch(block, n_cols))
        return loss
    x = logits[:, :n_valid].float()  # the same math in torch
    lse = torch.logsumexp(x, dim=1)
    keep = targets != ignore_index
    true = torch.where(keep, targets, 0)[:, None]
    loss.copy_(torch.where(keep, lse - x.gather(1, true)[:, 0] + z_loss * lse * lse, 0.0))
    if write_grad:
        grad = torch.exp(x - lse[:, None]) * (1.0 + 2.0 * z_loss * lse[:, None])
        grad.scatter_add_(1, true, torch.full_like(true, -1, dtype=grad.dtype))
        logits[:, :n_valid] = grad * (scale * keep)[:, None]
        logits[:, n_valid:] = 0
    return loss


@_cross_entropy_fwd.register_fake
def _(logits, targets, scale, n_valid, ignore_index, z_loss, write_grad, block):
    return logits.new_empty(logits.shape[0], dtype=torch.float32)


@torch.library.custom_op('model::scale_rows_', mutates_args=('grad',))
def _scale_rows(grad: torch.Tensor, g: torch.Tensor, block: int) -> None:
    """grad (N, V) *= g, one value per row, or one for all (g of stride 0)."""
    if _use_triton(grad):
        _scale_rows_kernel[(grad.shape[0],)](grad, grad.stride(0), g, g.stride(0), grad.shape[1],
                                             **_launch(block, grad.shape[1]))
    else:
        grad.copy_(grad.float() * g[:, None])


@_scale_rows.register_fake
def _(grad, g, block):
    return None


def _scale(targets, ignore_index, reduction, n_tokens):
    """1 / count for 'mean' (count = non-ignored targets, or n_tokens; at least 1: all ignored gives
    0, not 0/0), else 1. A device tensor: no host sync."""
    if reduction == 'mean':
        count = (targets != ignore_index).sum() if n_tokens is None else n_tokens
        count = torch.as_tensor(count, device=targets.device)
        return 1.0 / count.clamp(min=1).float()
    return torch.ones((), dtype=torch.float32, device=targets.device)


class _CrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, logits, targets, scale, n_valid, ignore_index, z_loss, reduction, inplace, block):
        in_place = inplace and logits.stride(1) == 1
        grad = logits if in_place else logits.clone(memory_format=torch.contiguous_format)
        rows = _cross_entropy_fwd(grad, targets, scale, n_valid, ignore_index, z_loss, True, block)
        ctx.save_for_backward(grad)  # after the write, so autograd checks this version
        ctx.block = block
        return rows if reduction == 'none' else rows.sum() * scale

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        _scale_rows(grad, grad_output.float().reshape(-1).expand(grad.shape[0]), ctx.block)
        return grad, None, None, None, None, None, None, None, None


def cross_entropy(logits, targets, ignore_index=-1, reduction='mean', z_loss=0.0, n_valid=None,
                  n_tokens=None, inplace=False, block=0):
    """Fused cross-entropy of logits (N, V) (float32/bf16/fp16, any strides) against targets (N,).

    reduction: 'mean' over non-ignored targets (or sum / n_tokens), 'sum', or 'none' (per row, 0 where
    ignored). z_loss adds z_loss * logZ^2 per row. Only the first n_valid columns are classes (the
    rest is padding: zero gradient). inplace=True writes the gradient over logits (when their last
    stride is 1): the logits are gone after this call, and if autograd saved them for another op, that
    op's backward raises an error. inplace=False works on a copy. Under no_grad only the loss is
    computed and logits are left alone. block: columns per kernel step (0 = automatic)."""
    n_valid, targets = n_valid or logits.shape[1], targets.contiguous()  # the kernel reads targets[row]
    scale = _scale(targets, ignore_index, reduction, n_tokens)
    if not (torch.is_grad_enabled() and logits.requires_grad):
        rows = _cross_entropy_fwd(logits if logits.stride(1) == 1 else logits.contiguous(), targets, scale,
                                  n_valid, ignore_index, z_loss, False, block)
        return rows if reduction == 'none' else rows.sum() * scale
    return _CrossEntropy.apply(logits, targets, scale, n_valid, ignore_index, z_loss, reduction, inplace,
                               block)


def cross_entropy_torch(logits, targets, ignore_index=-1, reduction='mean', z_loss=0.0, n_valid=None,
                        n_tokens=None):
    """Plain autograd torch with cross_entropy's semantics: the reference, and the off-GPU path."""
    x = logits[:, :n_valid or logits.shape[1]]
    x = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays fp64
    lse = torch.logsumexp(x, dim=1)
    keep = targets != ignore_index
    true = x.gather(1, torch.where(keep, targets, 0)[:, None])[:, 0]
    rows = torch.where(keep, lse - true + z_loss * lse * lse, 0.0)
    return rows if reduction == 'none' else rows.sum() * _scale(targets, ignore_index, reduction, n_tokens)


class _LinearCrossEntropy(torch.autograd.Function):
    """x (N, C) @ weight (V, C)^T, then cross-entropy, chunk by chunk of rows: each chunk's logits get
    their gradient from the kernel and are used at once for the gradients of x and weight, then freed.
    The same FLOPs as unfused (the backward's two matmuls run here in the forward), no N x V tensor
    left for the backward, which only scales the small gradients of x and weight by grad_output (a
    loss divided by the accumulation steps costs nothing extra); with chunk < N the logits never
    exist whole: chunk x V at a time."""

    @staticmethod
    def forward(ctx, x, weight, targets, scale, n_valid, ignore_index, z_loss, chunk, block):
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        for s in range(0, x.shape[0], chunk):
            logits = x[s:s + chunk] @ weight.t()
            rows = _cross_entropy_fwd(logits, targets[s:s + chunk], scale, n_valid, ignore_index, z_loss,
                                      True, block)  # the gradient lands in logits
            loss += rows.sum()
            grad_x[s:s + chunk] = logits @ weight
            grad_w += logits.t() @ x[s:s + chunk]
        ctx.save_for_backward(grad_x, grad_w.to(weight.dtype))
        return loss * scale

    @staticmethod
    def backward(ctx, grad_output):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_output, grad_w * grad_output, None, None, None, None, None, None, None


def linear_cross_entropy(x, weight, targets, ignore_index=-1, reduction='mean', z_loss=0.0, n_valid=None,
                         n_tokens=None, chunk=2048, block=0):
    """cross_entropy(x @ weight.T, targets) ('mean' or 'sum') without ever holding the (N, V) logits."""
    if reduction not in ('mean', 'sum'):
        raise ValueError("linear_cross_entropy supports reduction 'mean' or 'sum'")
    n_valid, targets = n_valid or weight.shape[0], targets.contiguous()
    scale = _scale(targets, ignore_index, reduction, n_tokens)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets, scale, n_valid, ignore_index, z_loss, chunk,
                                         block)
    loss = sum(_cross_entropy_fwd(x[s:s + chunk] @ weight.t(), targets[s:s + chunk], scale, n_valid,
                                  ignore_index, z_loss, False, block).sum()
               for s in range(0, x.shape[0], chunk))
    return loss * scale
