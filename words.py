"""
words.py: English words and sentences as spaCy splits them, which is how datatrove (FineWeb's code)
counts them, without spaCy: one regular expression for the words, one loop for the sentences.

clean.py's Gopher and C4 rules count words and sentences, and sentence_dedup.py hashes spans of
sentences; both must split text as datatrove does, or the thresholds they copy mean something else.

    split_words(text)      the words (spaCy's tokens: punctuation marks are words too)
    count_words(text)      how many
    sentence_ends(text)    where each sentence ends, as spaCy's sentencizer would end it
    count_sentences(text)  how many
"""

import re
import unicodedata
from itertools import chain

# -----------------------------------------------------------------------------------------------
# words
#
# datatrove splits English into words with spaCy's tokenizer, which is accurate but slow (and a big
# dependency). It works chunk by chunk between spaces: it peels punctuation off the front (prefixes)
# and the back (suffixes) of a chunk, one mark at a time, then splits the rest only at a few 'infix'
# patterns (a hyphen between letters, a slash or colon before a letter, ...); anything else inside
# the chunk stays whole, so "print('hello')" is three words: print('hello ' ). One regular
# expression below does the same with spaCy's English rules, simplified: letters are Python's (spaCy
# lists scripts; its lower and upper case are followed, below), symbols (emoji, arrows) are
# approximated by a few Unicode blocks, and of spaCy's ~1,500 exceptions only the abbreviations
# that end in a period, "and/or", a few emoticons, the commonest words without their apostrophe
# (cannot, dont, id, ...), and the contraction endings (n't 's 'm 'd 'll 're 've, split after any
# word, where spaCy splits them after listed words) are kept. So a few chunks split differently
# ("5pm", "'d'", "x.Y"); bench/clean.py measures that the keep/drop decisions still agree with
# datatrove's (on every one of ~6,000 real pages tried).
ABBREVIATIONS = set("""Adm Ak Ala Apr Ariz Ark Aug Bros Calif Co Colo Conn Corp Dec Del Dr Feb Fla Ga Gen Gov Ia Id
    Ill Inc Ind Jan Jr Jul Jun Kan Kans Ky La Ltd Mar Mass Md Messrs Mich Minn Miss Mo Mont Mr Mrs Ms Mt Neb
    Nebr Nev Nov Oct Okla Ore Pa Prof Rep Rev Sen Sep Sept St Tenn Va Wash Wis co vs D.C E.G E.g I.E I.e N.C
    N.D N.H N.J N.M N.Y Ph.D S.C a.m e.g i.e p.m v.s""".split())  # spaCy keeps these with their period
EDGE = re.escape("…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉⟦⟧—–")
SYMBOL = "¦©®°\u2100-\u214f\u2300-\u23ff\u2500-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff"
CURRENCY = r"$£€¥฿₽﷼₠-₿"
LETTER = r"[^\W\d_]"


def letters_of_case(category, blocks):
    characters = (chr(c) for first, last in blocks for c in range(first, last + 1))
    return "".join(c for c in characters if unicodedata.category(c) == category)


# The lowercase and uppercase letters, as spaCy lists them (they decide where a period is split off,
# so where a sentence ends): those of the Latin blocks, the Cyrillic of Russian, Tatar, Ukrainian and
# Macedonian, the Greek with its commoner accents, and every character of the scripts without case
# (Hebrew, Arabic, Indic, Ethiopic, Hangul, kana, CJK), which count as both: "zatrzymać. Skrypt" and
# "أساسية. يعلم" are two sentences each.
LATIN_BLOCKS = [(0x41, 0x7A), (0xC0, 0x2AF), (0x1D00, 0x1DBF), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF),
                (0xAB30, 0xAB6F), (0xFF21, 0xFF5A)]
UNCASED = ("\u0591-\u05f4\ufb1d-\ufb4f\u0620-\u064a\u066e-\u06d5\u06e5-\u06ff\u0750-\u077f\u08a0-\u08bd"
           "\ufb50-\ufdfb\ufe70-\ufefc\u0900-\u097f\u0980-\u09ff\u0b80-\u0bff\u0c00-\u0cff\u0d80-\u0dff"
           "\u1200-\u137f\u1100-\u11ff\uac00-\ud7af\u3040-\u30ff\u2e80-\u2fdf\u2ff0-\u303f\u31c0-\u31ef"
           "\u3200-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\U0001f200-\U0001f2ff\U00020000-\U0002fa1f")
