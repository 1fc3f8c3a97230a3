"""Tiny models and tokenizers for the export, eval and sample tests: train.py-style checkpoints built
here (2 layers, 64 wide), and a small byte-level BPE trained here on the built-in sample."""
import base64
import functools
import gzip
import json
from collections import Counter
from pathlib import Path

import regex
import torch

from model import GPT, GPTConfig
from tokenizer import ENDOFTEXT, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent

# cl100k's (GPT-4's) split pattern, as tiktoken spells it
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
                r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")

# nanochat's (rustbpe's) spelling of it, which tokenizer.py trains with: no possessive \p{L}++, no \s++$
NANOCHAT_PATTERN = (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
                    r"|\s*[\r\n]|\s+(?!\S)|\s+")

GPT2_ARGS = dict(n_layer=2, n_head=4, n_embd=64, block_size=64, dropout=0.0, bias=False)
LLAMA_ARGS = dict(GPT2_ARGS, rope=True, rope_theta=50000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=2)
LAYOUTS = {"gpt2": GPT2_ARGS, "llama": LLAMA_ARGS}

# several scripts, emoji (with modifiers and joiners), runs of spaces, tabs and newlines, digits, code
TEST_STRINGS = [
    "Hello world! It's a test. I'LL be there, we've DONE it; they'd say so.",
    "naïve café résumé Ünïcödé — “quotes” «guillemets» ½ ©",
    "Ελληνικά κείμενα, русский текст, עברית, العربية, हिन्दी, ไทย",
    "日本語のテキストと中文和한국어の文章。",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 ❤️ ok",
    "   leading spaces\ttabs\t\tand\n\n\nnewlines   \n  \r\n trailing   ",
    "numbers 1 12 123 1234 12345 3.14159 1,000,000 0x1F 2026-11-23",
    "code:\n    def f(x):\n        return x ** 2  # comment\n\n\n",
    "a\u00a0b\u2003c\u200bd\u3000e",
    "x  \ny \n\n z\t\n",
]


def checkpoint(path, layout="gpt2", tokenizer="gpt2", seed=0, scale=1.0, **overrides):
    """A train.py-style checkpoint of a random tiny model. scale > 1 multiplies the matrices, which
    makes the model's choices decisive (large gaps between the top scores), so that float rounding in
    another runtime cannot flip a greedy token by chance. Returns (path, model)."""
    enc = load_tokenizer(tokenizer)
    args = dict(LAYOUTS[layout], vocab_size=64 * -(-enc.n_vocab // 64), real_vocab_size=enc.n_vocab)
    args.update(overrides)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**args)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    ckpt = {"model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
            "model_args": args, "tokenizer": tokenizer, "version": 1, "step": 3}
    torch.save(ckpt, path)
    return path, model


def sample_texts(n=20):
    with gzip.open(ROOT / "data" / "sample" / "docs.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)] + TEST_STRINGS[1:5]


def tokenizer_spec(which):
    """'gpt2', or the trained tokenizer with its split pattern as tiktoken or nanochat spells GPT-4's."""
    if which == "gpt2":
        return "gpt2"
    spec = trained_tokenizer()
    return spec if which == "trained" else dict(spec, pattern=NANOCHAT_PATTERN)


@functools.lru_cache(maxsize=1)
def trained_tokenizer(n_merges=300):
    """A tokenizer spec (tokenizer.py's dict) for a byte-level BPE trained here: the 256 bytes, then
    the most frequent adjacent pair merged, n_merges times, within the pieces of the GPT-4 pattern;
    <|endoftext|> after the last merge. Pair counts are updated only for the words a merge touches."""
    counted = Counter(piece.encode("utf-8") for text in sample_texts() for piece in regex.findall(GPT4_PATTERN, text))
    words = [[bytes([b]) for b in piece] for piece in counted]
    counts = list(counted.values())
    pairs, where = Counter(), {}
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pairs[pair] += counts[i]
            where.setdefault(pair, set()).add(i)
    ranks = {bytes([b]): b for b in range(256)}
    for _ in range(n_merges):
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]), default=((b"", b""), 0))
        if count <= 0:
            break
        ranks.setdefault(a + b, len(ranks))
        for i in where.pop((a, b), ()):
            word = words[i]
            for pair in zip(word, word[1:]):
                pairs[pair] -= counts[i]
            out, j = [], 0
            while j < len(word):
                if j + 1 < len(word) and word[j] == a and word[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            words[i] = out
            for pair in zip(out, out[1:]):
                pairs[pair] += counts[i]
                where.setdefault(pair, set()).add(i)
        pairs.pop((a, b), None)
    vocab = "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items())
    return dict(name="tiny-bpe", pattern=GPT4_PATTERN, vocab=vocab, special_tokens={ENDOFTEXT: len(ranks)})
