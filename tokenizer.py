"""
Tokenizers: GPT-2's, or a byte-level BPE trained on the corpus. Every later stage (prepare, train,
sample, eval, export) gets its tokenizer from here, as a tiktoken Encoding, so there is one code path
whatever the tokenizer is.

    python tokenizer.py [--input=data/dedup] [--output=data/tokenizer] [--vocab_size=4096]

    load_tokenizer('gpt2')              GPT-2's vocabulary, shipped in data/ (works offline)
    load_tokenizer('data/tokenizer')    a folder written by this script's training (vocab.tiktoken + config.json)
    load_tokenizer(spec)                the spec a checkpoint carries (tokenizer_spec), so a checkpoint
                                        decodes after data/ is deleted

Training, byte-level BPE as GPT-2 and GPT-4 do it: the text is first split into chunks by a regular
expression (GPT-4's pattern: words with their leading space, runs of at most 3 digits, punctuation,
whitespace), so no token ever spans two words; every chunk starts as its UTF-8 bytes (256 base
tokens, so any text can be encoded and nothing is ever "unknown"); then the most frequent adjacent
pair of tokens across all chunks is merged into a new token, again and again, until the vocabulary
has --vocab_size tokens. The order of the merges is the tokenizer: tiktoken's ranks. The merge loop
is rustbpe's (nanochat's trainer, in Rust: it counts the chunks in parallel and keeps the pair counts
in a heap); encoding is tiktoken's, at full speed.

The documents prepare.py will put in its val shard (the start of the stream) are held out: the
tokenizer never sees them, and they measure it (bytes per token, ours against GPT-2's, per source
and language), as nanochat's tokenizer evaluation does. prepare.py --num_shards=N makes N val
shards, one from the start of each machine's part of the input: --prepare_num_shards=N holds out
those.

A trained tokenizer folder holds the merges as a tiktoken .tiktoken file (base64 token bytes and rank
per line) and config.json: the pre-tokenization pattern, the special tokens and their ids, the
vocabulary size and what it was trained on; report.json says how training went and whether the
folder is complete.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import tiktoken

from common import atomic_path, fail, list_shards, progress, read_documents, read_json, write_json
from crashsafe import make_own_output_folder, mark_in_progress, remove_stale_temps

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
    so it is given GPT-2's split pattern and <|endoftext|> as the id after the highest rank."""
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
        try:  # what tiktoken refuses (a pattern that is no regular expression) is in config.json
            return load_tokenizer(read_folder(name))
        except ValueError as e:
            raise ValueError(str(e) if name in str(e) else f"{Path(name) / CONFIG_FILE}: {e}") from None
    if name.endswith(".tiktoken"):
        if not os.path.exists(name):
            raise ValueError(f"tokenizer file {name} does not exist")
        try:  # ours, not tiktoken's reader: an empty file was "max() arg is an empty sequence"
            ranks = _parse_ranks(Path(name).read_text(encoding="ascii"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}: byte {e.start} is not ASCII: expected a .tiktoken file, "
                             f"one 'base64(token bytes) rank' per line") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{name}: {e}") from None
        # after the highest rank, not at len(ranks): with a gap in the ranks that id is a merge's,
        # and every document's <|endoftext|> would decode as that merge's text
        return tiktoken.Encoding(name=name, pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                 special_tokens={ENDOFTEXT: max(ranks.values()) + 1})
    if os.sep in name or name.startswith(".") or os.path.exists(name):
        what = "is not a folder or a .tiktoken file" if os.path.exists(name) else "does not exist"
        raise ValueError(f"{name} {what} (expected a tokenizer folder, a .tiktoken file or a name)")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # an unknown name, or no network to fetch a known one: its first line
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]  # ('Plugins found: ...' follows)
        raise ValueError(f"cannot load the tiktoken encoding {name!r}: {reason}") from None