LOWER = letters_of_case("Ll", LATIN_BLOCKS) + "а-яёәөүҗңһіїєґѓѕјљњќѐѝα-ωάέίόώήύ" + UNCASED
UPPER = letters_of_case("Lu", LATIN_BLOCKS) + "А-ЯЁӘӨҮҖҢҺІЇЄҐЃЅЈЉЊЌЀЍΑ-ΩΆΈΊΌΏΉΎ" + UNCASED
# a mark spaCy peels off the end of a chunk; a period only after a lowercase letter, a digit, a mark
# or two capitals (so "A." and "U.S." keep theirs); units and currencies only after a digit
UNIT = rf"(?<=[0-9])(?:[{CURRENCY}+%]|[kKMGT]B|km|kg|cm|mm|mg|m|g)"
SUFFIX = rf"(?:['’][sS]|[{EDGE}{SYMBOL}]|\.\.+|(?<=[0-9{LOWER}%²+\-{EDGE}])\.|(?<=[{UPPER}][{UPPER}])\.|{UNIT})"
CHUNK_END = rf"(?:{SUFFIX})*+(?!\S)"  # nothing left in the chunk but suffixes
INFIX = (rf"(?:\.\.+|…|[{SYMBOL}]|(?<=[0-9])[-+*^](?=[0-9-])|(?<=[{LOWER}'\"])\.(?=[{UPPER}'\"])"
         rf"|(?<={LETTER}),(?={LETTER})|(?<=[^\W_])(?:---|--|——|[-–—~:<>=/])(?={LETTER}))")
CONTRACTION = rf"(?<=[^\W_])(?:n['’]t|['’](?:[md]|ll|re|ve))(?={CHUNK_END})"
START = rf"(?<![^\s{EDGE}§%=+{CURRENCY}])"  # at the start of a chunk, after any prefixes
# spaCy keeps a URL whole, or anything shaped like one: python.org/about, pathlib.Path.glob, a@b.org
# (the lookaheads are bounded, and each label matches one way only, so that no chunk takes long)
URL = (r"(?=\S{0,256}?\.[a-z])(?:[\w+.-]{2,}+://)?(?:(?=[^\s@]{0,256}@)\S+?@)?(?:[^\W_][\w-]*+(?<=[^\W_])\.)+"
       rf"[a-z]{{2,63}}(?::\d{{2,5}})?(?:[/?#]\S*?)?(?={CHUNK_END})")
ABBREVIATION = rf"(?=[A-Za-z][A-Za-z.]{{0,6}}\.)(?:{'|'.join(map(re.escape, sorted(ABBREVIATIONS)))}|[a-z])\."
WORD_RE = re.compile(
    rf"{START}(?:{ABBREVIATION}|and/or)(?={CHUNK_END})"            # exceptions spaCy keeps whole
    rf"|{START}(?:[Cc]an(?=not{CHUNK_END})|[Ii](?=[dm]{CHUNK_END})"     # cannot, id, im, and dont,
    rf"|(?:[Dd]o|[Dd]oes|[Dd]id|[Ii]s|[Ww]o|[Cc]a)(?=nt{CHUNK_END}))"  # doesnt, ... without apostrophe
    rf"|{LETTER}++(?={CHUNK_END})"                                 # a plain word (the fast path)
    r"|''|\):|\(:|:\)|:\(|:\]|\[:|:-\)|;\)|=\)|\(=|(?<![^\s(])8\)"   # emoticons spaCy keeps whole
    rf"|{CONTRACTION}|(?<=[^\W_])['’][sS](?={CHUNK_END})|\.\.+|…|[{EDGE}{SYMBOL}]"  # n't 's ... marks
    rf"|{START}(?:[§%={CURRENCY}]|\+(?![0-9])|{URL})"              # marks split only in front; a URL
    rf"|(?<=[^\s{EDGE}])\.|{UNIT}(?={CHUNK_END})"                  # a period or a unit at the end
    rf"|{INFIX}"                                                   # "well-known": the hyphen
    rf"|\S(?:[0-9]++|(?<![0-9])[^\W\d_n]++|(?!{INFIX}|{CONTRACTION}|{CHUNK_END})\S)*+")  # the rest


CHUNK_CACHE = {}  # chunk -> its words, per process: at most 200,000 chunks of at most 100 characters


def split_chunks(text):
    """The words of each whitespace-separated chunk of the text. Web text repeats its chunks (the,
    of, and, ...) so much that remembering how each one splits makes this several times faster."""
    chunks = text.split()
    new = set(chunks).difference(CHUNK_CACHE)
    if len(CHUNK_CACHE) + len(new) > 200_000:
        CHUNK_CACHE.clear()  # the common chunks come back at once
        new = set(chunks)
    for chunk in new:
        CHUNK_CACHE[chunk] = WORD_RE.findall(chunk)
    words = list(map(CHUNK_CACHE.__getitem__, chunks))
    for chunk in new:
        if len(chunk) > 100:  # rare ones, but they could fill the memory
            del CHUNK_CACHE[chunk]
    return words


