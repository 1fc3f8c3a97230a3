"""
Reading a trained model, for every script that uses one (train.py's resume and continued
pretraining, sample.py, eval.py, export.py).

    read_checkpoint(path)    a train.py checkpoint dict, checked (or ValueError with a one-line reason)
    check_crcs(path)         ValueError if a record of a torch.save zip fails its CRC-32 (a flipped bit)
    load_pretrained(path)    dict(model_args, model=state dict under our GPT's names, tokenizer=spec) from
                             a train.py checkpoint (LoRA adapters merged in) or a local Hugging Face folder
    load_model(path, device) (GPT in eval mode, tiktoken Encoding, checkpoint-like dict) from either
    check_device(name)       (device, its type) for a --device value: auto, cpu, cuda, cuda:N or mps

A checkpoint is one file, out/ckpt.pt, written by torch.save: a dict of tensors and plain data
(model weights under plain GPT names, optimizer state, step, config, model_args, the tokenizer spec,
the data position and RNG states). It is read with torch.load(weights_only=True): a checkpoint from
elsewhere is data and must not run code. Anything that is not a usable checkpoint gets a ValueError
with a one-line reason.

A Hugging Face folder is what save_pretrained (or export.py) writes: config.json, the weights as
safetensors (or pytorch_model.bin, read with weights_only=True) and the tokenizer. Two families map
onto model.py's GPT: GPT-2 (GPT2LMHeadModel, whose Conv1D weights are stored transposed) and Llama
(LlamaForCausalLM with model.py's SwiGLU width, embeddings tied or not: the layout export.py writes for
rope + rmsnorm + swiglu). The tokenizer must be one tiktoken can run: GPT-2's (recognised by its
vocabulary, and then recorded as 'gpt2' like our own checkpoints) or a byte-level BPE whose ids are in
merge order, as export.py writes ours.
"""

import base64
import functools
import json
import math
import mmap
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import torch

from model import GPT, GPTConfig, gpt2_from_hf, pad_rows
from tokenizer import ENDOFTEXT, GPT2_VOCAB, load_tokenizer, tokenizer_name

CHECKPOINT_VERSION = 1  # the format train.py writes; see DESIGN.md, "Checkpoints"
REQUIRED_KEYS = ("model", "model_args", "tokenizer", "version")
CRC_CHUNK = 8 << 20  # bytes per zlib.crc32 call


def check_crcs(path):
    """ValueError with a one-line reason if any record of the zip archive that torch.save wrote at `path`
    fails its CRC-32. torch.load checks none, so a flipped bit in a weight loads silently and eval or
    sample report garbage. Records stored with CRC 0 (torch writes 0 when told not to compute them,
    torch.serialization.set_crc32_options) are skipped. The file is mapped, not read into memory, and
    checked in chunks at zlib.crc32's speed (2 GB/s on one core)."""
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as data:
            for info in archive.infolist():
                if info.CRC != 0 and record_crc(archive, data, info) != info.CRC:
                    raise ValueError(f"damaged checkpoint {path} (CRC mismatch in {info.filename}): the file "
                                     f"changed after it was written (a bad disk or memory, an interrupted copy); "
                                     f"copy it again or use another checkpoint")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"damaged checkpoint {path} ({reason})") from None


def record_crc(archive, data, info):
    """The CRC-32 of one record's bytes; data: the whole file, mapped."""
    if info.compress_type != zipfile.ZIP_STORED:  # not torch's way: zipfile inflates it and checks
        try:
            with archive.open(info) as record:
                while record.read(CRC_CHUNK):
                    pass
            return info.CRC
        except zipfile.BadZipFile as e:
            if "CRC" in str(e):
                return None
            raise
    # torch stores records as they are: the bytes follow the local header (30 bytes, then a name and
    # an extra field of the lengths it gives)
    header = bytes(data[info.header_offset:info.header_offset + 30])
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.file_size > len(data):
        raise zipfile.BadZipFile(f"{info.filename} ends past the end of the file (truncated)")
    crc = 0
    for offset in range(start, start + info.file_size, CRC_CHUNK):
        crc = zlib.crc32(data[offset:min(offset + CRC_CHUNK, start + info.file_size)], crc)
    return crc


