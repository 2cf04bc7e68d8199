"""Flag a response whose final answer disagrees with most other responses to the same problem.

Datasets built by sampling several responses per problem (rejection sampling, multi-model
distillation) carry their own check: when most responses to a problem reach one answer, a
response that reaches another one most likely went wrong somewhere. This is the self-consistency
idea of Wang et al. (2023, "Self-Consistency Improves Chain of Thought Reasoning in Language
Models"), used here as a filter instead of a decoding strategy. It needs no reference answer and
no model.

Responses are grouped by an explicit group id when the caller has one (stage 2 reads
``answer_group`` from ``meta``: responses known to answer the same question), else by the
normalized prompt. A response is flagged when at least ``min_peer_answers`` other
responses in its group have an answer and at least ``min_majority`` of them agree on an answer
that differs from its own, and that answer has more votes than its own (counting itself), so a
tied group flags nobody. Only numeric and choice-letter answers are flagged or outvote others,
and only answers of the same kind (a letter may name the number): text answers
(``\\sqrt{2}`` against ``\\sqrt2``, ``2\\pi`` against ``6.28``) have too many equal spellings,
and a number 100 times another (``50%`` against ``0.5``) counts as the same answer. A response
without an answer is never flagged.

Answers come from the explicit markers first (``#### N``, ``\\boxed{}``, "the answer is"; exactly
one distinct value). Free-form solutions often end with a sentence such as "Therefore, there are
239 such strings." without a marker, so when there is none, the last number of a last paragraph
that opens with or contains a concluding word ("therefore", "thus", "so", "hence", "answer",
"total", and their Chinese equivalents) is taken instead, when it is the paragraph's only number
("so she has 12 left, 3 fewer than 15" has no answer). Numbers are compared exactly after
parsing (``1,000`` equals ``1000``, ``0.5`` equals ``1/2``, ``x = 5`` equals ``5``); other answers,
and numbers whose reading is disputed (``3:30``, ``1 000``, ``1 1/2``, ``1.000``), as normalized text.
"""

import hashlib
import re
from collections import Counter
from fractions import Fraction

from filters.math_check import _answer_key, extract_final_answers, normalize_answer_text, normalize_math_text

_CONCLUSION = re.compile(r"(?i)\b(?:therefore|thus|so|hence|answer|total|in conclusion)\b|所以|因此|答案|总共|一共")
_NUMBER = re.compile(r"(?<![\w^_.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?(?![\w^_])")
# "3:30", "1 000", "1 1/2", "1.000": parse_number would read only a part or pick one of two readings.
_DISPUTED_NUMBER = re.compile(r"\d\s*:\s*\d|\d\s+\d|(?<![\d.])\d{1,3}(?:\.\d{3})+(?![\d.])")
_VARIABLE_PREFIX = re.compile(r"^\s*[A-Za-z]\s*=\s*(?=[^=]+$)")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
# Counting answer markers is linear; finding them (extract_final_answers) is quadratic in their number.
_MARKER_HINT = re.compile(r"(?i)\\boxed|\\fbox|####|answer|答案|答え")
MAX_ANSWER_MARKERS = 200


def final_answer_key(text: str | None) -> str | None:
    """Return a comparable key for the response's final answer, or None when it has none."""
    if not text:
        return None
    markers = 0
    for _ in _MARKER_HINT.finditer(text):
        markers += 1
        if markers > MAX_ANSWER_MARKERS:
            return None  # a degenerate, repeating response; no single answer to compare
    marked = {_key_text(raw) for raw in extract_final_answers(text)}
    if len(marked) == 1:
        return marked.pop()
    if marked:
        return None  # several different marked answers: no single answer to compare
    paragraphs = [part for part in normalize_math_text(text).strip().split("\n") if part.strip()]
    if not paragraphs or not _CONCLUSION.search(paragraphs[-1]):
        return None
    if _DISPUTED_NUMBER.search(paragraphs[-1]):
        return None
    numbers = {_key_text(number) for number in _NUMBER.findall(paragraphs[-1])}
    return numbers.pop() if len(numbers) == 1 else None


