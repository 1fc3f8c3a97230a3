"""
train.py's settings, the nanoGPT way (nanoGPT's configurator.py, with checks): the defaults are the
table SETTINGS below, (name, default, what it does); then config files, Python files of `key = value`
lines exec'd in order (config/PRESET.py); then --key=value flags (or --key value). The help text sits
next to each default, so `--help` says what every setting does, its default and allowed values.

    SETTINGS, CHOICES            the table, and the allowed values of the settings that have a list
    get_config(argv, ...)        defaults, then config files, then flags: a dict of every setting,
                                 and the names of the settings given as flags
    check(config, die, flags)    values that parse but make no sense (a batch of 0, a negative clip)

A typo must not silently train with the default: an unknown name is an error that names the closest
known one, a value of the wrong type, outside its allowed values or outside its range is a one-line
error.
"""

import argparse
import ast
import difflib
import glob
import os
import traceback

# settings: name, default (GPT-2 124M on data/tokens, as in nanoGPT; presets in config/), what it does
SETTINGS = [
    # I/O
    ('out_dir', 'out', "folder for ckpt.pt, log.jsonl and loss.png"),
    ('data', 'data/tokens', "shard folder of prepare.py, or a mixture: 'data/web:0.85,data/code:0.15' or "
                            "'web:0.85,code:0.15' with names from `sources`"),
    ('sources', {}, "config files: a dict of source name -> shard folder, for the names in data and stages"),
    ('stages', [], "config files: [(until_tokens, mixture), ...] in order, the last to the end of training "
                   "(until None); replaces data; with --schedule=wsd the decay is the final stage"),
    ('init_from', 'scratch', "'scratch', 'resume' (out_dir/ckpt.pt, exactly where it stopped), or a "
                             "checkpoint or Hugging Face GPT-2 folder to start from (weights only)"),
    ('eval_interval', 2000, "evaluate, then checkpoint, every this many steps"),
    ('eval_iters', 20, "val tokens per eval and per source = eval_iters x batch_tokens, always the same "
                       "windows (loader.val_windows), whatever batch_size and the number of processes"),
    ('log_interval', 1, "print and log the train loss every this many steps"),
    ('always_save_checkpoint', True, "false: checkpoint at an eval only when the val loss improved"),
    # data: one optimizer step sees batch_tokens tokens, reached by gradient accumulation
    ('batch_size', 12, "sequences per forward pass and process (lowered to share a step among processes)"),
    ('block_size', 1024, "context length in tokens"),
    ('batch_tokens', 491520, "tokens per optimizer step, all processes together (12 x 1024 x 40, nanoGPT's)"),
    ('gradient_accumulation_steps', 0, "nanoGPT's knob (all processes together): if > 0 it sets batch_tokens "
                                       "= it x batch_size x block_size"),
    # model: nanoGPT's names, then model.py's GPTConfig switches
    ('n_layer', 12, "transformer blocks"), ('n_head', 12, "attention heads"), ('n_embd', 768, "width"),
    ('vocab_size', 50304, "embedding rows: the tokenizer's, padded to a multiple of 64 for speed"),
    ('real_vocab_size', None, "ids below this are real tokens, the rest padding (default: the data's vocabulary)"),
    ('dropout', 0.0, "dropout rate (0 for pretraining)"),
    ('bias', False, "biases in Linears and LayerNorms (GPT-2 has them)"),
    ('tie_embeddings', True, "one matrix for the token embedding and the output layer, as GPT-2; "
                             "false: an output layer of its own"),
    ('n_kv_head', None, "grouped-query attention: key/value heads (default: n_head)"),
    ('rope', False, "rotary position embeddings instead of learned ones"),
    ('rope_theta', 10000.0, "RoPE's base"),
    ('norm', 'layernorm', "normalization"), ('mlp', 'gelu', "MLP kind"),
    ('loss_impl', 'auto', "cross-entropy: auto = the fused Triton kernel on CUDA, torch elsewhere"),
    ('z_loss', 0.0, "PaLM's z-loss weight (1e-4 there); 0 = off"),
    # LoRA (lora.py): train low-rank adapters of a frozen model, e.g. from --init_from=PATH
    ('lora_rank', 0, "rank r of the adapters; 0 = off (train every weight)"),
    ('lora_alpha', 32.0, "the adapters' update is scaled by alpha / r"),
    ('lora_dropout', 0.0, "dropout on the adapters' input"),
    ('rslora', False, "scale by alpha / sqrt(r) instead (rank-stabilized LoRA)"),
    ('lora_targets', 'all', "'all' or a comma list of c_attn, c_proj, c_fc, lm_head (also the token embedding, wte: "
                            "tied, the same adapter; untied, one of its own)"),
    ('lora_embedding_lr', 0.0, "learning rate of the token embedding's adapter (tied: the output layer's too, "
                               "one matrix); 0 = learning_rate (the LoRA guides use a tenth of it)"),
    # AdamW and the learning rate: linear warmup, then 'cosine' down to min_lr at lr_decay_iters, or 'wsd'
    # (warmup-stable-decay): constant, then linear down to min_lr over the last decay_frac of max_iters
    ('learning_rate', 6e-4, "peak learning rate"), ('max_iters', 600000, "optimizer steps in all"),
    ('embedding_lr', 0.0, "learning rate of the token embedding (tied or not); 0 = learning_rate. Not its LoRA "
                          "adapter's (lora_embedding_lr): a rate fit for the table's rows is not one for A and B"),
    ('weight_decay', 1e-1, "AdamW weight decay, on matrices and embeddings only"),
    ('beta1', 0.9, "AdamW beta1"), ('beta2', 0.95, "AdamW beta2"),
    ('grad_clip', 1.0, "clip the global gradient norm to this; 0 = no clipping"),
    ('schedule', 'cosine', "learning-rate schedule after warmup"),
    ('warmup_iters', 2000, "steps of linear warmup"), ('lr_decay_iters', 600000, "cosine: steps until min_lr"),
    ('min_lr', 6e-5, "the learning rate at the end of the decay"),
    ('decay_frac', 0.2, "wsd: the share of max_iters spent decaying (with stages: the final stage)"),
    # system
    ('device', 'auto', "'auto' (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps"),
    ('dtype', 'auto', "'auto' = bfloat16 on GPUs that have it, else float32"),
    ('compile', True, "torch.compile the model"),
    ('parallel', 'ddp', "under torchrun: replicate the model (ddp) or shard it (fsdp)"),
    ('seed', 1337, "seeds the weights, the data order and dropout"),
    ('skip_nonfinite', False, "a NaN/inf loss skips that step instead of stopping the run"),
]
CHOICES = dict(norm=('layernorm', 'rmsnorm'), mlp=('gelu', 'swiglu'), parallel=('ddp', 'fsdp'),
               loss_impl=('auto', 'triton', 'chunked', 'torch'), schedule=('cosine', 'wsd'),
               dtype=('auto', 'float32', 'bfloat16'))


