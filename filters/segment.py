"""Sentence segmentation for the NLI consistency check, plus the sentence roles stage 2 needs.

``split_sentences`` is rule-based and deterministic. It keeps these spans whole, because the
cross-encoder should see them inside their sentence: decimals (``3.5``), common abbreviations
(``e.g.``, ``Dr.``, ``U.S.``), inline and display math (``$...$``, ``$$...$$``, ``\\(...\\)``,
``\\[...\\]``), inline code, and GSM8K calculator annotations (``<<48/2=24>>``). Fenced code
blocks are dropped entirely because NLI does not check code. Chinese and Japanese full-width
sentence punctuation (。！？；) ends a sentence without a following space.
"""

import re

# Words that end with a period without ending a sentence. Matched case-insensitively against
# the word directly before the period.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st mt vs etc approx appx dept est fig figs eq eqs no nos vol vols
    ch sec secs p pp ed eds al inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec
    mon tue wed thu fri sat sun cf resp ca viz min max avg
    """.split()
)

_FENCED_CODE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[^\n]*$|\Z)", re.DOTALL | re.MULTILINE)

# Spans whose inner punctuation must not end a sentence. Order matters: display math before
# inline math so that ``$$`` is not read as two empty inline spans.
_PROTECTED_SPANS = re.compile(
    r"\$\$.+?\$\$"  # display math
    r"|\\\[.+?\\\]"  # \[ ... \]
    r"|\\\(.+?\\\)"  # \( ... \)
    r"|\$(?![\s$])[^$\n]{0,400}?(?<![\s\\])\$(?!\d)"  # inline math, pandoc rule: no space inside the delimiters
    r"|`[^`\n]+`"  # inline code
    r"|<<[^<>\n]{0,200}>>",  # GSM8K calculator annotation
    re.DOTALL,
)
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")

_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)]|\(?[ivxIVX]{1,4}[.)])\s+")

# A sentence boundary inside one line: terminal punctuation, optional closing quotes or brackets,
# then whitespace. Full-width CJK punctuation needs no whitespace after it.
_ASCII_END = re.compile(r"([.!?]+)([\"'”’)\]]*)(\s+)")
_CJK_END = re.compile(r"([。！？；]+|[!?](?=[\u3000-\u9fff]))([”’」』）]*)")

_WORD_BEFORE = re.compile(r"([A-Za-z]+(?:\.[A-Za-z]+)*)$")

_FINAL_MARKERS = (
    re.compile(r"^\s*####\s*\S"),  # GSM8K final answer line
    re.compile(r"\\boxed\s*\{"),
    re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\b", re.IGNORECASE),
    re.compile(r"^\s*(?:final\s+)?answer\s*[:：]", re.IGNORECASE),
)

_GIVEN_CLAUSE = re.compile(
    r"^\s*(?:given\s+that|assuming\s+that|assuming|suppose\s+that|suppose|if\s+we\s+know\s+that|since)\s+"
    r"(?P<premise>[^,?]{3,}),",
    re.IGNORECASE,
)

# Instructions to the model are not premises about the world, so they are never used as one.
_INSTRUCTION_START = re.compile(
    r"^\s*(?:please\s+)?(?:solve|write|explain|describe|summari[sz]e|translate|list|show|give|tell|"
    r"make\s+sure|answer|compute|calculate|find|determine|prove|provide|generate|create|use|return|"
    r"put|format|respond|think|consider|read|study|note|recall|observe|notice|check|verify|try|apply|"
    r"look|simplify|evaluate|derive|express|factor|rewrite|count|compare|you\s+are|you\s+will|your\s+task)\b",
    re.IGNORECASE,
)
# A question that lost its question mark ("Is this sequence periodic, and if so, find its period.")
# still asks instead of stating, so it is never a premise either.
_INTERROGATIVE_START = re.compile(
    r"^\s*(?:is|are|was|were|does|do|did|can|could|will|would|should|has|have|what|which|who|whom|whose|"
    r"when|where|why|how)\b",
    re.IGNORECASE,
)


# Sentences that set up a case or a supposition instead of asserting a fact. A proof by
# contradiction ("Assume X. ... Thus X is impossible.") or a case split ("For d=1, ... For d=3,
# ...") would otherwise read as a contradiction.
_HYPOTHETICAL_START = re.compile(
    r"^\s*(?:assume|assuming|suppose|supposing|if|let|define|consider|case|when|whenever|otherwise|"
    r"for\s+(?:example|instance|each|every|all|any|some|[a-zA-Z]\b|[a-zA-Z]_?\w*\s*[=<>≤≥]))\b",
    re.IGNORECASE,
)
# Equations, inequalities and LaTeX math: the NLI model cannot read them, so numeric claims are
# left to the rule-based math checks of stage 3.
_FORMULA = re.compile(r"[=<>≤≥≠≡≈^|√∑∏∫±×÷∞]|\\[a-zA-Z]+|\$[^$]+\$|\\\(")


def _protect(text: str) -> tuple[str, list[str]]:
    spans: list[str] = []

    def keep(match: re.Match) -> str:
        spans.append(match.group(0))
        return f"\ue000{len(spans) - 1}\ue001"

    return _PROTECTED_SPANS.sub(keep, text), spans


def _restore(text: str, spans: list[str]) -> str:
    return _PLACEHOLDER.sub(lambda m: spans[int(m.group(1))], text)


def _is_abbreviation(before: str) -> bool:
    """Decide whether the text ending just before a period ends in an abbreviation."""
    match = _WORD_BEFORE.search(before)
    if not match:
        return False
    word = match.group(1)
    if "." in word:  # dotted forms such as "e.g", "i.e", "U.S"
        return True
    if len(word) == 1 and word.isupper():  # an initial, as in "J. Smith"
        return True
    return word.lower() in _ABBREVIATIONS


def _split_line(line: str) -> list[str]:
    """Split one line of prose, with protected spans already replaced by placeholders."""
    marker = _LIST_MARKER.match(line)
    start = marker.end() if marker else 0
    pieces: list[str] = []
    begin = 0
    for match in _ASCII_END.finditer(line, start):
        end = match.end(2)
        following = line[match.end() : match.end() + 1]
        punctuation = match.group(1)
        if punctuation == "." or punctuation.endswith("."):
            if punctuation == "." and _is_abbreviation(line[begin : match.start()]):
                continue
            if following and following.islower():
                continue
        pieces.append(line[begin:end])
        begin = match.end()
    pieces.append(line[begin:])

    sentences: list[str] = []
    for piece in pieces:
        cursor = 0
        for match in _CJK_END.finditer(piece):
            sentences.append(piece[cursor : match.end()])
            cursor = match.end()
        sentences.append(piece[cursor:])
    return [s.strip() for s in sentences if s.strip()]


def _join_wrapped_lines(lines: list[str]) -> list[str]:
    """Join hard-wrapped prose: a line ending in a lowercase letter or comma continues on a line
    that starts with a lowercase letter. Every other newline ends a sentence."""
    joined: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            joined.append("")
            continue
        previous = joined[-1] if joined else ""
        if previous and (previous[-1].islower() or previous[-1] == ",") and stripped[0].islower():
            joined[-1] = previous + " " + stripped
        else:
            joined.append(stripped)
    return [line for line in joined if line]


def strip_code_blocks(text: str) -> str:
    """Remove fenced code blocks (``` or ~~~), leaving a line break where each one was."""
    return _FENCED_CODE.sub("\n", text)


def split_sentences(text: str | None) -> list[str]:
    """Split ``text`` into sentences, in order, with surrounding whitespace removed.

    Fenced code is skipped. Math, inline code and calculator annotations stay inside their
    sentence. A newline ends a sentence unless it only wraps a lowercase continuation.
    Returns an empty list for ``None``, empty or whitespace-only text.
    """
    if not text or not text.strip():
        return []
    protected, spans = _protect(strip_code_blocks(text))
    sentences: list[str] = []
    for line in _join_wrapped_lines(protected.splitlines()):
        sentences.extend(_restore(sentence, spans) for sentence in _split_line(line))
    return sentences


def is_question(sentence: str) -> bool:
    """Return True when the sentence ends with a question mark (ASCII or full-width)."""
    return sentence.rstrip(" \"'”’)」").endswith(("?", "？"))


def is_hypothetical(sentence: str) -> bool:
    """Return True for a sentence that sets up a supposition or a case ("Assume ...", "If ...",
    "Let ...", "For n = 2, ...") instead of asserting a fact."""
    return _HYPOTHETICAL_START.match(sentence) is not None


def has_formula(sentence: str) -> bool:
    """Return True when the sentence contains an equation, an inequality or LaTeX math."""
    return _FORMULA.search(sentence) is not None


def is_final_answer(sentence: str) -> bool:
    """Return True for a sentence that states a final answer.

    Recognized markers: a GSM8K ``#### N`` line, ``\\boxed{...}``, "the answer is ..." and an
    ``Answer:`` prefix.
    """
    return any(marker.search(sentence) for marker in _FINAL_MARKERS)


def find_final_answer(sentences: list[str]) -> int | None:
    """Return the index of the last sentence with a final-answer marker, or None."""
    for index in range(len(sentences) - 1, -1, -1):
        if is_final_answer(sentences[index]):
            return index
    return None


def extract_premise(sentence: str) -> str | None:
    """Return the statement a prompt sentence asserts, or None if it asserts nothing.

    A declarative sentence is its own premise. A question is never a premise, but a leading
    "Given that X, ...?" clause states X, so X is returned. Instructions to the model ("Solve
    the following problem.", "1. Study the parity of f(0).") and sentences that start like a
    question are not premises.
    """
    if is_question(sentence):
        clause = _GIVEN_CLAUSE.match(sentence)
        if clause is None:
            return None
        premise = clause.group("premise").strip()
        return premise[0].upper() + premise[1:] + "."
    # A numbered hint ("1. Find the values of n mod 8.") is read without its list marker.
    marker = _LIST_MARKER.match(sentence)
    body = sentence[marker.end() :] if marker else sentence
    if _INSTRUCTION_START.match(body) or _INTERROGATIVE_START.match(body):
        return None
    return sentence