def read_folder(folder):
    """The spec dict of a trained tokenizer folder (vocab.tiktoken + config.json)."""
    folder = Path(folder)
    missing = [name for name in (VOCAB_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing == [CONFIG_FILE]:  # tokenizer.py removes the old config first and writes the new one last
        raise ValueError(f"{folder} has {VOCAB_FILE} but no {CONFIG_FILE} (the split pattern and special "
                         f"tokens): a tokenizer.py run that did not finish; rerun tokenizer.py")
    if missing:
        raise ValueError(f"{folder} is not a tokenizer folder: no {' and no '.join(missing)} "
                         f"(tokenizer.py writes {VOCAB_FILE} + {CONFIG_FILE})")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        vocab = (folder / VOCAB_FILE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder} is not a tokenizer folder ({VOCAB_FILE} + {CONFIG_FILE}): {e}") from None
    # a config edited by hand, or another tool's config.json: its types, before tiktoken meets them
    specials = config.get("special_tokens") if isinstance(config, dict) else None
    if not (isinstance(specials, dict) and isinstance(config.get("pattern"), str)
            and all(type(v) is int for v in specials.values())):
        raise ValueError(f"{folder / CONFIG_FILE}: expected an object with \"pattern\" (a regular expression) "
                         f"and \"special_tokens\" ({{token: id}}), got {json.dumps(config)[:120]}")
    if ENDOFTEXT not in config["special_tokens"]:  # every document starts with it
        raise ValueError(f"{folder / CONFIG_FILE}: no {ENDOFTEXT} among the special tokens "
                         f"{sorted(config['special_tokens'])}")
    # config.json is written after the vocabulary and names its hash: a run killed between the two
    # files, or a vocabulary edited by hand, cannot pass for the tokenizer the config describes
    expected = config.get("vocab_sha256")
    if expected and hashlib.sha256(vocab.encode("ascii")).hexdigest() != expected:
        raise ValueError(f"{folder / VOCAB_FILE} does not match {CONFIG_FILE} (sha256 differs): "
                         f"an interrupted or edited tokenizer; rerun tokenizer.py")
    try:
        _parse_ranks(vocab)  # here, where the file's name is known
    except ValueError as e:
        raise ValueError(f"{folder / VOCAB_FILE}: {e}") from None
    return dict(name=config.get("name", folder.name), pattern=config["pattern"], vocab=vocab,
                special_tokens=config["special_tokens"])


def training_report(folder):
    """report.json of a folder that tokenizer.py trained (prepare.py's checks of what was held out
    read it), or None for one made by hand: no trainer in its config.json, so no report to expect.
    Raises ValueError if the training did not finish: config.json is written before the held-out
    evaluation and report.json, so a run killed between them leaves a folder that loads but says
    nothing of the documents it held out."""
    folder = Path(folder)
    config = read_json(folder / CONFIG_FILE)
    if not (isinstance(config, dict) and config.get("trainer")):
        return None
    report = read_json(folder / "report.json")
    if isinstance(report, dict) and report.get("complete") is True:
        return report
    if isinstance(report, dict) and report.get("complete") is False:
        what = (f"says its tokenizer.py run (pid {report.get('pid', '?')} on {report.get('host', '?')}, "
                f"started {report.get('started', '?')}) did not finish: killed, or still running")
    else:
        what = "is missing or unreadable: its tokenizer.py run did not finish"
    raise ValueError(f"{folder / 'report.json'} {what}; rerun tokenizer.py --output={folder}")


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
    if not ranks:
        raise ValueError("the vocabulary is empty: expected one 'base64(token bytes) rank' per line")
    # what tiktoken would meet as a Rust panic (a traceback, mid-run): a byte with no token fails the
    # first text holding it, two tokens with one rank fail the Encoding itself
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{len(missing)} of the 256 single bytes have no token (byte {missing[0]} first): "
                         f"expected a byte-level BPE, which has one for every byte")
    if len(set(ranks.values())) < len(ranks):
        rank = Counter(ranks.values()).most_common(1)[0][0]
        raise ValueError(f"two tokens have rank {rank}: expected each rank once")
    return ranks


def _encoding(name, pattern, ranks, special_tokens):
    taken = set(ranks.values())  # a special token on a merge's id would decode as that merge's text
    if clash := [k for k, v in special_tokens.items() if int(v) in taken]:
        raise ValueError(f"the special token {clash[0]} has id {special_tokens[clash[0]]}, "
                         f"which is already a token of the vocabulary")
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={k: int(v) for k, v in special_tokens.items()})


# -----------------------------------------------------------------------------------------------
# what a checkpoint and a token folder carry