def _key_text(raw: str) -> str:
    raw = _DEGREES.sub("", _VARIABLE_PREFIX.sub("", raw))
    if _DISPUTED_NUMBER.search(normalize_math_text(raw)):
        return f"text:{normalize_answer_text(raw)}"
    kind, value = _answer_key(raw)
    choice = re.fullmatch(r"\(?([a-e])\)?", str(value)) if kind == "text" else None
    if choice:
        return f"choice:{choice.group(1)}"  # "(B)", "\\textbf{(B)}" and "B" name one option
    if kind == "number":
        value = Fraction(value)
        return f"number:{value.numerator}/{value.denominator}"
    return f"text:{value}"


def group_key(group_id: str | None, prompt: str | None) -> str:
    """Return the group a response is compared within: its group_id, else a hash of its normalized prompt."""
    if group_id:
        return f"group:{group_id}"
    normalized = " ".join((prompt or "").split()).lower()
    return "prompt:" + hashlib.blake2b(normalized.encode(), digest_size=12).hexdigest()


def display_answer(key: str | None) -> str | None:
    """Turn an answer key back into readable text ("number:3/2" -> "3/2", "number:5/1" -> "5")."""
    if key is None:
        return None
    kind, separator, value = key.partition(":")
    if not separator:
        return key
    if kind == "number" and value.endswith("/1"):
        return value[:-2]
    return value


def _kind(key: str) -> str:
    kind, separator, _ = key.partition(":")
    return kind if separator else ""


def _same_answer(answer: str, majority: str) -> bool:
    """Tell whether two answer keys may name the same answer, so that neither outvotes the other."""
    if answer == majority or answer.startswith("text:") or majority.startswith("text:"):
        return True
    if _kind(answer) != _kind(majority):
        return True  # a choice letter and a number: option (B) may be the number 5
    if answer.startswith("number:") and majority.startswith("number:"):
        left, right = Fraction(answer[len("number:") :]), Fraction(majority[len("number:") :])
        return left == 100 * right or right == 100 * left  # "50%" and "0.5"
    return False


def peer_disagreements(
    answers: list[str | None],
    groups: list[str],
    extra_answers: list[str | None] | None = None,
    extra_groups: list[str] | None = None,
    min_peer_answers: int = 5,
    min_majority: float = 0.5,
) -> list[dict | None]:
    """For each response, return the disagreement evidence when most of its peers agree on another answer.

    ``answers[i]`` and ``groups[i]`` describe the checked responses. ``extra_answers`` and
    ``extra_groups`` are more responses that only count as peers (they are not checked). Returns,
    per checked response, None or ``{"answer", "majority_answer", "majority_share", "peers"}``.
    """
    if len(answers) != len(groups):
        raise ValueError(f"answers ({len(answers)}) and groups ({len(groups)}) differ in length; pass one group per answer")
    if min_peer_answers < 1:
        raise ValueError(f"min_peer_answers must be at least 1, got {min_peer_answers}")
    if not 0.0 < min_majority <= 1.0:
        raise ValueError(f"min_majority must be in (0, 1], got {min_majority}; 0.5 means at least half of the peers agree")
    counts: dict[str, Counter] = {}
    for answer, group in zip([*answers, *(extra_answers or [])], [*groups, *(extra_groups or [])]):
        if answer is not None:
            counts.setdefault(group, Counter())[answer] += 1
    results: list[dict | None] = []
    for answer, group in zip(answers, groups):
        if answer is None:
            results.append(None)
            continue
        peers = counts[group].copy()
        peers[answer] -= 1
        total = sum(peers.values())
        if total < min_peer_answers:
            results.append(None)
            continue
        majority, support = peers.most_common(1)[0]
        share = support / total
        own_votes = peers[answer] + 1
        if share >= min_majority and support > own_votes and not _same_answer(answer, majority):
            results.append(
                {
                    "answer": display_answer(answer),
                    "majority_answer": display_answer(majority),
                    "majority_share": round(share, 4),
                    "peers": total,
                }
            )
        else:
            results.append(None)
    return results

