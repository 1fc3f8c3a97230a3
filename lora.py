"""
LoRA (Hu et al. 2021): continued pretraining that trains a small low-rank update of each weight
instead of the weight itself. train.py --lora_rank=R uses it; checkpoint.py and export.py call
merge_lora to turn a LoRA checkpoint back into one plain GPT.

The idea. A weight W (out x in) stays frozen; next to it sit two small trainable matrices, A (r x in)
and B (out x r), and the layer computes

    y = x W^T + scale * (x A^T) B^T,    scale = alpha / r     (rsLoRA: alpha / sqrt(r))

as if its weight were W + scale * B A, a matrix of rank at most r. B starts at zero, so at step 0 the
model is exactly the base model; A starts random, so B's gradient is not zero. Only A and B get
gradients and AdamW state: r * (in + out) numbers instead of in * out, a few percent of the model at
r = 16, which is what saves memory (no gradients or optimizer moments for the frozen weights) and, the
update being low-rank, limits how far the model can drift from what it knew (less forgetting).
Adding the update into the weight afterwards (merge_lora) gives an ordinary GPT, with no extra cost
at inference.

Targets (--lora_targets): the block Linears by name (c_attn: queries/keys/values, c_proj: the
attention's and the MLP's output projections, c_fc: the MLP's input), and lm_head, which GPT-2 ties to
the token embedding wte: one matrix, so one adapter serves both its uses, the embedding lookup
(row i of W + scale * B A is W[i] + scale * B[i] A) and the output layer; 'wte' names the same one.
An untied model (--tie_embeddings=false) has two matrices, and the lm_head target gives each its own
adapter.

How it is wired: A and B are parameters of the adapted module itself (names like
transformer.h.0.attn.c_attn.lora_A), and a forward hook adds the low-rank term to the module's
output, so DDP, FSDP2 and torch.compile see ordinary parameters. The output layer is the exception:
its update is added to the weight itself (model.GPT.head_weight, the one hook model.py has for this),
since the fused loss takes a weight, not a module, and since a low-rank term of its own would be a
second tokens x vocabulary tensor, the largest in the model; so that adapter has no dropout. The frozen weights get no gradient, so DDP has nothing of theirs to all-reduce
and AdamW holds no state for them.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCK_TARGETS = ('c_attn', 'c_proj', 'c_fc')
ALL_TARGETS = BLOCK_TARGETS + ('lm_head',)


def parse_targets(text):
    """'all', or a comma list of c_attn, c_proj, c_fc, lm_head (= wte: the output layer and the token embedding)."""
    names = ALL_TARGETS if text == 'all' else [t.strip() for t in text.split(',') if t.strip()]
    names = ['lm_head' if name == 'wte' else name for name in names]
    unknown = [name for name in names if name not in ALL_TARGETS]
    if unknown or not names:
        raise ValueError(f"--lora_targets={text}: expected 'all' or a comma list of "
                         f"{', '.join(ALL_TARGETS)} (wte: the same target as lm_head)")
    return tuple(dict.fromkeys(names))


def lora_scale(config):
    return config['alpha'] / (math.sqrt(config['rank']) if config['rslora'] else config['rank'])


def _attach(module, rank, dropout):
    """A (rank x in) random as nn.Linear's own init, B (out x rank) zero, on the module itself."""
    out_features, in_features = module.weight.shape
    module.lora_A = nn.Parameter(torch.empty(rank, in_features, device=module.weight.device))
    module.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=module.weight.device))
    nn.init.kaiming_uniform_(module.lora_A, a=math.sqrt(5))
    module.lora_dropout = nn.Dropout(dropout)


def _linear_hook(module, inputs, output):
    # y + scale * (dropout(x) A^T) B^T: two thin matmuls; W + scale * B A is never formed
    low_rank = F.linear(F.linear(module.lora_dropout(inputs[0]), module.lora_A), module.lora_B)
    return output + module.lora_scale * low_rank


def check_rank(rank, modules):
    """ValueError unless `rank` is below the smaller side of every weight it adapts (n_embd for every
    target): B A can then be any matrix of W's shape, stored in more numbers than W itself."""
    for name, module in modules:
        out_features, in_features = module.weight.shape
        if rank >= min(out_features, in_features):
            raise ValueError(f"--lora_rank={rank}: expected less than {min(out_features, in_features)}, the smaller "
                             f"side of {name}.weight ({out_features} x {in_features}); a rank that large is no "
                             f"low-rank adapter and takes more memory than the weight (typical LoRA ranks: 8 to 64)")


def add_lora(model, rank, alpha, dropout=0.0, rslora=False, targets='all'):
    """Freeze every parameter of the GPT `model` and give the target layers adapters (in place).
    Returns the LoRA config that a checkpoint stores next to the adapters."""
    config = dict(rank=rank, alpha=alpha, dropout=dropout, rslora=rslora, targets=parse_targets(targets))
    scale = lora_scale(config)
    blocks = [(f'transformer.h.{name}', module) for name, module in model.transformer.h.named_modules()
              if isinstance(module, nn.Linear) and name.rsplit('.', 1)[-1] in config['targets']]
    heads = [('lm_head', model.lm_head)] if 'lm_head' in config['targets'] else []
    check_rank(rank, blocks + heads)
    model.requires_grad_(False)
    for name, module in blocks:
        _attach(module, rank, dropout)
        module.lora_scale = scale
        module.register_forward_hook(_linear_hook)
    config['tied'] = model.config.tie_embeddings  # whether lm_head's adapter is wte's too
    if 'lm_head' in config['targets']:
        head, wte = model.lm_head, model.transformer.wte
        _attach(head, rank, 0.0)
        head.lora_scale = scale
        if not config['tied']:  # an untied embedding gets an adapter of its own, of the same shape
            _attach(wte, rank, 0.0)
        lookup = head if config['tied'] else wte
        # the embedding lookup: W[idx] + scale * B[idx] A
        wte.register_forward_hook(
            lambda module, inputs, output: output + scale * F.embedding(inputs[0], lookup.lora_B) @ lookup.lora_A)
        # the output layer: the update goes into the weight (vocabulary x width, small next to the matmul
        # with every token), so the logits exist once, as in full training
        model.head_weight = lambda: head.weight + scale * head.lora_B @ head.lora_A
    return config


def is_adapter(name):
    return '.lora_' in name


def split_state(state):
    """A LoRA model's state dict -> (base weights under plain GPT names, adapters)."""
    return ({k: v for k, v in state.items() if not is_adapter(k)},
            {k: v for k, v in state.items() if is_adapter(k)})


def merge_lora(model_state, lora):
    """The plain GPT state dict with each adapter added into its weight: W + scale * B A (for lm_head
    also into transformer.wte.weight when the two are tied; an untied wte has its own adapter).
    model_state = ckpt['model'] (the frozen base), lora = ckpt['lora'] (dict(config=..., adapters=...)).
    Computed in float32, stored in W's dtype."""
    scale = lora_scale(lora['config'])
    merged = dict(model_state)
    for key, A in lora['adapters'].items():
        if not key.endswith('.lora_A'):
            continue
        prefix = key[:-len('.lora_A')]
        B, W = lora['adapters'][prefix + '.lora_B'], model_state[prefix + '.weight']
        merged[prefix + '.weight'] = (W.float() + scale * (B.float() @ A.float())).to(W.dtype)
        if prefix == 'lm_head' and lora['config'].get('tied', True):  # older checkpoints: GPT-2's tied layout
            merged['transformer.wte.weight'] = merged['lm_head.weight']
    return merged

