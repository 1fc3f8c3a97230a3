"""
Export a trained model so that other software runs it: a Hugging Face folder (transformers, vLLM,
lm-evaluation-harness, the Hub) or one GGUF file (llama.cpp, Ollama, LM Studio).

    python export.py --ckpt=out/ckpt.pt --format=hf --out=out/hf
    python export.py --ckpt=out/ckpt.pt --format=gguf --dtype=q8_0 --out=out/model-q8_0.gguf
    python export.py --ckpt=path/to/hf_gpt2_folder --format=gguf      # any folder load_pretrained reads

Our GPT is one of two standard architectures, depending on model.py's switches:
- GPT-2 layout (learned positions, LayerNorm, GELU, full attention heads) -> GPT2LMHeadModel / gguf
  'gpt2'. Hugging Face's GPT-2 keeps its Linear weights transposed (Conv1D); bias=False is written
  as zero biases, which GPT-2 always has.
- modern layout (rope, rmsnorm, swiglu, any n_kv_head) -> LlamaForCausalLM / gguf 'llama'. Our fused
  c_attn is split into q, k, v and c_fc into gate, up. model.py rotates the pairs (x[i], x[i + d/2])
  ('rotate half'), as transformers' Llama does, so the HF weights are ours; llama.cpp's llama rotates
  neighbouring pairs (x[2i], x[2i+1]), so for GGUF the rows of each q and k head are permuted (as
  llama.cpp's convert_hf_to_gguf.py does for every HF Llama) to make the same dot products.
Anything else (say learned positions with SwiGLU) is no standard architecture: an error names the
switch. The padded vocabulary rows (50257 -> 50304) are dropped; a tied embedding stays one matrix
in the file, an untied model (tie_embeddings=False) also writes its output layer (HF lm_head, GGUF
output). The tokenizer goes along: as tokenizer.json for transformers, as the tokens, merges and
pre-tokenizer name llama.cpp expects in GGUF. A tiktoken vocabulary is a list of ranks; these formats
want BPE merges, so each token's merge is recovered by running BPE on its bytes with only the lower
ranks allowed (the last step leaves exactly two parts: the merge).
Both formats prepend <|endoftext|> to a prompt, as every training document began with it.
"""

import argparse
import functools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import regex
import torch

from checkpoint import load_pretrained, token_text
from common import HOST, atomic_path, fail
from model import GPTConfig
from tokenizer import ENDOFTEXT, load_tokenizer, tokenizer_name

HF_FILES = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"}  # what write_hf writes
DTYPES = {"hf": ("f32", "f16", "bf16"), "gguf": ("f32", "f16", "q8_0")}
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

# -----------------------------------------------------------------------------------------------
# which architecture


def architecture(model_args):
    """'gpt2' or 'llama' for these model.py switches, or ValueError naming the switch that fits neither."""
    c = GPTConfig(**model_args)
    full_heads = c.n_kv_head in (None, c.n_head)
    if not c.rope and c.norm == "layernorm" and c.mlp == "gelu" and full_heads:
        return "gpt2"
    if c.rope and c.norm == "rmsnorm" and c.mlp == "swiglu":
        return "llama"
    family, switches = ("Llama (LlamaForCausalLM, gguf llama)", dict(norm="rmsnorm", mlp="swiglu")) if c.rope else \
        ("GPT-2 (GPT2LMHeadModel, gguf gpt2)", dict(norm="layernorm", mlp="gelu", n_kv_head=None))
    odd = [f"{k}={getattr(c, k)!r}" for k, v in switches.items()
           if getattr(c, k) != v and not (k == "n_kv_head" and full_heads)]
    raise ValueError(f"no standard architecture has rope={c.rope} with {' and '.join(odd)}: "
                     f"{'rope' if c.rope else 'learned positions'} means {family}, which needs "
                     f"{', '.join(f'{k}={v!r}' for k, v in switches.items())}; the other family needs rope="
                     f"{not c.rope}")


