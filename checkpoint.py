"""
Reading what train.py saves, for every script that uses a trained model (train.py's resume and
continued pretraining, sample.py, eval.py, export.py).

A checkpoint is one file, out/ckpt.pt, written by torch.save: a dict of tensors and plain data
(model weights under plain GPT names, optimizer state, step, config, model_args, the tokenizer spec,
the data position and RNG states). It is read with torch.load(weights_only=True): a checkpoint from
elsewhere is data and must not run code. Anything that is not a usable checkpoint gets a ValueError
with a one-line reason.
"""

import os
import pickle
import zipfile

import torch

from model import GPT, GPTConfig
from tokenizer import load_tokenizer, tokenizer_name

CHECKPOINT_VERSION = 1  # the format train.py writes; see DESIGN.md, "Checkpoints"
REQUIRED_KEYS = ("model", "model_args", "tokenizer", "version")


def read_checkpoint(path, map_location="cpu", mmap=False):
    """The checkpoint dict at `path`, after checking that it is one of ours."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (train a model first: python train.py ...)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{path}: not a PyTorch checkpoint (not a zip archive: truncated, or another kind of file)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: holds objects other than tensors and plain data, which "
                         f"weights_only=True refuses to load (a checkpoint must not run code)") from None
    except Exception as e:  # a damaged archive: zip, CRC or storage errors
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: damaged checkpoint ({reason})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, found a {type(ckpt).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a train.py checkpoint, missing key(s) {', '.join(missing)}")
    if ckpt["version"] != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {ckpt['version']!r}, "
                         f"this code reads version {CHECKPOINT_VERSION}")
    return ckpt


def load_model(path, device="cpu"):
    """(model in eval mode on `device`, tokenizer, checkpoint dict) from a train.py checkpoint."""
    ckpt = read_checkpoint(path)
    try:
        model = GPT(GPTConfig(**ckpt["model_args"]))
        # torch.compile wraps the model and prefixes every parameter name with '_orig_mod.'
        state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:
        reason = " ".join(line.strip() for line in str(e).splitlines()[:2])[:300]
        raise ValueError(f"{path}: the weights do not fit the model described by model_args ({reason})") from None
    try:
        enc = load_tokenizer(ckpt["tokenizer"])
    except Exception as e:
        raise ValueError(f"{path}: cannot load its tokenizer {tokenizer_name(ckpt['tokenizer'])} ({e})") from None
    if enc.n_vocab > ckpt["model_args"].get("vocab_size", enc.n_vocab):
        raise ValueError(f"{path}: tokenizer {tokenizer_name(ckpt['tokenizer'])} has {enc.n_vocab} tokens, "
                         f"more than the model's vocab_size {ckpt['model_args']['vocab_size']}")
    model.eval().to(device)
    return model, enc, ckpt