def tokenizer_spec(source):
    """What a checkpoint stores to decode without data/: the name of a built-in encoding ('gpt2'), or
    for a trained tokenizer (or a .tiktoken file) a dict of plain data (name, pattern, vocab as
    .tiktoken text, special_tokens) that torch.load(weights_only=True) reads back and load_tokenizer
    accepts."""
    if isinstance(source, dict):
        return source
    if os.path.isdir(str(source)):
        return read_folder(source)
    if str(source).endswith(".tiktoken"):  # its ranks, not its path: the file may move or change
        from tiktoken_ext.openai_public import r50k_pat_str
        eot = load_tokenizer(source).eot_token
        return dict(name=Path(source).name, pattern=r50k_pat_str,
                    vocab=Path(source).read_text(encoding="ascii"), special_tokens={ENDOFTEXT: eot})
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


# -----------------------------------------------------------------------------------------------
# training: byte-level BPE on the corpus

# GPT-4's split (cl100k_base, as rustbpe and nanochat use it): contractions; a word with at most one
# leading non-letter (its space); numbers of 1-3 digits; punctuation runs; newlines; other whitespace
GPT4_PATTERN = (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
                r"|\s*[\r\n]|\s+(?!\S)|\s+")
MAX_VOCAB = 2**16  # token shards store uint16 ids


def train_bpe(texts, vocab_size, pattern=GPT4_PATTERN, name=None):
    """Train a byte-level BPE of vocab_size tokens (256 bytes + merges + <|endoftext|>) on an
    iterable of strings; returns its spec (see tokenizer_spec). rustbpe stops early when no pair is
    left to merge, so a tiny corpus gives fewer tokens than asked: the spec says how many."""
    import rustbpe  # its threads: RAYON_NUM_THREADS, read when it starts the first one

    if not 257 <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size={vocab_size:,}: must be 257 (256 bytes + <|endoftext|>) to "
                         f"{MAX_VOCAB:,} (token shards store uint16 ids)")
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(texts, vocab_size - 1, pattern=pattern)  # the last id: <|endoftext|>
    ranks = sorted(trainer.get_mergeable_ranks(), key=lambda pair: pair[1])
    vocab = "".join(f"{base64.b64encode(bytes(token)).decode()} {rank}\n" for token, rank in ranks)
    return dict(name=name or f"bpe_{vocab_size}", pattern=pattern, vocab=vocab,
                special_tokens={ENDOFTEXT: len(ranks)})


def group_of(doc):
    """Where a document comes from, for the per-source table: its language (clean.py adds it) and the
    host of its URL, or its 'source' key."""
    try:
        host = urlsplit(str(doc.get("url") or "")).hostname
    except ValueError:  # 'http://[::1', an unclosed IPv6 bracket: no host, and no reason to crash
        host = None
    host = host or doc.get("source") or "?"
    return f"{doc.get('language') or '?'} {host}"


def evaluate(encodings, docs, max_groups=12):
    """Bytes per token of each encoding on docs (a list of (group, text)), per group and overall, and
    whether encoding then decoding gave back every text exactly."""
    groups = defaultdict(lambda: Counter())
    failures = 0
    for group, text in docs:
        data = text.encode("utf-8")
        for key in (group, "all"):
            groups[key]["documents"] += 1
            groups[key]["bytes"] += len(data)
        for name, enc in encodings.items():
            tokens = enc.encode_ordinary(text)
            groups[group][name] += len(tokens)
            groups["all"][name] += len(tokens)
            if name == "ours" and enc.decode_bytes(tokens) != data:
                failures += 1
    # the largest groups by bytes, the rest summed as 'other', then the total
    named = sorted((g for g in groups if g != "all"), key=lambda g: -groups[g]["bytes"])
    rows = {g: groups[g] for g in named[:max_groups]}
    if len(named) > max_groups:
        rows["other"] = sum((groups[g] for g in named[max_groups:]), Counter())
    rows["all"] = groups["all"]
    table = {g: {**c, **{f"{name}_bytes_per_token": round(c["bytes"] / max(c[name], 1), 3) for name in encodings}}
             for g, c in rows.items()}
    return table, failures