# -----------------------------------------------------------------------------------------------
# weights under Hugging Face's names (the GGUF writer maps these to llama.cpp's, as its converter does)


def hf_tensors(state, model_args, n_vocab):
    """Our state dict -> Hugging Face names, tensors in our dtype. The GPT-2 Conv1D weights are
    transposed views (made contiguous when written). The output layer is written only when untied
    (a Linear in both families, not a Conv1D); tied, both formats reuse the embedding."""
    c = GPTConfig(**model_args)
    out = {}
    if architecture(model_args) == "gpt2":
        def get(name, shape):  # bias=False: GPT-2 has biases everywhere, so they are zeros
            return state.get(name, torch.zeros(shape, dtype=state["transformer.wte.weight"].dtype))
        out["transformer.wte.weight"] = state["transformer.wte.weight"][:n_vocab]
        out["transformer.wpe.weight"] = state["transformer.wpe.weight"]
        for i in range(c.n_layer):
            p = f"transformer.h.{i}."
            for module, width in (("ln_1", c.n_embd), ("attn.c_attn", 3 * c.n_embd), ("attn.c_proj", c.n_embd),
                                  ("ln_2", c.n_embd), ("mlp.c_fc", 4 * c.n_embd), ("mlp.c_proj", c.n_embd)):
                weight = state[p + module + ".weight"]
                out[p + module + ".weight"] = weight if module.startswith("ln") else weight.t()
                out[p + module + ".bias"] = get(p + module + ".bias", width)
        out["transformer.ln_f.weight"] = state["transformer.ln_f.weight"]
        out["transformer.ln_f.bias"] = get("transformer.ln_f.bias", c.n_embd)
        return out | head(state, c, n_vocab)
    head_dim, kv = c.n_embd // c.n_head, c.n_kv_head or c.n_head
    out["model.embed_tokens.weight"] = state["transformer.wte.weight"][:n_vocab]
    for i in range(c.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        out[theirs + "input_layernorm.weight"] = state[ours + "ln_1.weight"]
        out[theirs + "post_attention_layernorm.weight"] = state[ours + "ln_2.weight"]
        for kind in ("weight", "bias") if c.bias else ("weight",):
            q, k, v = state[ours + f"attn.c_attn.{kind}"].split([c.n_embd, kv * head_dim, kv * head_dim])
            gate, up = state[ours + f"mlp.c_fc.{kind}"].chunk(2)
            out.update({theirs + f"self_attn.q_proj.{kind}": q, theirs + f"self_attn.k_proj.{kind}": k,
                        theirs + f"self_attn.v_proj.{kind}": v,
                        theirs + f"self_attn.o_proj.{kind}": state[ours + f"attn.c_proj.{kind}"],
                        theirs + f"mlp.gate_proj.{kind}": gate, theirs + f"mlp.up_proj.{kind}": up,
                        theirs + f"mlp.down_proj.{kind}": state[ours + f"mlp.c_proj.{kind}"]})
    out["model.norm.weight"] = state["transformer.ln_f.weight"]
    return out | head(state, c, n_vocab)


def head(state, c, n_vocab):
    return {} if c.tie_embeddings else {"lm_head.weight": state["lm_head.weight"][:n_vocab]}


def hf_config(model_args, arch, n_vocab, eot, dtype):
    c = GPTConfig(**model_args)
    common = dict(vocab_size=n_vocab, bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=c.tie_embeddings,
                  torch_dtype={"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype], use_cache=True)
    if arch == "gpt2":
        return dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", n_positions=c.block_size,
                    n_ctx=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_inner=None,
                    activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0,
                    attn_pdrop=0.0, scale_attn_weights=True, initializer_range=0.02, **common)
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=c.n_embd,
                intermediate_size=64 * math.ceil(8 * c.n_embd / 3 / 64), num_hidden_layers=c.n_layer,
                num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head or c.n_head,
                head_dim=c.n_embd // c.n_head, hidden_act="silu", max_position_embeddings=c.block_size,
                rms_norm_eps=1e-6, rope_theta=c.rope_theta, rope_scaling=None, attention_bias=c.bias,
                mlp_bias=c.bias, attention_dropout=0.0, initializer_range=0.02, **common)


# -----------------------------------------------------------------------------------------------
# the tokenizer: tiktoken ranks -> BPE tokens and merges


def split_pattern(enc):
    return enc._pat_str  # the pre-tokenization regex (tiktoken has no public accessor for it)


def vocabulary(enc):
    """(tokens, specials, merges) of a tiktoken Encoding: every id's text in GPT-2's byte-to-character
    spelling (a placeholder for an id that stands for nothing), the special ids, and the merges in
    rank order as 'left right' strings."""
    specials = {enc.encode_single_token(s): s for s in enc.special_tokens_set}
    ranks, tokens = {}, []
    for token_id in range(enc.n_vocab):
        if token_id in specials:
            tokens.append(specials[token_id])
            continue
        try:
            token_bytes = enc.decode_single_token_bytes(token_id)
        except KeyError:  # a gap in the ranks
            tokens.append(f"<|unused_{token_id}|>")
            continue
        ranks[token_bytes] = token_id
        tokens.append(token_text(token_bytes))
    return tokens, specials, _merges(tuple(sorted(ranks.items(), key=lambda kv: kv[1])))


@functools.lru_cache(maxsize=4)  # GPT-2's 50,000 merges take ~2 s to recover
def _merges(ranked):
    ranks = dict(ranked)
    merges = []
    for token_bytes, rank in ranked:
        if len(token_bytes) == 1:
            continue
        parts = [bytes([b]) for b in token_bytes]
        while len(parts) > 2:  # BPE with only the merges of lower rank: the likeliest pair first
            pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
            best = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[best] >= rank:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {rank} ({token_bytes!r}) is not the merge of two tokens of lower "
                             f"rank: BPE merges cannot express this vocabulary")
        merges.append(f"{token_text(parts[0])} {token_text(parts[1])}")
    return merges