def read_checkpoint(path, map_location="cpu", mmap=False):
    """The checkpoint dict at `path`, after checking that it is one of ours."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (train a model first: python train.py ...)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{path}: not a PyTorch checkpoint (not a zip archive: truncated, or another kind of file)")
    check_crcs(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: holds objects other than tensors and plain data, which "
                         f"weights_only=True refuses to load (a checkpoint must not run code)") from None
    except Exception as e:  # a damaged archive: zip, CRC or storage errors
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"damaged checkpoint {path} ({reason})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, found a {type(ckpt).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a train.py checkpoint, missing key(s) {', '.join(missing)}")
    if ckpt["version"] != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {ckpt['version']!r}, "
                         f"this code reads version {CHECKPOINT_VERSION}")
    return ckpt


def load_pretrained(path):
    """dict(model_args=..., model=state dict with plain GPT names, tokenizer=spec) from a train.py
    checkpoint or a Hugging Face folder; also source (what it was) and, for a checkpoint, ckpt (the
    whole dict). The tensors may be memory-mapped from the file: load_state_dict copies them."""
    if os.path.isdir(path):
        return load_hf_folder(path)
    ckpt = read_checkpoint(path, mmap=True)  # mmap: the optimizer state is never read into memory
    # torch.compile wraps the model and prefixes every parameter name with '_orig_mod.'
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    if "lora" in ckpt:  # a LoRA fine-tune: the frozen base in 'model', the adapters beside it
        try:
            from lora import merge_lora
        except ImportError as e:
            raise ValueError(f"{path}: holds LoRA adapters, but lora.merge_lora cannot be imported "
                             f"to merge them ({e})") from None
        state = merge_lora(state, ckpt["lora"])
    return dict(model_args=dict(ckpt["model_args"]), model=state, tokenizer=ckpt["tokenizer"],
                source="train.py checkpoint", ckpt=ckpt)


def load_model(path, device="cpu"):
    """(model in eval mode on `device`, tokenizer, checkpoint dict) from a train.py checkpoint or a
    Hugging Face folder (for which the dict holds model_args, tokenizer and source)."""
    pretrained = load_pretrained(path)
    model_args = pretrained["model_args"]
    try:
        model = GPT(GPTConfig(**model_args))
        model.load_state_dict(pretrained["model"])
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:
        reason = " ".join(line.strip() for line in str(e).splitlines()[:2])[:300]
        raise ValueError(f"{path}: the weights do not fit the model described by model_args ({reason})") from None
    spec = pretrained["tokenizer"]
    try:
        enc = load_tokenizer(spec)
    except Exception as e:
        raise ValueError(f"{path}: cannot load its tokenizer {tokenizer_name(spec)} ({e})") from None
    if enc.n_vocab > model_args.get("vocab_size", enc.n_vocab):
        raise ValueError(f"{path}: tokenizer {tokenizer_name(spec)} has {enc.n_vocab} tokens, "
                         f"more than the model's vocab_size {model_args['vocab_size']}")
    model.eval().to(device)
    ckpt = pretrained.get("ckpt") or dict(model_args=model_args, tokenizer=spec, source=pretrained["source"])
    return model, enc, ckpt


def best_device():
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_device(name):
    """(device, device type) for the --device value `name` of train.py, sample.py or eval.py: auto is
    best_device(). A typo or a device this machine lacks is a ValueError with a one-line reason, here,
    not a traceback from deep inside torch once the model is built."""
    device = best_device() if name == "auto" else name
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device={device}: expected auto, cpu, cuda, cuda:N or mps")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device={device}: CUDA is not available on this machine (torch {torch.__version__}"
                         f"{', a build without CUDA' if torch.version.cuda is None else ''}); use --device=cpu")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device={device}: this machine has {torch.cuda.device_count()} GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device={device}: Apple's MPS is not available on this machine; use --device=cpu")
    return device, parsed.type


# -----------------------------------------------------------------------------------------------
# Hugging Face folders


def load_hf_folder(folder):
    """load_pretrained for a local Hugging Face folder of the GPT-2 or Llama family."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        # --ckpt=out (train.py's --out_dir) is the likeliest way here: name the file that was meant
        ckpt = folder / "ckpt.pt"
        hint = f"; the checkpoint is the file {ckpt}" if ckpt.is_file() else ""
        raise ValueError(f"{folder}: not a Hugging Face model folder (config.json: {e}){hint}") \
            from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in ("gpt2", "llama"):
        raise ValueError(f"{folder}: model_type {kind!r}; model.py's GPT can load 'gpt2' (GPT2LMHeadModel) "
                         f"and 'llama' (LlamaForCausalLM) folders")
    hf_state = read_hf_weights(folder)
    tokenizer = tokenizer_from_hf(folder)
    try:
        n_vocab = config["vocab_size"]
        padded = 64 * math.ceil(n_vocab / 64)  # as nanoGPT pads 50257 to 50304: faster matmuls
        if kind == "gpt2":
            model_args = gpt2_args(config)
            state = gpt2_from_hf(hf_state, padded, model_args["tie_embeddings"])
        else:
            model_args = llama_args(config)
            state = llama_from_hf(hf_state, model_args, padded)
    except KeyError as e:
        raise ValueError(f"{folder}: config.json or the weights lack {e} for a {kind} model") from None
    model_args.update(vocab_size=padded, real_vocab_size=n_vocab if n_vocab < padded else None)
    return dict(model_args=model_args, model=state, tokenizer=tokenizer, source=f"Hugging Face {kind} folder")