def print_evaluation(table, names):
    print(f"\n{'held-out documents':<36}{'docs':>6}{'bytes':>12}" +
          "".join(f"{n + ' tokens':>14}{'bytes/tok':>10}" for n in names) + f"{'ours vs gpt2':>14}")
    for group, row in table.items():
        gain = row["ours_bytes_per_token"] / row["gpt2_bytes_per_token"] - 1
        print(f"{group[:35]:<36}{row['documents']:>6,}{row['bytes']:>12,}" +
              "".join(f"{row[n]:>14,}{row[n + '_bytes_per_token']:>10.2f}" for n in names) + f"{gain:>+13.1%}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a byte-level BPE tokenizer on the documents (rustbpe), "
                                "written for tiktoken: prepare.py --tokenizer=OUTPUT uses it.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", default="data/dedup", help="folder or glob of .jsonl(.gz) document shards")
    p.add_argument("--output", default="data/tokenizer", help="folder for vocab.tiktoken, config.json, report.json")
    p.add_argument("--vocab_size", type=int, default=4096,
                   help=f"tokens in all: 256 bytes + merges + <|endoftext|>; at most {MAX_VOCAB:,} (uint16 shards)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads that count the chunks")
    p.add_argument("--val_bytes", type=float, default=4.5e7,
                   help="hold out the first documents, as prepare.py's val shard: this many bytes "
                        "(~ prepare's default 1e7 val tokens), or a tenth of a smaller corpus")
    p.add_argument("--prepare_num_shards", type=int, default=1,
                   help="hold out the val shards of prepare.py --num_shards=N: each of its machines "
                        "writes one, from the first documents of its part of the shards")
    p.add_argument("--max_train_bytes", type=float, default=2e9,
                   help="train on at most this much text (after the held-out part); more rarely changes the merges")
    args = p.parse_args(argv)
    if not 257 <= args.vocab_size <= MAX_VOCAB:
        fail(f"--vocab_size={args.vocab_size:,}: must be 257 (256 bytes + <|endoftext|>) to {MAX_VOCAB:,} "
             f"(prepare.py's token shards store uint16 ids)")
    if args.workers < 1 or args.val_bytes < 0 or args.max_train_bytes < 1 or args.prepare_num_shards < 1:
        fail("--workers, --max_train_bytes and --prepare_num_shards must be at least 1, --val_bytes at least 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)  # rustbpe's thread pool, before it starts
    inputs = list_shards(args.input)
    out = Path(args.output)
    make_own_output_folder(out, inputs, "tokenizer", "data/tokenizer")  # whose report.json goes just below
    remove_stale_temps(out)  # what killed runs left; a live writer's temporary file is not ours to delete
    (out / CONFIG_FILE).unlink(missing_ok=True)  # no config: the folder is not a tokenizer until this run ends,
    mark_in_progress("tokenizer", out, args)  # and says so in its report
    print(f"tokenizer: BPE of {args.vocab_size:,} tokens on {len(inputs)} shards from {args.input} "
          f"-> {out}, {args.workers} threads", file=sys.stderr)

    stats = Counter()
    start = time.time()
    # prepare.py --num_shards=N deals the shards round-robin, and each machine makes a val shard of
    # the start of its own stream: machine k's first documents wait in heads[k] until the end of
    # the input says how many are held out
    machines = args.prepare_num_shards
    heads, head_bytes, stream_bytes = [[] for _ in range(machines)], [0] * machines, [0] * machines
    held_out = []
    bar = progress("tokenizer", unit="B")

    def documents():
        for k, path in enumerate(inputs):
            for _, doc in read_documents(path, stats):
                yield k % machines, doc

    def training_texts():
        read_all = True
        for machine, doc in documents():
            text = doc["text"]  # lone surrogates are already U+FFFD (common.read_documents)
            size = len(text.encode("utf-8"))
            stats["documents"] += 1
            stats["bytes"] += size
            stream_bytes[machine] += size
            bar.update(size)
            if head_bytes[machine] < args.val_bytes:
                heads[machine].append((group_of(doc), text, size))
                head_bytes[machine] += size
                continue
            stats["train_documents"] += 1
            stats["train_bytes"] += size
            yield text
            if stats["train_bytes"] >= args.max_train_bytes:
                read_all = False
                break  # enough text: the rest of the input is not read
        # prepare.py's val shard: the first --val_tokens of the stream, or a tenth of a smaller
        # corpus; held out here, every document that starts within the first --val_bytes, or
        # within the first tenth of the bytes of a stream smaller than --val_bytes (read whole)
        for machine, head in enumerate(heads):
            small = read_all and stream_bytes[machine] < args.val_bytes
            cut, seen = stream_bytes[machine] / 10 if small else args.val_bytes, 0
            for group, text, size in head:
                if seen < cut:
                    held_out.append((group, text))
                    seen += size
                elif stats["train_bytes"] < args.max_train_bytes:  # the cap holds here too
                    stats["train_documents"] += 1
                    stats["train_bytes"] += size
                    yield text

    try:
        spec = train_bpe(training_texts(), args.vocab_size, name=f"bpe_{args.vocab_size}")
    except ValueError as e:
        fail(str(e))
    bar.close()
    train_seconds = time.time() - start
    if not stats["train_bytes"]:
        fail(f"no documents to train on in {args.input} (all held out, or none readable)")
    n_vocab = len(spec["vocab"].splitlines()) + 1
    if n_vocab < args.vocab_size:
        print(f"warning: the text allows only {n_vocab - 257:,} merges: {n_vocab:,} tokens, not "
              f"{args.vocab_size:,}", file=sys.stderr)

    # the folder: vocabulary first, then config.json naming its hash, then the report (complete: true)
    vocab_bytes = spec["vocab"].encode("ascii")
    with atomic_path(out / VOCAB_FILE) as tmp:
        tmp.write_bytes(vocab_bytes)
    config = dict(name=spec["name"], pattern=spec["pattern"], special_tokens=spec["special_tokens"],
                  vocab_size=n_vocab, vocab_sha256=hashlib.sha256(vocab_bytes).hexdigest(),
                  trainer="rustbpe", trained_on=dict(input=args.input, documents=stats["train_documents"],
                                                     bytes=stats["train_bytes"], held_out_documents=len(held_out)))
    write_json(out / CONFIG_FILE, config)

    eval_start = time.time()
    table, failures = {}, 0
    if held_out:
        table, failures = evaluate({"gpt2": load_tokenizer("gpt2"), "ours": load_tokenizer(out)}, held_out)
        print_evaluation(table, ["gpt2", "ours"])
    seconds = time.time() - start
    report = {"stage": "tokenizer", "complete": True, "input": args.input, "output": str(out),
              "vocab_size": n_vocab, "vocab_size_asked": args.vocab_size, "pattern": spec["pattern"],
              "special_tokens": spec["special_tokens"], "trainer": "rustbpe",
              "documents": stats["documents"], "bytes": stats["bytes"],
              "train_documents": stats["train_documents"], "train_bytes": stats["train_bytes"],
              "held_out_documents": len(held_out), "prepare_num_shards": machines,
              "repaired": {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("repaired:")},
              "roundtrip_failures": failures, "train_seconds": round(train_seconds, 2),
              "train_mb_per_second": round(stats["bytes"] / 1e6 / max(train_seconds, 1e-9), 2),
              "eval_seconds": round(time.time() - eval_start, 2), "seconds": round(seconds, 2),
              "evaluation": table,
              "skipped": {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("bad_input:")}}
    write_json(out / "report.json", report)

    print(f"\ntokenizer done in {seconds:.1f}s: {n_vocab:,} tokens trained on {stats['train_documents']:,} "
          f"documents ({stats['train_bytes'] / 1e6:.1f} MB, read and trained at "
          f"{report['train_mb_per_second']:.1f} MB/s), {len(held_out):,} held out")
    if table:
        print(f"  held-out bytes per token: ours {table['all']['ours_bytes_per_token']:.2f}, "
              f"gpt2 {table['all']['gpt2_bytes_per_token']:.2f}")
    if report["repaired"]:
        print("  input repaired: " + ", ".join(f"{k}={v:,}" for k, v in sorted(report["repaired"].items())))
    if report["skipped"]:
        print("  bad input skipped: " + ", ".join(f"{k}={v:,}" for k, v in sorted(report["skipped"].items())))
    if failures:
        print(f"  warning: {failures} held-out documents did not decode back to their text", file=sys.stderr)
    print(f"  use it: python prepare.py --tokenizer={out}")


if __name__ == "__main__":
    main()