def get_config(argv, settings, choices, description, die):
    """(a dict of every setting, the set of names given as --flags). settings: [(name, default, help)];
    choices: {name: allowed values}; die(message): stop with a one-line error."""
    config, helps = {k: v for k, v, _ in settings}, {k: h for k, _, h in settings}

    def unknown(key, where):
        close = difflib.get_close_matches(key, config, n=1)
        die(f"{where}unknown setting {key!r}" + (f"; did you mean {close[0]!r}?" if close else "; --help lists them"))

    def boolean(text):
        if text.lower() not in ('1', 'true', 'yes', '0', 'false', 'no'):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ('1', 'true', 'yes')

    def literal(text):  # for None defaults, dicts and lists: a Python literal, else the text
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     usage='%(prog)s [config/PRESET.py ...] [--key=value ...]')
    parser.add_argument('config_files', nargs='*', help='config/PRESET.py files, applied in order before the flags')
    for key, default in config.items():
        kind = boolean if type(default) is bool else literal if default is None or type(default) in (dict, list) \
            else type(default)
        allowed = f"; one of {', '.join(choices[key])}" if key in choices else ''
        parser.add_argument(f'--{key}', type=kind, default=argparse.SUPPRESS, metavar='VALUE' if default is None else type(default).__name__.upper(),
                            help=f"{helps[key]} (default: {default!r}{allowed})")
    flags, extra = parser.parse_known_intermixed_args(argv)
    if extra:
        unknown(extra[0].lstrip('-').split('=')[0], 'flag: ')
    flags = vars(flags)
    for path in flags.pop('config_files'):
        if not path.endswith('.py'):
            die(f"{path}: expected a config file (config/PRESET.py) or a --key=value flag")
        if not os.path.isfile(path):  # a typo in the preset's name, or the user's own preset not yet written
            presets = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config', '*.py')))
            die(f"{path}: no such config file (the presets: {', '.join('config/' + os.path.basename(f) for f in presets)})")
        values, text = {}, open(path).read()
        try:  # a typo in the file: its line and the error in one line, as for every other bad input
            exec(compile(text, path, 'exec'), values)
        except Exception as e:
            line = e.lineno if isinstance(e, SyntaxError) else \
                [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path][-1]
            die(f"{path}, line {line}: {type(e).__name__}: {e.msg if isinstance(e, SyntaxError) else e}")
        for key, value in values.items():
            if key.startswith('_') or callable(value) or type(value).__name__ == 'module':
                continue
            if key not in config:
                unknown(key, f"{path}: ")
            default = config[key]
            if type(value) is not type(default) and default is not None and \
                    (type(default), type(value)) not in ((float, int), (list, tuple)):
                die(f"{path}: {key} = {value!r} is a {type(value).__name__}, expected {type(default).__name__}")
            config[key] = float(value) if type(default) is float else value
    config.update(flags)
    for key, allowed in choices.items():
        if config[key] not in allowed:
            die(f"--{key}={config[key]}: expected one of {', '.join(allowed)}")
    return config, set(flags)