def read_hf_weights(folder):
    """All tensors of a folder: model.safetensors (or its shards), else pytorch_model.bin."""
    from safetensors.torch import load_file as load_safetensors

    def load_file(path):  # a truncated or damaged file: one line naming it, not a traceback
        try:
            return load_safetensors(path)
        except Exception as e:
            raise ValueError(f"{path}: not readable safetensors ({e})") from None

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").exists():
        return load_file(folder / "model.safetensors")
    if index.exists():
        files = sorted(set(read_json(index)["weight_map"].values()))
        return {k: v for name in files for k, v in load_file(folder / name).items()}
    if (folder / "pytorch_model.bin").exists():
        if zipfile.is_zipfile(folder / "pytorch_model.bin"):  # else torch's legacy format, without CRCs
            check_crcs(folder / "pytorch_model.bin")
        try:
            return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise ValueError(f"{folder / 'pytorch_model.bin'}: cannot read it with weights_only=True ({e})") from None
    raise ValueError(f"{folder}: no model.safetensors or pytorch_model.bin")


def read_json(path):
    """A JSON file of a Hugging Face folder, or ValueError naming it (json's message does not)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def _require(config, checks):
    for key, ok, expected in checks:
        if not ok(config.get(key)):
            raise ValueError(f"config.json has {key}={config.get(key)!r}, but model.py's GPT needs {expected}")


def gpt2_args(config):
    _require(config, [
        ("activation_function", lambda v: v in ("gelu_new", "gelu_pytorch_tanh"), "the tanh GELU (gelu_new)"),
        ("n_inner", lambda v: v in (None, 4 * config["n_embd"]), "n_inner = 4 * n_embd"),
        ("layer_norm_epsilon", lambda v: v == 1e-5, "1e-5"),
        ("scale_attn_by_inverse_layer_idx", lambda v: not v, "false"),
        ("scale_attn_weights", lambda v: v in (None, True), "true")])
    return dict(n_layer=config["n_layer"], n_head=config["n_head"], n_embd=config["n_embd"],
                block_size=config["n_positions"], bias=True, dropout=0.0,
                tie_embeddings=config.get("tie_word_embeddings", True))  # GPT2Config's default: tied


def llama_args(config):
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    rope = config.get("rope_parameters") or {"rope_theta": config.get("rope_theta", 10000.0),
                                             "rope_type": (config.get("rope_scaling") or {}).get("rope_type", "default")}
    _require(config, [
        ("hidden_act", lambda v: v == "silu", "silu (SwiGLU)"),
        ("head_dim", lambda v: v in (None, n_embd // n_head), f"hidden_size / num_attention_heads = {n_embd // n_head}"),
        ("intermediate_size", lambda v: v == 64 * math.ceil(8 * n_embd / 3 / 64),
         f"model.py's SwiGLU width {64 * math.ceil(8 * n_embd / 3 / 64)}"),
        ("rms_norm_eps", lambda v: v == 1e-6, "1e-6"),
        ("mlp_bias", lambda v: bool(v) == bool(config.get("attention_bias")), "the same as attention_bias")])
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"config.json asks for {rope['rope_type']!r} rope scaling; model.py has plain rope")
    n_kv_head = config.get("num_key_value_heads") or n_head
    return dict(n_layer=config["num_hidden_layers"], n_head=n_head, n_embd=n_embd,
                n_kv_head=None if n_kv_head == n_head else n_kv_head, block_size=config["max_position_embeddings"],
                bias=bool(config.get("attention_bias")), rope=True, rope_theta=float(rope["rope_theta"]),
                norm="rmsnorm", mlp="swiglu", dropout=0.0,
                tie_embeddings=config.get("tie_word_embeddings", False))  # LlamaConfig's default: untied


def llama_from_hf(hf, model_args, vocab_size):
    """A LlamaForCausalLM state dict -> ours (export.py's llama_state, inverted): q, k and v are row
    blocks of our c_attn, gate and up of our c_fc."""
    hf = {k.removeprefix("model."): v for k, v in hf.items()}
    wte = pad_rows(hf["embed_tokens.weight"], vocab_size)
    head = wte if model_args["tie_embeddings"] else pad_rows(hf["lm_head.weight"], vocab_size)
    state = {"transformer.wte.weight": wte, "lm_head.weight": head, "transformer.ln_f.weight": hf["norm.weight"]}
    for i in range(model_args["n_layer"]):
        ours, theirs = f"transformer.h.{i}.", f"layers.{i}."
        state[ours + "ln_1.weight"] = hf[theirs + "input_layernorm.weight"]
        state[ours + "ln_2.weight"] = hf[theirs + "post_attention_layernorm.weight"]
        for kind in ("weight", "bias") if model_args["bias"] else ("weight",):
            state[ours + f"attn.c_attn.{kind}"] = torch.cat([hf[theirs + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            state[ours + f"attn.c_proj.{kind}"] = hf[theirs + f"self_attn.o_proj.{kind}"]
            state[ours + f"mlp.c_fc.{kind}"] = torch.cat([hf[theirs + f"mlp.{p}_proj.{kind}"] for p in ("gate", "up")])
            state[ours + f"mlp.c_proj.{kind}"] = hf[theirs + f"mlp.down_proj.{kind}"]
    return state


# -----------------------------------------------------------------------------------------------
# byte-level BPE tokenizers as Hugging Face and llama.cpp store them


def bytes_to_unicode():
    """GPT-2's table from each byte to a printable character (printable ASCII and Latin-1 stand for
    themselves, the rest get characters from 256 up: the space becomes 'Ġ'), so that a vocabulary of
    byte strings can be written as text. tokenizer.json, vocab.json and GGUF all spell tokens this way."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def token_text(token_bytes):
    return "".join(BYTE_TO_CHAR[b] for b in token_bytes)