def tokenizer_json(enc):
    """tokenizer.json (the `tokenizers` library's format): the pattern splits the text, the byte-level
    step spells bytes as characters, BPE applies the merges (ignore_merges: a piece that is itself a
    token stays whole, as in tiktoken), and the post-processor puts <|endoftext|> first."""
    tokens, specials, merges = vocabulary(enc)
    eot = enc.eot_token
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [dict(id=i, content=s, single_word=False, lstrip=False, rstrip=False, normalized=False,
                              special=True) for i, s in sorted(specials.items())],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split_pattern(enc)}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": ENDOFTEXT, "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": ENDOFTEXT, "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": ENDOFTEXT, "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {ENDOFTEXT: {"id": ENDOFTEXT, "ids": [eot], "tokens": [ENDOFTEXT]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }


# llama.cpp's pre-tokenizers are built in, chosen by name; their regexes as llama.cpp's
# src/llama-vocab.cpp spells them (unmatched text becomes a piece of its own there)
LLAMA_CPP_PRE = {
    "gpt-2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    "llama-bpe": r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
                 r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
# text on which two split patterns differ if they differ at all in practice: contractions in both
# cases, digit runs, punctuation before newlines, runs of spaces, tabs and newlines, several scripts
PROBE = ("I'm   He'LL they've DON'T we'd 1 12 123 1234 12345 3.14159 $1,000,000 ...\n\n\n  x\t\ty  \r\n"
         "naïve café Ünïcödé Ελληνικά русский 日本語の文 中文 한국어 العربية हिन्दी 🙂👍🏽 👨‍👩‍👧 "
         "def f(x):\n    return x**2  # comment\n\n\nend!!!\n   \n\t\n ?!. ;) <br/> a\u00a0b\u2003c   ")


def _split(pattern, text):
    pieces, end = [], 0
    for m in regex.finditer(pattern, text):
        if m.start() > end:
            pieces.append(text[end:m.start()])
        pieces.append(m.group())
        end = m.end()
    return pieces + ([text[end:]] if end < len(text) else [])


def llama_cpp_pre(pattern):
    """The llama.cpp pre-tokenizer that splits PROBE exactly as `pattern` does, or ValueError."""
    ours = _split(pattern, PROBE)
    for name, theirs in LLAMA_CPP_PRE.items():
        if _split(theirs, PROBE) == ours:
            return name
    raise ValueError(f"llama.cpp has no pre-tokenizer that splits text like this tokenizer's pattern "
                     f"{pattern!r} (checked: {', '.join(LLAMA_CPP_PRE)}); export --format=hf works with any pattern")


# -----------------------------------------------------------------------------------------------
# writing


def write_safetensors(path, tensors, dtype):
    """A .safetensors file, written one tensor at a time so that memory holds one converted tensor,
    not a copy of the model: 8 bytes giving the header's length, the JSON header (each tensor's dtype,
    shape and byte range in the data; padded with spaces to a multiple of 8), then the raw
    little-endian data. Returns the bytes of tensor data."""
    code = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors.items():
        size = t.numel() * dtype.itemsize
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for t in tensors.values():
            f.write(t.to(dtype).contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return offset


def write_hf(out, tensors, config, enc, block_size, dtype):
    size = write_safetensors(out / "model.safetensors", tensors, TORCH_DTYPES[dtype])
    eot = enc.eot_token
    files = {
        "config.json": config,
        "generation_config.json": dict(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot),
        "tokenizer.json": tokenizer_json(enc),
        "tokenizer_config.json": dict(tokenizer_class="PreTrainedTokenizerFast", bos_token=ENDOFTEXT,
                                      eos_token=ENDOFTEXT, unk_token=ENDOFTEXT, pad_token=ENDOFTEXT,
                                      add_bos_token=True, model_max_length=block_size,
                                      clean_up_tokenization_spaces=False),
        "special_tokens_map.json": dict(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT,
                                        pad_token=ENDOFTEXT),
    }
    for name, obj in files.items():
        (out / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return size


def llama_cpp_rows(weight, n_head):
    """Reorder the rows of each head of a q or k projection (or bias) from rotate-half pairs
    (i, i + d/2) to llama.cpp's neighbouring pairs (2i, 2i + 1): head rows [a0..a(d/2-1), b0..] become
    [a0, b0, a1, b1, ...]. The attention scores do not change: q and k are permuted alike."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def write_gguf(path, tensors, model_args, arch, enc, dtype, name):
    import gguf

    c = GPTConfig(**model_args)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head or c.n_head)
    if arch == "gpt2":
        writer.add_feed_forward_length(4 * c.n_embd)
        writer.add_layer_norm_eps(1e-5)
    else:
        writer.add_feed_forward_length(64 * math.ceil(8 * c.n_embd / 3 / 64))
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_rope_freq_base(c.rope_theta)
        writer.add_rope_dimension_count(c.n_embd // c.n_head)
    file_type = dict(f32=gguf.LlamaFileType.ALL_F32, f16=gguf.LlamaFileType.MOSTLY_F16,
                     q8_0=gguf.LlamaFileType.MOSTLY_Q8_0)[dtype]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, specials, merges = vocabulary(enc)
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(llama_cpp_pre(split_pattern(enc)))
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in specials else
                            gguf.TokenType.UNUSED if t.startswith("<|unused_") else gguf.TokenType.NORMAL
                            for i, t in enumerate(tokens)])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(enc.eot_token)
    writer.add_eos_token_id(enc.eot_token)
    writer.add_add_bos_token(True)

    # the tensors in llama.cpp's names and layout; their data is made and written one at a time (the
    # writer first needs every tensor's name, shape and type), so memory holds one converted tensor
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), c.n_layer)
    plan = []
    for hf_name, t in tensors.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        shape = tuple(t.shape[::-1] if arch == "gpt2" and _conv1d(hf_name, t) else t.shape)
        kind = gguf_kind(name, shape, dtype)
        writer.add_tensor_info(name, shape, np.float32, int(np.prod(gguf.quants.quant_shape_to_byte_shape(shape, kind))),
                               raw_dtype=kind)
        plan.append((hf_name, t, kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    size = 0
    for hf_name, t, kind in plan:
        if arch == "gpt2" and _conv1d(hf_name, t):
            t = t.t()  # back from Conv1D's (in, out) to Linear's (out, in), which ggml reads
        if arch == "llama" and ".q_proj." in hf_name:
            t = llama_cpp_rows(t, c.n_head)
        if arch == "llama" and ".k_proj." in hf_name:
            t = llama_cpp_rows(t, c.n_kv_head or c.n_head)
        data = gguf.quants.quantize(t.float().contiguous().numpy(), kind)
        writer.write_tensor_data(data)
        size += data.nbytes
    writer.close()
    return size


def _conv1d(hf_name, t):
    return t.dim() == 2 and not hf_name.endswith(("wte.weight", "wpe.weight", "lm_head.weight"))


def gguf_kind(name, shape, dtype):
    """The GGML type of one tensor, as llama.cpp's converter chooses it: vectors, norms and position
    embeddings stay f32; a matrix whose rows do not split into q8_0's blocks of 32 falls back to f16."""
    import gguf

    kinds = gguf.GGMLQuantizationType
    if len(shape) == 1 or name.endswith("_norm.weight") or name.startswith("position_embd"):
        return kinds.F32
    if dtype == "q8_0" and shape[-1] % 32:
        return kinds.F16
    return {"f32": kinds.F32, "f16": kinds.F16, "q8_0": kinds.Q8_0}[dtype]


def partial_folder(out, pid=None):
    """Where a Hugging Face folder is written before it is renamed to `out`. Not crashsafe's
    .NAME.tmp-HOST-PID: that name is for files, which its cleanup unlinks."""
    return out.with_name(f".{out.name}.partial-{HOST}-{pid or os.getpid()}")


def remove_stale_partials(out):
    """Remove the folders killed exports of `out` left on this machine (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.partial-{HOST}-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)  # signal 0 only asks whether it still runs
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
            print(f"note: removed {stale}, left by a killed export", file=sys.stderr)
        except (ValueError, PermissionError):
            pass


def export(ckpt, fmt, out, dtype, force=False, log=print):
    """Write `ckpt` (a train.py checkpoint or a Hugging Face folder) as `fmt` ('hf' or 'gguf') to
    `out`. Returns a summary dict. ValueError for anything that cannot be exported."""
    if dtype not in DTYPES[fmt]:
        raise ValueError(f"--dtype={dtype} is not one of {', '.join(DTYPES[fmt])} for --format={fmt}")
    out = Path(out).resolve() if Path(out).name in ("", "..") else Path(out)  # '.' has no name
    if fmt == "gguf" and out.is_dir():  # else --force fails at the rename, after all the work
        raise ValueError(f"--out={out} is a folder; a GGUF export is one file: pass --out=FILE.gguf")
    if out.exists() and not force:
        raise ValueError(f"{out} already exists: pass --force to replace it")
    # --force replaces the whole folder: with --out=out that was train.py's out/, ckpt.pt and all;
    # --out=out/ckpt.pt (is_relative_to of the path itself) replaced the checkpoint by the export
    if out.exists() and Path(ckpt).resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--out={out} {'is' if out.is_file() else 'holds'} --ckpt={ckpt}, which "
                         f"replacing it would delete: pass another --out (out/hf, say)")
    if fmt == "hf" and out.is_file():  # --force replaced out/log.jsonl, say, by a folder
        raise ValueError(f"--out={out} is a file; a Hugging Face export is a folder: pass --out=FOLDER")
    if fmt == "gguf" and out.is_file():
        with open(out, "rb") as f:
            if f.read(4) != b"GGUF":  # the magic every GGUF file starts with
                raise ValueError(f"--out={out} is not a GGUF file, which --force would replace: "
                                 f"pass another --out")
    # --force replaces a folder an export wrote, not one holding a base run's ckpt.pt and log.jsonl
    others = sorted(p.name for p in out.iterdir() if p.name not in HF_FILES) if out.is_dir() else []
    if others and force:
        raise ValueError(f"--out={out} holds files no export writes ({', '.join(others[:3])}"
                         f"{', ...' if len(others) > 3 else ''}), which --force would delete: "
                         f"pass another --out, or empty it first")
    folder = next(p for p in out.absolute().parents if p.exists())  # the one the export creates in
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):  # else OSError, after the work
        why = "not writable by this user" if folder.is_dir() else "not a folder"
        raise ValueError(f"--out={out}: cannot write there: {folder} is {why}")
    t0 = time.time()
    pretrained = load_pretrained(ckpt)
    model_args, spec = pretrained["model_args"], pretrained["tokenizer"]
    arch = architecture(model_args)
    enc = load_tokenizer(spec)
    if enc.n_vocab > model_args["vocab_size"]:
        raise ValueError(f"{ckpt}: tokenizer {tokenizer_name(spec)} has {enc.n_vocab} tokens, more than the "
                         f"model's vocab_size {model_args['vocab_size']}")
    log(f"read {ckpt} ({pretrained['source']}): {arch} layout, {model_args['n_layer']} layers x "
        f"{model_args['n_embd']}, tokenizer {tokenizer_name(spec)}; vocabulary {model_args['vocab_size']:,} -> "
        f"{enc.n_vocab:,} rows (padding dropped) [{time.time() - t0:.1f}s]")
    tensors = hf_tensors(pretrained["model"], model_args, enc.n_vocab)
    n_params = sum(t.numel() for t in tensors.values())
    log(f"writing {out}: {fmt}, {dtype}, {len(tensors)} tensors ...")
    if fmt == "hf":
        remove_stale_partials(out)
        tmp = partial_folder(out)
        tmp.mkdir(parents=True)
        try:
            config = hf_config(model_args, arch, enc.n_vocab, enc.eot_token, dtype)
            size = write_hf(tmp, tensors, config, enc, model_args["block_size"], dtype)
            for path in tmp.iterdir():  # on disk before the rename, as atomic_path does for a file
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            if out.exists():  # --force: the old one goes only once the new one is whole
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        what = f"{config['architectures'][0]} folder"
    else:
        llama_cpp_pre(split_pattern(enc))  # refuse an unknown pattern before the work
        with atomic_path(out) as tmp:
            size = write_gguf(tmp, tensors, model_args, arch, enc, dtype, name=Path(ckpt).stem)
        what = f"GGUF file (arch {arch}, {dtype})"
    seconds = time.time() - t0
    log(f"wrote {out}: {what}, {n_params / 1e6:.2f}M parameters, {size / 1e6:.1f} MB of weights, "
        f"in {seconds:.1f}s")
    return dict(out=str(out), format=fmt, arch=arch, dtype=dtype, parameters=n_params, bytes=size, seconds=seconds)


def main(argv=None):
    # the docstring's first paragraph: its first line alone stops mid-sentence
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", default="out/ckpt.pt", help="train.py checkpoint, or a Hugging Face folder")
    p.add_argument("--format", default="hf", choices=["hf", "gguf"],
                   help="hf: a Hugging Face folder (safetensors); gguf: one file for llama.cpp")
    p.add_argument("--out", default=None, help="output folder (hf) or file (gguf); default out/hf or out/model-DTYPE.gguf")
    p.add_argument("--dtype", default="f32", help="weights: f32, f16 or bf16 (hf); f32, f16 or q8_0 (gguf)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    out = args.out or ("out/hf" if args.format == "hf" else f"out/model-{args.dtype}.gguf")
    try:
        export(args.ckpt, args.format, out, args.dtype, args.force,
               log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ValueError as e:
        fail(str(e))
    except OSError as e:  # no write permission, a file where a folder should be, a full disk
        fail(f"--out={out}: cannot write it ({e.strerror or e}: {e.filename or out})")


if __name__ == "__main__":
    main()