def check(config, die, flags=()):
    """train.py's settings that parse but make no sense, each a one-line error before any time is
    spent; and nanoGPT's gradient_accumulation_steps, which sets batch_tokens. flags: the names given
    on the command line."""
    out_dir = config['out_dir']
    if not isinstance(out_dir, str) or not out_dir.strip():  # '': a traceback from os.makedirs
        die(f"--out_dir={out_dir!r}: expected a folder for ckpt.pt, log.jsonl and loss.png (default: out)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):  # else a traceback
        die(f"--out_dir={out_dir} is a file; expected a folder (it is created if missing)")
    if config['init_from'] == 'resume' and not os.path.exists(os.path.join(out_dir, 'ckpt.pt')):
        die(f"nothing to resume in {out_dir} (no ckpt.pt): --init_from=resume continues the run saved "
            f"there; start one without it first")
    # a flag's text that is no Python literal stays a str: '--stages=foo' was the stages 'f', 'o', 'o',
    # '--sources=web' a str searched by substring, '--n_kv_head=two' a TypeError in the model
    for key, kinds, what in (('sources', dict, "a dict {name: folder}"),
                             ('stages', (list, tuple), "a list [(until_tokens, mixture), ...]"),
                             ('real_vocab_size', (int, type(None)), "a whole number >= 1"),
                             ('n_kv_head', (int, type(None)), "a whole number >= 1")):
        value = config[key]
        if not isinstance(value, kinds) or isinstance(value, bool) or (type(value) is int and value < 1):
            die(f"--{key}={value!r}: expected {what}")
    if config['stages'] and config['data'] != 'data/tokens':
        die("both --data and stages are set: stages name the data of each stage")
    if config['gradient_accumulation_steps'] > 0:
        config['batch_tokens'] = config['gradient_accumulation_steps'] * config['batch_size'] * config['block_size']
    # else a 0 crashes with a traceback (a modulo by zero, an empty val set), some only at the
    # first eval, and a negative grad_clip silently flips the gradient (clip_grad_norm_ scales by
    # max_norm / norm)
    for key in ('batch_size', 'block_size', 'batch_tokens', 'eval_interval', 'eval_iters',
                'log_interval'):
        if config[key] < 1:
            die(f"--{key}={config[key]}: expected a whole number >= 1")
    for key in ('max_iters', 'warmup_iters', 'learning_rate', 'min_lr', 'embedding_lr',
                'lora_embedding_lr', 'weight_decay', 'grad_clip', 'lora_rank'):
        if not config[key] >= 0:  # not >=: NaN is refused too
            die(f"--{key}={config[key]}: expected a number >= 0")
    # each a traceback later (AdamW's betas, numpy's seed), a one-line error from torch that names
    # no flag (dropout), or a run that trains silently wrong: dropout 1 zeroes every activation,
    # lora_alpha 0 scales the adapters' update to nothing, rope_theta 0 makes the loss NaN
    for key in ('beta1', 'beta2', 'dropout', 'lora_dropout'):
        if not 0 <= config[key] < 1:
            die(f"--{key}={config[key]}: expected a number from 0 up to, not including, 1")
    if not config['seed'] >= 0:
        die(f"--seed={config['seed']}: expected a whole number >= 0")
    for key in ('lora_alpha', 'rope_theta'):
        if not config[key] > 0:
            die(f"--{key}={config[key]}: expected a number > 0")
    if not 0 <= config['decay_frac'] <= 1:  # else wsd decays from before step 0, or never
        die(f"--decay_frac={config['decay_frac']}: expected a number from 0 to 1 (the share of max_iters "
            f"spent decaying)")
    for key in ('embedding_lr', 'lora_embedding_lr'):
        if config[key] and not config['learning_rate']:  # else a ZeroDivisionError, later
            die(f"--{key} needs --learning_rate > 0: its schedule is learning_rate's, scaled")
    # else the schedule jumps: the cosine runs from the end of the warmup to lr_decay_iters, so one
    # that ends first drops from the peak to min_lr in one step (past max_iters is fine: a run to
    # extend, whose cosine is cut off); and a min_lr above the peak makes the "decay" raise the rate
    # (a fine-tune at --learning_rate=1e-5 with the default min_lr of 6e-5)
    if config['schedule'] == 'cosine' and config['lr_decay_iters'] <= config['warmup_iters']:
        die(f"--lr_decay_iters={config['lr_decay_iters']}: expected more than --warmup_iters="
            f"{config['warmup_iters']} (the cosine decays from the end of the warmup to lr_decay_iters; "
            f"usually lr_decay_iters = max_iters)")
    if config['min_lr'] > config['learning_rate']:
        die(f"--min_lr={config['min_lr']:g} is above --learning_rate={config['learning_rate']:g}: the "
            f"decay would raise the rate; expected min_lr <= learning_rate (often a tenth of it, or 0)")
    # else ignored: the run trained every weight, the LoRA flag silently doing nothing (a config file
    # may set them for a later --lora_rank, so only flags count)
    for key in ('lora_alpha', 'lora_dropout', 'rslora', 'lora_targets', 'lora_embedding_lr'):
        if key in flags and not config['lora_rank']:
            die(f"--{key} needs --lora_rank > 0 (at rank 0 LoRA is off and every weight trains)")