def tokenizer_from_hf(folder):
    """The tokenizer spec of a Hugging Face folder: 'gpt2' when it is GPT-2's vocabulary, else a spec
    dict (name, pattern, vocab as .tiktoken text, special_tokens) for tiktoken."""
    from tiktoken_ext.openai_public import r50k_pat_str

    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        data = read_json(folder / "tokenizer.json")
        model = data.get("model", {})
        if model.get("type") != "BPE":
            raise ValueError(f"{folder / 'tokenizer.json'}: a {model.get('type')} tokenizer; tiktoken runs byte-level BPE only")
        vocab, merges = model["vocab"], model.get("merges", [])
        specials = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")}
        pattern = _split_pattern(data.get("pre_tokenizer"), r50k_pat_str, folder / "tokenizer.json")
    elif (folder / "vocab.json").exists():
        vocab = read_json(folder / "vocab.json")
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines() if (folder / "merges.txt").exists() else []
        merges = [line for line in lines if line and not line.startswith("#version")]
        specials, pattern = {ENDOFTEXT: vocab[ENDOFTEXT]} if ENDOFTEXT in vocab else {}, r50k_pat_str
    else:
        raise ValueError(f"{folder}: no tokenizer.json or vocab.json")
    ranks = {}
    for text, token_id in vocab.items():
        if text in specials:
            continue
        try:
            ranks[bytes(CHAR_TO_BYTE[c] for c in text)] = token_id
        except KeyError:
            raise ValueError(f"{folder}: token {text!r} is not byte-level BPE (GPT-2's byte alphabet)") from None
    if specials == {ENDOFTEXT: 50256} and pattern == r50k_pat_str and ranks == _gpt2_ranks():
        return "gpt2"
    # tiktoken merges by the rank of the merged token, Hugging Face by the merge's place in the list:
    # the two agree only when every merge makes a token of a higher id than the merges before it
    last = -1
    for line_number, merge in enumerate(merges, start=1):
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        token_id = vocab.get(a + b)
        if token_id is None or token_id <= last:
            raise ValueError(f"{folder}: merge {line_number} ({a!r} + {b!r}) is out of id order, so tiktoken "
                             f"cannot reproduce this tokenizer")
        last = token_id
    if ENDOFTEXT not in specials:
        raise ValueError(f"{folder}: the tokenizer has no {ENDOFTEXT} special token, which our documents start with")
    text = "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))
    return dict(name=folder.name, pattern=pattern, vocab=text, special_tokens=specials)


def _split_pattern(pre_tokenizer, gpt2_pattern, where):
    """The pre-tokenization regex of a tokenizer.json: a Split step's pattern, or GPT-2's when the
    ByteLevel step splits with its built-in regex."""
    steps = (pre_tokenizer or {}).get("pretokenizers", [pre_tokenizer] if pre_tokenizer else [])
    for step in steps:
        if step.get("type") == "Split" and "Regex" in step.get("pattern", {}):
            return step["pattern"]["Regex"]
        if step.get("type") == "ByteLevel" and step.get("use_regex", True):
            if step.get("add_prefix_space"):
                raise ValueError(f"{where}: add_prefix_space=true, which tiktoken does not do")
            return gpt2_pattern
    raise ValueError(f"{where}: no pre-tokenization regex (a Split or ByteLevel step) found")


@functools.lru_cache(maxsize=1)
def _gpt2_ranks():
    from tiktoken.load import load_tiktoken_bpe
    load_tokenizer("gpt2")  # checks the file's sha256
    return load_tiktoken_bpe(str(GPT2_VOCAB))
