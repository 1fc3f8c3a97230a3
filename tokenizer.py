"""
Tokenizers: GPT-2's, or a byte-level BPE trained on the corpus. Every later stage (prepare, train,
sample, eval, export) gets its tokenizer from here, as a tiktoken Encoding, so there is one code path
whatever the tokenizer is.

    load_tokenizer('gpt2')              GPT-2's vocabulary, shipped in data/ (works offline)
    load_tokenizer('data/tokenizer')    a folder written by this script's training (vocab.tiktoken + config.json)
    load_tokenizer(spec)                the spec a checkpoint carries (tokenizer_spec), so a checkpoint
                                        decodes after data/ is deleted

A trained tokenizer folder holds the merges as a tiktoken .tiktoken file (base64 token bytes and rank
per line) and config.json: the pre-tokenization pattern, the special tokens and their ids, the
vocabulary size and what it was trained on.
"""

import base64
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tiktoken

HERE = Path(__file__).resolve().parent
GPT2_VOCAB = HERE / "data" / "r50k_base.tiktoken"
GPT2_VOCAB_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
ENDOFTEXT = "<|endoftext|>"
VOCAB_FILE, CONFIG_FILE = "vocab.tiktoken", "config.json"

# -----------------------------------------------------------------------------------------------
# loading


def load_tokenizer(spec):
    """A tiktoken Encoding from an encoding name ('gpt2', 'cl100k_base', ...), a .tiktoken file, a
    trained tokenizer folder, or a checkpoint's spec dict (see tokenizer_spec). Raises ValueError
    with the reason when it cannot.

    'gpt2' is built from the copy of its vocabulary that ships in data/, so it works offline; tiktoken
    downloads any other named encoding the first time. A bare .tiktoken file holds only the merges,
    so it is given GPT-2's split pattern and <|endoftext|> as the id after the last merge."""
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    if isinstance(spec, dict):
        return _encoding(spec["name"], spec["pattern"], _parse_ranks(spec["vocab"]), spec["special_tokens"])
    name = str(spec)
    if name in ("gpt2", "r50k_base"):
        data = GPT2_VOCAB.read_bytes()
        if hashlib.sha256(data).hexdigest() != GPT2_VOCAB_SHA256:
            raise ValueError(f"{GPT2_VOCAB} is not GPT-2's vocabulary (sha256 mismatch): restore it from git")
        ranks = load_tiktoken_bpe(str(GPT2_VOCAB))
        # same ranks, split pattern and end-of-text id as tiktoken.get_encoding("gpt2")
        return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                 special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)
    if os.path.isdir(name):
        return load_tokenizer(read_folder(name))
    if name.endswith(".tiktoken"):
        if not os.path.exists(name):
            raise ValueError(f"tokenizer file {name} does not exist")
        ranks = load_tiktoken_bpe(name)
        return tiktoken.Encoding(name=name, pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                 special_tokens={ENDOFTEXT: len(ranks)})
    if os.sep in name or name.startswith("."):
        raise ValueError(f"{name} does not exist (expected a tokenizer folder, a .tiktoken file or a name)")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # an unknown name, or no network to fetch a known one
        raise ValueError(f"cannot load the tiktoken encoding {name!r}: {e}") from None


def read_folder(folder):
    """The spec dict of a trained tokenizer folder (vocab.tiktoken + config.json)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        vocab = (folder / VOCAB_FILE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder} is not a tokenizer folder ({VOCAB_FILE} + {CONFIG_FILE}): {e}") from None
    for key in ("pattern", "special_tokens"):
        if key not in config:
            raise ValueError(f"{folder / CONFIG_FILE}: no {key!r}")
    return dict(name=config.get("name", folder.name), pattern=config["pattern"], vocab=vocab,
                special_tokens=config["special_tokens"])


def _parse_ranks(vocab_text):
    """The ranks of a .tiktoken file's text: one 'base64(token bytes) rank' per line."""
    ranks = {}
    for line_number, line in enumerate(vocab_text.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError:
            raise ValueError(f"line {line_number} of the vocabulary: expected 'base64 rank', got {line[:80]!r}") from None
    return ranks


def _encoding(name, pattern, ranks, special_tokens):
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={k: int(v) for k, v in special_tokens.items()})


# -----------------------------------------------------------------------------------------------
# what a checkpoint and a token folder carry


def tokenizer_spec(source):
    """What a checkpoint stores to decode without data/: the name of a built-in encoding ('gpt2'), or
    for a trained tokenizer a dict of plain data (name, pattern, vocab as .tiktoken text,
    special_tokens) that torch.load(weights_only=True) reads back and load_tokenizer accepts."""
    if isinstance(source, dict):
        return source
    if os.path.isdir(str(source)):
        return read_folder(source)
    return str(source)


def tokenizer_name(spec):
    """A short name for messages and reports: 'gpt2', or 'NAME (4,096 tokens, sha256 1a2b3c4d)'."""
    if not isinstance(spec, dict):
        return str(spec)
    digest = hashlib.sha256(spec["vocab"].encode()).hexdigest()[:8]
    size = len(spec["vocab"].splitlines()) + len(spec["special_tokens"])
    return f"{spec['name']} ({size:,} tokens, sha256 {digest})"


def same_tokenizer(a, b):
    """Whether two specs encode alike (names 'gpt2' and 'r50k_base' are one encoding)."""
    alias = {"r50k_base": "gpt2"}
    if isinstance(a, dict) and isinstance(b, dict):
        return (a["vocab"], a["pattern"], a["special_tokens"]) == (b["vocab"], b["pattern"], b["special_tokens"])
    if isinstance(a, dict) or isinstance(b, dict):
        return False
    return alias.get(a, a) == alias.get(b, b)


def token_byte_lengths(enc, vocab_size):
    """UTF-8 bytes each token id stands for, as an int array of vocab_size entries: 0 for special
    tokens and for the padded ids past the tokenizer. Bits per byte, the loss that compares across
    tokenizers, is (sum of the token losses in nats) / ln 2 / (sum of these lengths over the targets)."""
    lengths = np.zeros(vocab_size, dtype=np.int64)
    specials = set(enc.special_tokens_set)
    special_ids = {enc.encode_single_token(s) for s in specials}
    for token in range(min(enc.n_vocab, vocab_size)):
        if token in special_ids:
            continue
        try:
            lengths[token] = len(enc.decode_single_token_bytes(token))
        except KeyError:  # a gap in the ranks: stands for no text
            pass
    return lengths