def split_words(text):
    """Words, as spaCy's English tokenizer would give them."""
    return list(chain.from_iterable(split_chunks(text)))


def count_words(text):
    return sum(map(len, split_chunks(text)))


# -----------------------------------------------------------------------------------------------
# sentences
#
# spaCy's sentencizer works on the tokens: a sentence ends at a token that is one of the marks below
# ('.', '!', '?' and their cousins in other scripts; not '...', which is one token of three), and the
# next sentence starts at the first token after it that is not punctuation, so closing quotes and
# brackets stay with the sentence they close. Its tokens are the words above plus the whitespace:
# spaCy drops the single space after a token, and any other run of whitespace (a newline, two spaces)
# is a token of its own, which is no punctuation, so it starts the next sentence: 'Yes.\n"No."' is two
# sentences where 'Yes. "No."' keeps the quote with the first.
SENTENCE_END_MARKS = set("!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？𐩖𐩗𑁇𑁈𑂾𑂿𑃀𑃁𑅁𑅂𑅃𑇅𑇆𑇍𑇞𑇟𑈸𑈹𑈻𑈼𑊩𑑋𑑌𑗂𑗃𑗉𑗊𑗋𑗌𑗍𑗎𑗏𑗐𑗑𑗒𑗓𑗔𑗕𑗖𑗗𑙁𑙂𑜼𑜽𑜾𑩂𑩃𑪛𑪜𑱁𑱂𖩮𖩯𖫵𖬷𖬸𖭄𛲟𝪈｡。")
CHUNK_RE = re.compile(r"\S+")
WORD, PUNCTUATION, END_MARK = 0, 1, 2


def token_kind(token):
    if token in SENTENCE_END_MARKS:
        return END_MARK
    # spaCy's is_punct: every character is Unicode punctuation (P*); a digit such as '１' is not
    return PUNCTUATION if all(unicodedata.category(c)[0] == "P" for c in token) else WORD


CHUNK_SENTENCES = {}  # chunk -> chunk_sentences(chunk), per process, as CHUNK_CACHE


def chunk_sentences(chunk):
    """How the sentencizer passes through a chunk, worked out once per chunk: (where its first word
    token starts or None, whether an end mark comes before that word, where sentences end inside it
    after that word, whether an end mark is left pending at its end)."""
    first, mark_first, ends, seen, position = None, False, [], False, 0
    for token in WORD_RE.findall(chunk):  # a chunk's words are all of its characters, in order
        kind = token_kind(token)
        if kind == END_MARK:
            seen = True
        elif kind == WORD:
            if first is None:
                first, mark_first = position, seen
            elif seen:
                ends.append(position)  # the token before this word ends a sentence
            seen = False
        position += len(token)
    return first, mark_first, tuple(ends), seen


def sentence_ends(text):
    """The character offset where each sentence of the text ends: the end of its last token, so the
    whitespace between two sentences belongs to neither (datatrove gives it to the next one)."""
    ends, token_end, seen_end_mark = [], None, False
    if len(CHUNK_SENTENCES) > 200_000:
        CHUNK_SENTENCES.clear()
    previous_end = 0
    for run in CHUNK_RE.finditer(text):
        chunk, start = run.group(), run.start()
        if start > previous_end and (start - previous_end > 1 or text[previous_end] != " " or not previous_end):
            # whitespace before the chunk that is a token (not a single space after a token): it is
            # no punctuation, so it starts the next sentence if an end mark is pending
            if seen_end_mark:
                ends.append(token_end)
                seen_end_mark = False
            token_end = start
        if (summary := CHUNK_SENTENCES.get(chunk)) is None:
            summary = chunk_sentences(chunk)
            if len(chunk) <= 100:  # rare long ones could fill the memory
                CHUNK_SENTENCES[chunk] = summary
        first, mark_first, inside, seen = summary
        if first is None:  # punctuation only: an end mark in it stays pending
            seen_end_mark = seen_end_mark or seen
        else:
            if seen_end_mark or mark_first:  # its first word starts the next sentence
                ends.append(start + first if first else token_end)
            ends.extend(start + end for end in inside)
            seen_end_mark = seen
        token_end = previous_end = run.end()
    if len(text) > previous_end and (len(text) - previous_end > 1 or text[previous_end] != " " or not previous_end):
        if seen_end_mark:  # trailing whitespace after an end mark: spaCy makes it a sentence of its own
            ends.append(token_end)
        token_end = len(text)
    if token_end is not None:
        ends.append(token_end)
    return ends


def count_sentences(text):
    return len(sentence_ends(text))
