"""Tests for clean.py: every rule just inside and just outside its FineWeb threshold, the word
splitter against spaCy's output, language ID, PII, and the whole stage on the built-in sample."""

import gzip
import json
import random
import string
import struct
import sys
from collections import Counter
from pathlib import Path

import pytest

import clean
import url_filter
import words

CFG = clean.parse_config([])
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data/sample/docs.jsonl.gz"


def random_words(n, seed, length=(4, 8)):
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(*length))) for _ in range(n)]


def sentence(seed, end="."):
    """A line of plain prose: 11 distinct words with two stop words, about 70 characters."""
    w = random_words(9, seed)
    return " ".join(w[:4] + ["the"] + w[4:8] + ["and", w[8]]) + end


def prose(lines, seed=0):
    return [sentence(seed * 1000 + i) for i in range(lines)]


def letters(length, seed):
    """Random lowercase text of an exact length, a space every 8 characters (never at the ends)."""
    chars = random.Random(seed).choices(string.ascii_lowercase, k=length)
    for i in range(7, length - 2, 8):
        chars[i] = " "
    return "".join(chars)


def repetition(text):
    return clean.gopher_repetition(text, words.split_words(text), CFG)


def quality(text):
    return clean.gopher_quality(text, words.split_words(text), CFG)


# -----------------------------------------------------------------------------------------------
# Gopher repetition: each pair is (just inside, just outside) the rule's threshold


def repeated_units(k, sep):
    """6 lines of prose, then 'Note.' once and k more times: k repeats out of 7 + k units."""
    return sep.join(prose(6) + ["Note."] * (k + 1))


def long_repeat(sep, extra):
    """A unit W repeated once, holding 20% of the text's characters (+ extra characters)."""
    units = prose(3, seed=1)
    units[2] = units[2][:-1] + "!"  # W follows a different mark each time: no repeated bigram
    rest = sum(map(len, units)) + 4 * len(sep)
    rest += (-rest) % 3  # the text is 5 * len(W) characters when len(W) = rest / 3
    units[1] = units[1][:-1] + "x" * (rest - sum(map(len, units)) - 4 * len(sep)) + "."
    w = "w" * (rest // 3 + extra)
    return sep.join([units[0], w, units[1], units[2], w])


def top_ngram(gram, k, fraction):
    """An n-gram repeated k times among distinct words, padded so that it covers `fraction` of
    the characters (just inside) or a character more than that (just outside)."""
    fillers = random_words(k, seed=7)
    body = " ".join(f"{gram} {w}" for w in fillers)
    total = round(k * len(gram) / fraction)
    return [body + "\n" + letters(length - len(body) - 1, 1) for length in (total, total - 1)]


def repeated_ngram(n, fraction, extra):
    """n words (short, then one long) seen twice, covering `fraction` of a 1000-character text."""
    short = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr"][: n - 1]
    chars = round(fraction * 1000) + extra
    gram = " ".join(short + ["x" * (chars - sum(map(len, short)))])
    a, b = random_words(2, seed=3), random_words(2, seed=4)
    body = f"{' '.join(a)} {gram} {' '.join(b)} {gram} end"
    return body + "\n" + letters(1000 - len(body) - 1, 2)


REPETITION_CASES = {
    "dup_para_frac": (repeated_units(3, "\n\n"), repeated_units(4, "\n\n")),  # 3/10 vs 4/11
    "dup_para_char_frac": (long_repeat("\n\n", 0), long_repeat("\n\n", 1)),
    "dup_line_frac": (repeated_units(3, "\n"), repeated_units(4, "\n")),
    "dup_line_char_frac": (long_repeat("\n", 0), long_repeat("\n", 1)),
    "top_2_gram": tuple(top_ngram("ab cdefghij", 20, 0.20)),
    "top_3_gram": tuple(top_ngram("ab cd efghijkl", 9, 0.18)),
    "top_4_gram": tuple(top_ngram("ab cd ef ghijklmnop", 8, 0.16)),
    **{f"duplicated_{n}_n_grams": (repeated_ngram(n, f, 0), repeated_ngram(n, f, 1))
       for n, f in zip(range(5, 11), (0.15, 0.14, 0.13, 0.12, 0.11, 0.10))},
}


@pytest.mark.parametrize("rule", REPETITION_CASES)
def test_gopher_repetition_thresholds(rule):
    inside, outside = REPETITION_CASES[rule]
    assert repetition(inside) is None
    assert repetition(outside) == rule


def find_all_duplicate(words, n):
    """Brute-force reference for the duplicated n-gram rule as datatrove defines it: scan left to
    right; an n-gram (its words joined without spaces) seen before adds its characters and the scan
    jumps past it, otherwise the scan moves one word on."""
    seen, repeated, i = set(), 0, 0
    while i + n <= len(words):
        gram = "".join(words[i:i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def find_top_duplicate(words, n):  # the most common n-gram's characters times its count
    gram, count = Counter(" ".join(words[i: i + n]) for i in range(len(words) - n + 1)).most_common(1)[0]
    return len(gram) * count


def test_ngram_counts_match_datatrove():
    rng = random.Random(0)
    for trial in range(300):
        vocabulary = random_words(rng.randint(2, 12), seed=trial, length=(1, 6))
        words = [rng.choice(vocabulary) for _ in range(rng.randint(10, 80))]
        hashes = clean.ngram_hashes(words, 10)
        ends = clean.np.concatenate(([0], clean.np.cumsum([len(w) for w in words])))
        for n in range(2, 5):
            assert clean.top_ngram_chars(hashes[n], n, ends) == find_top_duplicate(words, n)
        for n in range(5, 11):
            if len(words) >= n:
                exact, bound = clean.repeated_ngram_chars(hashes[n], n, ends, 1, 0.0)  # no shortcut
                assert exact == find_all_duplicate(words, n) <= bound


# -----------------------------------------------------------------------------------------------
# Gopher quality


def words_text(words):
    return " ".join(words)


POOL = random_words(1000, seed=11)


def n_words(n, seed=0):
    """n words of plain prose, two of them stop words."""
    return ["the", "and"] + (random_words(n - 2, seed) if n < 1000 else (POOL * (n // 1000 + 1))[: n - 2])


QUALITY_CASES = {
    "gopher_short_doc": (words_text(n_words(50)) + ".", words_text(n_words(49)) + "."),
    "gopher_long_doc": (words_text(n_words(100_000)), words_text(n_words(100_001))),
    "gopher_below_avg_threshold": (words_text(["the", "and"] + ["abc"] * 58),
                                   words_text(["the", "and"] + ["abc"] * 57 + ["ab"])),
    "gopher_above_avg_threshold": (words_text(["the", "and"] + ["abcdefghij"] * 57 + ["x" * 24]),
                                   words_text(["the", "and"] + ["abcdefghij"] * 57 + ["x" * 25])),
    "gopher_too_many_hashes": (words_text(n_words(90) + ["#"] * 10), words_text(n_words(89) + ["#"] * 11)),
    "gopher_too_many_ellipsis": (words_text(["…"] * 10 + n_words(90)), words_text(["…"] * 11 + n_words(89))),
    "gopher_too_many_bullets": ("\n".join(["- " + s for s in prose(18)] + prose(2, seed=1)),
                                "\n".join(["- " + s for s in prose(19)] + prose(1, seed=1))),
    "gopher_too_many_end_ellipsis": ("\n".join([s[:-1] + "..." for s in prose(3)] + prose(7, seed=1)),
                                     "\n".join([s[:-1] + "..." for s in prose(4)] + prose(6, seed=1))),
    "gopher_below_alpha_threshold": (words_text(n_words(80) + ["12345"] * 20), words_text(n_words(79) + ["12345"] * 21)),
    "gopher_enough_stop_words": (words_text(n_words(60)), words_text(["the"] * 2 + random_words(58, 0))),
}


@pytest.mark.parametrize("rule", QUALITY_CASES)
def test_gopher_quality_thresholds(rule):
    inside, outside = QUALITY_CASES[rule]
    assert quality(inside) is None
    assert quality(outside) == rule


def test_gopher_letters_are_what_isalpha_says():
    # ½ ² ¼ Ⅻ ⅓ are word characters to a regular expression, but no letters to str.isalpha(),
    # which datatrove uses: 79 words of 100 holding a letter is below the 0.8 threshold
    numbers = ["½", "²", "¼", "Ⅻ", "⅓"] * 4 + ["½"]
    assert quality(words_text(n_words(79) + numbers)) == "gopher_below_alpha_threshold"
    assert quality(words_text(n_words(80) + numbers[:20])) is None  # 80 of 100: just inside
    assert quality(words_text(n_words(79) + ["x½"] + numbers[:20])) is None  # a letter beside ½ counts


# -----------------------------------------------------------------------------------------------
# C4, as FineWeb ran it


def c4(lines):
    stats = Counter()
    reason, text = clean.c4("\n".join(lines), CFG, stats)
    return reason, text, stats


def test_c4_line_rules():
    base = prose(5)
    for line, kept in [("word " * 2 + "x" * 1000, True), ("word " * 2 + "x" * 1001, False),  # too long word
                       ("three short words", True), ("two words", False),  # too few words
                       ("Enable JavaScript to see this page", False),
                       ("Read our privacy policy before you go", False), ("This site uses cookies, sorry", False)]:
        reason, text, stats = c4(base + [line])
        assert reason is None
        assert (line in text.split("\n")) == kept, line
        assert sum(v for k, v in stats.items() if k.startswith("c4_line:")) == (0 if kept else 1)
    reason, text, _ = c4(base + ["   padded line with [1] a citation [edit] here   "])
    assert text.split("\n")[-1] == "padded line with  a citation  here"  # stripped, citations removed
    assert c4(base + ["", "  "])[1] == "\n".join(base)  # blank lines go (fewer than 3 words)


def test_c4_document_rules():
    base = prose(5)
    assert c4(base + ["Lorem ipsum dolor sit amet"])[0] == "lorem_ipsum"
    assert c4(base + ["lorem", "ipsum dolor sit"])[0] is None
    assert c4(base + ["if (x) { return y; }"])[0] == "curly_bracket"
    assert c4(base + ["{ x"])[0] is None  # a line of two words is dropped before the bracket counts
    assert c4(base + ["function () { javascript }"])[0] is None  # javascript lines go first
    assert c4(prose(5))[0] is None and c4(prose(4))[0] == "too_few_sentences"  # one sentence a line
    assert c4(prose(3) + ["First one here. And a second one! A third? Yes."])[0] is None  # 3 + 4
    assert c4(prose(3) + ["See e.g. the docs by Mr. Smith at 3.14 p.m. today."])[0] == "too_few_sentences"


def test_sentence_count_follows_spacy():
    cases = {"One here. Two here! Three here? Four.": 4, "Version 3.11 is out.": 1, "Wait... then go.": 1,
             "Ask Mr. Smith, e.g. today.": 1, "The U.S. and A. B. Smith.": 1, "Etc. and so on.": 2,
             "Quoted: \"Yes.\" Then more.": 2, "(See above.) Next one.": 2,
             # spaCy ends sentences inside a chunk too, where its tokenizer splits a period off
             "It works.Then it stops.And so on.": 3, "Use smtplib.SMTP.sendmail() now. Then quit.": 2,
             # a full-width digit is no punctuation (datatrove's PUNCTUATION string lists it)
             "It ends here. １ more starts here.": 2,
             # a newline is a token of its own, which starts the next sentence; a single space is not
             'Yes.\n"No." Maybe.': 3, "One.  Two spaces.": 2, "Is it?!Yes": 1, "Wait...Next one.": 1,
             # spaCy splits a period off after a lowercase letter of any Latin block, and after any
             # letter of a script without case
             "Skrypt należy zatrzymać. Skrypt nie uruchomi żadnej usługi.": 2, "هذا أساسية. يعلم مدير النظم.": 2}
    for line, n in cases.items():
        assert words.count_sentences(line) == n, line


def test_c4_terminal_punctuation_flag():
    lines = prose(5) + ["a line without an end mark"]
    assert c4(lines)[1].endswith("mark")  # FineWeb's setting: the rule is off
    strict = clean.parse_config(["--c4_terminal_punct"])
    assert not clean.c4("\n".join(lines), strict, Counter())[1].endswith("mark")


# -----------------------------------------------------------------------------------------------
# FineWeb's rules


def fineweb(lines):
    return clean.fineweb("\n".join(lines), CFG)


def exact_chars(lines, total, seed):
    """Append a line so that the lines hold exactly `total` characters, newlines not counted."""
    return lines + [letters(total - sum(map(len, lines)) - 1, seed) + "."]


FINEWEB_CASES = {
    "line_punct_ratio": ([s if i < 12 else s[:-1] for i, s in enumerate(prose(100))],
                         [s if i < 11 else s[:-1] for i, s in enumerate(prose(100))]),
    "short_line_ratio": ([letters(20, i) + "." for i in range(67)] + prose(33),
                         [letters(20, i) + "." for i in range(68)] + prose(32)),
    # one line seen twice: its 40 characters are 1% of 4000 (or a bit more of 3999)
    "char_dup_ratio": (exact_chars(prose(40) + ["A line of forty characters, said twice!!"] * 2, 4000, 5),
                       exact_chars(prose(40) + ["A line of forty characters, said twice!!"] * 2, 3999, 5)),
    # 10 lines of 3 words ('word word.') and 9 or 10 newlines: 0.3 or 0.33 newlines per word
    "list_ratio": ([letters(15, i).replace(" ", "x") + " " + letters(15, -i).replace(" ", "y") + "." for i in range(10)],
                   [letters(15, i).replace(" ", "x") + " " + letters(15, -i).replace(" ", "y") + "." for i in range(10)] + [""]),
}


@pytest.mark.parametrize("rule", FINEWEB_CASES)
def test_fineweb_thresholds(rule):
    inside, outside = FINEWEB_CASES[rule]
    assert fineweb(inside) is None
    assert fineweb(outside) == rule


def test_zero_turns_the_repetition_and_fineweb_rules_off():
    """As for every other threshold (README, --help): 0 is off, not 'drop on the least'. A page of
    prose with a short line said twice and a 5-gram said twice passes FineWeb's defaults."""
    lines = prose(10) + ["Yes.", "we went to the shop and bought milk.",
                         "later we went to the shop again.", "Yes."]
    text = "\n".join(lines)
    assert repetition(text) is None and fineweb(lines) is None
    for flags in (["--top_ngram_fracs=0,0,0"], ["--dup_ngram_fracs=0,0,0,0,0,0"],
                  ["--short_line_thr=0"], ["--char_duplicates_ratio=0"], ["--new_line_ratio=0"]):
        cfg = clean.parse_config(flags)
        assert clean.gopher_repetition(text, words.split_words(text), cfg) is None, flags
        assert clean.fineweb(text, cfg) is None, flags


# -----------------------------------------------------------------------------------------------
# words: the regular expression against spaCy's English tokenizer (spacy 3.8, spacy.blank("en"),
# whitespace tokens dropped as datatrove does)

SPACY = {
    "Hello, world! Don't stop: it's John's car (really).":
        "Hello , world ! Do n't stop : it 's John 's car ( really ) .",
    "Skrypt należy zatrzymać. هذا أساسية. İşler dahaçok.Yıllar geçti.":
        "Skrypt należy zatrzymać . هذا أساسية . İşler dahaçok . Yıllar geçti .",
    "/usr/share/doc and/or key=value x=1 3-4 utf-8 well-known e.g. etc. U.S. HELLO. file.txt end.Next":
        "/usr / share / doc and/or key = value x=1 3 - 4 utf-8 well - known e.g. etc . U.S. HELLO . file.txt end . Next",
    "foo(bar) *args #include <stdio.h> $HOME ~/.bashrc --verbose a->b std::vector 50% 10km 'q' dogs' wait...":
        "foo(bar ) * args # include < stdio.h > $ HOME ~/.bashrc --verbose a->b std::vector 50 % 10 km ' q ' dogs ' wait ...",
    "https://example.com/a/b?c=d. me@example.org, 1,000 3.14 v2.0.1 O'Brien can't I'm we've cannot":
        "https://example.com/a/b?c=d . me@example.org , 1,000 3.14 v2.0.1 O'Brien ca n't I 'm we 've can not",
    "print('hello') foo(): None)¶ pathlib.Path.glob() distutils-sig@python.org Mr. Smith __init__ x.":
        "print('hello ' ) foo ( ): None)¶ pathlib.Path.glob ( ) distutils-sig@python.org Mr. Smith _ _ init _ _ x.",
}


@pytest.mark.parametrize("text", SPACY)
def test_words_match_spacy(text):
    assert words.split_words(text) == SPACY[text].split()


def test_pathological_chunks_are_handled():
    # long runs that make a careless regular expression backtrack for ages (base64 data, dots...)
    doc = " ".join([SAMPLES["en"] * 3, "a." * 5000, "." * 20000, "a=" * 5000, "1.2" * 5000, "x@" + "a.b" * 3000,
                    "http://a.com/" + ")" * 5000 + "x", "@ mail me at jane@doe.org"])
    stats = Counter()
    split = words.split_words(doc)
    assert split[-1] == "jane@doe.org" and "." * 20000 in split
    assert clean.run_filters({"id": "x", "text": doc}, CFG, stats)[0] is not None
    assert "jane@doe.org" not in clean.replace_pii(doc, stats) and stats["pii:email"] == 1


def test_words_cache_gives_the_same_words():
    text = "Some words, and the same words again: words, words."
    assert words.split_words(text) == words.split_words(text) == words.WORD_RE.findall(text)


# -----------------------------------------------------------------------------------------------
# language ID

SAMPLES = {
    "en": "The Debian project is an association of individuals who have made common cause to create a free operating system.",
    "de": "Das Debian-Projekt ist eine Vereinigung von Einzelpersonen, die gemeinsam ein freies Betriebssystem entwickeln.",
    "fr": "Le projet Debian est une association de personnes qui ont pour cause commune de créer un système d'exploitation libre.",
    "es": "El proyecto Debian es una asociación de personas que han hecho causa común para crear un sistema operativo libre.",
    "ru": "Проект Debian — это объединение людей, которые решили вместе создать свободную операционную систему.",
    "ja": "Debian プロジェクトは、フリーなオペレーティングシステムを作るという共通の目的を持った個人の集まりです。",
    "zh": "Debian 项目是一个由个人组成的团体，他们有着共同的目标，那就是创建一个自由的操作系统。",
}


def test_language_model_is_lid176():
    # fastText's file header: magic, version, 12 int32 + 1 double of training arguments, then the
    # dictionary's size, words and labels. lid.176: 16 dimensions, char 2- to 4-grams, 176 labels
    with open(CFG.language_model, "rb") as f:
        header = struct.unpack("<2i12id3i", f.read(76))
    magic, version, dim, *_, minn, maxn, _, _, _, nwords, nlabels = header
    assert (magic, dim, minn, maxn, nlabels) == (793712314, 16, 2, 4, 176)
    labels, _ = clean.load_language_model(CFG.language_model).predict("hello world", k=500)
    assert labels[0] == "__label__en" and "__label__war" in labels


def test_all_176_labels_are_read_through_predict_alone():
    """fasttext-predict's models have no get_labels(); predict(k=-1) at threshold 0 leaves out the 9
    labels whose probability rounds to 0 on the text asked about."""
    import quality
    from fasttext.FastText import load_model  # the full fastText's, not the tests' predict-only one
    full = load_model(CFG.language_model)
    labels = quality.fasttext_labels(clean.load_language_model(CFG.language_model))
    assert labels == set(full.get_labels()) and len(labels) == 176


@pytest.mark.parametrize("language", SAMPLES)
def test_language_id(language):
    doc = {"id": "x", "text": SAMPLES[language].replace(" ", "\n", 3)}  # newlines become spaces
    stats = Counter()
    name, reason = clean.run_filters(doc, clean.parse_config(["--filters=language"]), stats)
    assert doc["language"] == language and doc["language_score"] > 0.65
    assert (name, reason) == ((None, None) if language == "en" else ("language", language))
    both = clean.parse_config(["--filters=language", "--languages=en,de"])
    assert (clean.run_filters(dict(doc), both, stats)[0] is None) == (language in ("en", "de"))


def test_language_threshold():
    doc = {"id": "x", "text": "Debian stable"}
    strict = clean.parse_config(["--filters=language", "--language_threshold=0.9999"])
    assert clean.run_filters(dict(doc, text=SAMPLES["en"]), strict, Counter()) == ("language", "low_score")


def test_languages_flag_with_spaces(capsys):
    assert clean.parse_config(["--languages=en, de"]).languages == {"en", "de"}  # not " de"
    with pytest.raises(SystemExit):
        clean.parse_config(["--languages="])  # every page dropped, as language ''
    assert "--languages" in capsys.readouterr().err


# -----------------------------------------------------------------------------------------------
# PII and the URL blocklist


def test_pii():
    stats = Counter()
    text = ("Mail jane.doe@corp.com or bob@mail.example.org, ping 8.8.8.8 and 93.184.216.34 or "
            "2606:4700:4700::1111; not 10.0.0.1, 192.168.1.20, 127.0.0.1, 169.254.1.1, ::1, fe80::1, "
            "[::ffff:127.0.0.1], tcp6 ::1:25, version 1.2.3.4.5, v1.2.3.4, git 2.20.1.155.g426c, or 3.11.")
    out = clean.replace_pii(text, stats)
    assert "jane.doe" not in out and "bob@" not in out
    assert "email@example.com" in out and "firstname.lastname@example.org" in out  # cycled
    for public in ("8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"):
        assert public not in out
    for private in ("10.0.0.1", "192.168.1.20", "127.0.0.1", "169.254.1.1", "::1", "fe80::1", "::ffff:127.0.0.1",
                    "::1:25", "1.2.3.4.5", "v1.2.3.4", "2.20.1.155.g426c"):
        assert private in out
    assert stats == {"pii:email": 2, "pii:ip": 3}
    assert out.count("22.214.171.124") == 1 and "126.96.36.199" in out  # placeholders cycle


def test_pii_in_a_chunk_of_over_2000_characters():
    """A JSON blob or a long comma-separated list is one chunk between spaces: its addresses go
    too (they were kept, to spare the expression a long chunk)."""
    users = ",".join(f'{{"name":"user{i}","mail":"user{i}@corp.com"}}' for i in range(60))
    blob = '{"users":[' + users + "]}"
    stats = Counter()
    out = clean.replace_pii(f"The export: {blob} (end)", stats)
    assert len(blob) > 2000 and "@corp.com" not in out and stats["pii:email"] == 60
    assert out.startswith('The export: {"users":[{"name":"user0","mail":"email@example.com"},')


def test_url_blocklist(tmp_path):
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("# spam\nspam.example\nhttps://ok.example/bad-page\nwww.other.example\n")
    entries = url_filter.load_user_list(str(blocklist))
    assert url_filter.url_listed("https://www.spam.example/x", entries)
    assert url_filter.url_listed("http://a.b.spam.example", entries)
    assert url_filter.url_listed("https://ok.example/bad-page/", entries)
    assert not url_filter.url_listed("https://ok.example/good-page", entries)
    assert not url_filter.url_listed("https://notspam.example", entries)
    assert url_filter.url_listed("https://www.other.example/a", entries)
    assert not url_filter.url_listed("https://other.example/a", entries)
    # an entry ending in '/' matches that URL, with or without it (it matched nothing)
    (slashed := tmp_path / "slashed.txt").write_text("https://ok.example/docs/\nhttps://home.example/\n")
    entries = url_filter.load_user_list(str(slashed))
    assert url_filter.url_listed("https://ok.example/docs/", entries)
    assert url_filter.url_listed("https://ok.example/docs", entries)
    assert url_filter.url_listed("https://home.example/", entries)
    assert not url_filter.url_listed("https://ok.example/docs/other", entries)


def test_url_filter_rules_as_datatrove():
    # each case gets the rule datatrove 0.10.1's URLFilter gives it, on the same lists (bench/clean.py
    # compares the two on ~3,400 URLs), but for the two differences url_filter.py's docstring gives
    lists = url_filter.load_lists(url_filter.DEFAULT_LISTS)
    with gzip.open(url_filter.DEFAULT_LISTS / "domains.txt.gz", "rt") as f:
        listed = [next(d for d in f if d.count(".") == 1).strip(), next(d for d in f if d.count(".") == 2).strip()]
    top, sub = listed  # a registered domain, and a host name under a domain that is not listed
    soft = sorted(lists["soft_banned_words"])
    banned = sorted(lists["banned_words"])[0]
    subword = sorted(lists["banned_subwords"].pattern.replace("\\", "").split("|"), key=len)[-1]
    cases = {
        f"https://{top}/": "domain", f"http://www.{top}/a/b.html": "domain", f"https://{sub}/x": "subdomain",
        f"https://www.{sub}/x": None,  # neither its registered domain nor its full name is listed
        "https://www.python.org/doc/": None, "https://docs.python.org/3/library/re.html": None,
        f"https://example.com/{banned}/page": "hard_blacklisted",
        f"https://example.com/{banned}s": None,  # words are whole runs of letters and digits
        f"https://example.com/{banned.upper()}": None,  # as written: datatrove does not lowercase them
        f"https://example.com/{soft[0]}": None, f"https://example.com/{soft[0]}/{soft[0]}": None,
        f"https://example.com/{soft[0]}-{soft[1]}": "soft_blacklisted",
        f"https://example.com/x-{subword[:3]}_{subword[3:].upper()}-y": "blacklisted_subword",
        "http://[::1/page": None, "": None,
    }
    for url, rule in cases.items():
        assert url_filter.url_rule(url, lists) == rule, url
    assert url_filter.url_rule(f"https://example.com/{soft[0]}", lists, soft_word_threshold=1) == "soft_blacklisted"
    # the differences: host names ignore case, and the URL list is matched without the scheme
    assert url_filter.url_rule(f"https://WWW.{top.upper()}/", lists) == "domain"
    with gzip.open(url_filter.DEFAULT_LISTS / "urls.txt.gz", "rt") as f:
        listed_url = next(u for u in f if url_filter.url_rule("https://" + u.strip(), lists) == "url").strip()
    assert url_filter.url_rule("http://" + listed_url, lists) == "url"
    assert url_filter.url_rule("http://" + listed_url + "/more", lists) != "url"


def test_url_filter_in_the_chain(tmp_path):
    lists = url_filter.load_lists(url_filter.DEFAULT_LISTS)
    soft = sorted(lists["soft_banned_words"])
    url = f"https://example.com/{soft[0]}-{soft[1]}"
    doc = {"id": "x", "text": SAMPLES["en"], "url": url}
    assert clean.run_filters(dict(doc), CFG, Counter()) == ("url", "soft_blacklisted")
    allow = tmp_path / "allow.txt"
    allow.write_text("example.com\n")
    allowed = clean.parse_config([f"--url_allowlist={allow}", "--filters=url"])
    assert clean.run_filters(dict(doc), allowed, Counter()) == (None, None)
    no_lists = clean.parse_config(["--url_lists=", "--filters=url"])
    assert clean.run_filters(dict(doc), no_lists, Counter()) == (None, None)


# -----------------------------------------------------------------------------------------------
# the whole stage on the built-in sample (real pages: Python, PostgreSQL, git, Debian handbook)


def run_clean(tmp_path, name, *flags, input_dir="in"):
    out = tmp_path / name
    argv = sys.argv
    sys.argv = ["clean.py", f"--input={tmp_path / input_dir}", f"--output={out}", *flags]
    try:
        clean.main()
    finally:
        sys.argv = argv
    return out, json.loads((out / "report.json").read_text())


def test_a_language_model_that_is_no_model_stops_the_run(tmp_path, capsys):
    """Not each page dropped as a filter error, and the shards marked done, so that a rerun with
    the right model would skip them."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"id": "a", "text": prose(10)[0]}) + "\n")
    (tmp_path / "model.bin").write_text("not a model")
    with pytest.raises(SystemExit):
        run_clean(tmp_path, "out", f"--language_model={tmp_path / 'model.bin'}", "--workers=1")
    assert "--language_model" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.jsonl.gz").exists()


@pytest.mark.parametrize("languages", ["zz", "en-US", "en,xx"])
def test_a_language_the_model_never_gives_stops_the_run(tmp_path, capsys, languages):
    """fastText's labels are lowercase codes without a region: en-US or zz dropped every page, as
    the wrong language, without a word. EN is en."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"id": "a", "text": SAMPLES["en"]}) + "\n")
    with pytest.raises(SystemExit):
        run_clean(tmp_path, "out", f"--languages={languages}", "--filters=language", "--workers=1")
    assert "error: --languages: " in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.jsonl.gz").exists()
    _, report = run_clean(tmp_path, "upper", "--languages=EN", "--filters=language", "--workers=1")
    assert report["totals"]["docs_out"] == 1


def test_a_rerun_without_save_rejected_leaves_no_stale_rejects(tmp_path):
    """Rerun with other thresholds and no --save_rejected: rejected/ kept the pages the first run
    dropped, pages that were now in the output too."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"id": "a", "text": "\n".join(prose(10))}) + "\n")
    flags = ["--filters=gopher_quality", "--workers=1"]
    run_clean(tmp_path, "out", "--save_rejected", "--min_doc_words=10000", *flags)
    assert [d["id"] for d in read(tmp_path / "out" / "rejected" / "a.jsonl.gz")] == ["a"]
    run_clean(tmp_path, "out", *flags)
    assert [d["id"] for d in read(tmp_path / "out" / "a.jsonl.gz")] == ["a"]
    assert not (tmp_path / "out" / "rejected" / "a.jsonl.gz").exists()


def test_a_nan_threshold_is_one_line(capsys):
    """float() takes "nan": --language_threshold=nan dropped every page (no score is > nan), and
    a nan elsewhere turned its rule off, both without a word."""
    for flag in ("--language_threshold=nan", "--line_punct_thr=NaN", "--quality_threshold=nan"):
        with pytest.raises(SystemExit):
            clean.parse_config([flag, "--quality_model=."])
        assert f"error: {flag.split('=')[0]}=nan: a threshold needs a number" in capsys.readouterr().err


def test_ngram_fracs_that_are_not_numbers_are_one_line(capsys):
    for flag in ("--top_ngram_fracs=a,b,c", "--dup_ngram_fracs=0.1,,0.1,0.1,0.1,0.1", "--dup_ngram_fracs=0.1",
                 "--top_ngram_fracs=0.2,nan,0.16"):
        with pytest.raises(SystemExit):
            clean.parse_config([flag])
        assert "error: --top_ngram_fracs takes 3 numbers" in capsys.readouterr().err
    assert clean.parse_config([]).top_ngram_fracs == [0.2, 0.18, 0.16]


def read(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory):
    """The whole sample once; its first 400 documents with 1 and with 2 workers."""
    tmp_path = tmp_path_factory.mktemp("clean")
    broken = '{"id": "a", "text": "fine but short"}\n{not json\n{"id": "b"}\n{"id": "c", "text": 7}\n'
    for folder, text in (("in", SAMPLE.read_bytes()), ("small", b"".join(gzip.open(SAMPLE).readlines()[:400]))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "sample.jsonl.gz").write_bytes(text if folder == "in" else gzip.compress(text))
        with gzip.open(tmp_path / folder / "broken.jsonl.gz", "wt") as f:
            f.write(broken)
    whole = run_clean(tmp_path, "one", "--workers=2", "--save_rejected")
    one, two = (run_clean(tmp_path, f"small-{n}", f"--workers={n}", "--save_rejected", input_dir="small")
                for n in (1, 2))
    return tmp_path, whole, (one, two)


def test_sample_same_output_for_any_worker_count(sample_runs):
    _, _, ((one, _), (two, _)) = sample_runs
    assert read(one / "sample.jsonl.gz") and read(one / "rejected/sample.jsonl.gz")
    for name in ("sample.jsonl.gz", "broken.jsonl.gz", "rejected/sample.jsonl.gz"):
        assert (one / name).read_bytes() == (two / name).read_bytes()


def test_sample_report_and_outputs(sample_runs):
    _, (out, report), _ = sample_runs
    totals = report["totals"]
    kept = read(out / "sample.jsonl.gz") + read(out / "broken.jsonl.gz")
    rejected = read(out / "rejected/sample.jsonl.gz") + read(out / "rejected/broken.jsonl.gz")
    sample = read(SAMPLE)
    assert totals["docs_in"] == len(sample) + 1 == len(kept) + len(rejected)
    assert totals["docs_out"] == len(kept) and totals["bytes_out"] == sum(len(d["text"].encode()) for d in kept)
    assert sum(v for k, v in totals.items() if k.count(":") == 1 and k.startswith("rejected:")) == len(rejected)
    assert totals["bad_input:malformed_json"] == 1 and totals["bad_input:missing_text"] == 1
    assert totals["bad_input:text_not_string"] == 1
    assert all(d["language"] == "en" and d["language_score"] > 0.65 for d in kept)
    assert all(d["filter"] in clean.FILTERS and d["reason"] for d in rejected)
    # the handbook pages in other languages (the sample's manifest) all go, nearly all for their
    # language (lid.176 calls one Chinese page full of shell commands English, at 0.81)
    planted = json.loads((ROOT / "data/sample/planted.json").read_text())["non_english"]
    filters = Counter({d.get("url"): d["filter"] for d in rejected}.get(url) for url in planted)
    assert filters["language"] >= 0.95 * len(planted) and None not in filters
    # the sample of 2,324 documents (rebuilt larger in round 2): clean.py kept 1,181 when it was built;
    # datatrove's own count on it is for bench/clean.py --docs=data/sample/docs.jsonl.gz to re-measure
    # (on the earlier 377-document sample both kept 102). Allow 2% of documents either way.
    assert abs(len(kept) - 1181) <= 0.02 * len(sample)


def test_sample_rerun_skips_done_shards(sample_runs):
    tmp_path, (out, report), _ = sample_runs
    before = (out / "sample.jsonl.gz").stat().st_mtime_ns
    _, again = run_clean(tmp_path, "one", "--workers=1", "--save_rejected")
    assert again["shards_skipped_done"] == 2 and again["totals"] == report["totals"]
    assert (out / "sample.jsonl.gz").stat().st_mtime_ns == before


def test_rerun_after_editing_the_blocklist_redoes_the_shards(tmp_path):
    """The same --url_blocklist name, new contents: the shards are cleaned again, not skipped."""
    (tmp_path / "in").mkdir()
    docs = [{"id": "a", "url": "https://spam.example/a", "text": prose(10)[0]}]
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("# nothing yet\n")
    flags = [f"--url_blocklist={blocklist}", "--filters=url", "--url_lists=", "--workers=1"]
    out, _ = run_clean(tmp_path, "out", *flags)
    assert len(read(out / "a.jsonl.gz")) == 1
    blocklist.write_text("spam.example\n")
    url_filter._cache.clear()  # a new run of clean.py reads the file again
    out, report = run_clean(tmp_path, "out", *flags)
    assert read(out / "a.jsonl.gz") == [] and report["shards_processed"] == 1


def test_rerun_after_editing_a_file_in_the_url_lists_folder_redoes_the_shards(tmp_path):
    """--url_lists names a folder: a word added to its banned_words.txt changed neither the flag nor
    the folder's own modification time, so the shards were skipped as done, the new word unused."""
    (tmp_path / "in").mkdir()
    docs = [{"id": "a", "url": "https://spam.example/a", "text": prose(10)[0]}]
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("domains.txt.gz", "urls.txt.gz"):
        with gzip.open(lists / name, "wt") as f:
            f.write("blocked.example\n")
    for name, content in (("banned_words.txt", "porn\n"), ("soft_banned_words.txt", "xxx\n"),
                            ("banned_subwords.txt", "zzzqqq\n")):
        (lists / name).write_text(content)
    flags = ["--filters=url", f"--url_lists={lists}", "--workers=1"]
    out, _ = run_clean(tmp_path, "out", *flags)
    assert len(read(out / "a.jsonl.gz")) == 1
    with open(lists / "banned_words.txt", "a") as f:
        f.write("spam\n")
    url_filter._cache.clear()  # a new run of clean.py reads the files again
    out, report = run_clean(tmp_path, "out", *flags)
    assert read(out / "a.jsonl.gz") == [] and report["shards_processed"] == 1
    assert report["totals"]["rejected:url:hard_blacklisted"] == 1
