"""Find stated computations whose result is wrong, in plain text and LaTeX.

A response that writes ``\\frac{1}{2}(2^{10} - 1) = 1023`` contradicts itself: the left side is
511.5. The NLI cross-encoder reads sentences, not arithmetic, so it cannot see this; an exact
evaluator can. This module finds chains ``a = b = c`` whose sides are closed arithmetic over
numbers, evaluates each side exactly (``filters.math_check.evaluate_arithmetic``) and reports the
first pair of neighbouring sides that differ.

Precision comes first, because a false claim rejects a sample. A chain is skipped, not guessed,
when anything around it could change its meaning:

- a side touches a letter, underscore, subscript, factorial, percent, degree or backslash
  command (``P(1) = 2``, ``a_4 = 7``, ``5! = 120``, ``2\\sqrt{3} = ...``);
- the left side is a bare number after other text (``half of 10 = 5``, ``3乘以4=12``), or a side
  is next to an operator word such as "times", "of", "mod" or "remainder";
- the chain contains ``==``, ``<=``, ``>=``, ``!=`` or an ellipsis, or its line mentions a
  modulus or congruence (``5^5 = 5 * 3^2 (mod 11)``);
- a side does not parse, or its value is past the evaluator's limits.

A claimed decimal may be rounded or truncated to its own number of decimals (``1/3 = 0.33``).
Fenced code blocks are not read. Full-width digits and signs are normalized first, and CJK
characters count as word boundaries, so Chinese text is checked like English.
"""

import re
from dataclasses import dataclass
from fractions import Fraction

from filters.math_check import UnsupportedExpression, evaluate_arithmetic, format_number, normalize_math_text
from filters.segment import strip_code_blocks

# Characters of a closed arithmetic chain after LaTeX is rewritten.
_RUN = re.compile(r"[0-9.+\-*/^() =]+")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_BRACED_EXPONENT = re.compile(r"\^\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_WORD_BEFORE = re.compile(r"([A-Za-z]+)\s*$")
_WORD_AFTER = re.compile(r"^\s*\(?\s*\\?([A-Za-z]+)")
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
_OPERATOR_WORDS = frozenset(
    "times of plus minus by over into multiplied divided squared cubed power choose mod modulo pmod bmod "
    "remainder percent per rem base".split()
)
_REWRITES = (
    ("\\left", ""), ("\\right", ""), ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"),
    ("÷", "/"), ("\\,", " "), ("\\;", " "), ("\\!", ""), ("\\ ", " "), ("$", ""), ("\\(", ""), ("\\)", ""),
    ("\\[", ""), ("\\]", ""),
)
_MODULAR = re.compile(r"(?i)≡|\\equiv|\\[pb]?mod\b|\bmod(?:ulo)?\b|\bcongruent\b|\bremainder\b")
MAX_CHAIN_CHARS = 200


@dataclass(frozen=True)
class ArithmeticClaim:
    """A false step ``left = right``: ``left_value`` and ``right_value`` differ."""

    text: str
    left: str
    right: str
    left_value: Fraction
    right_value: Fraction

    def describe(self) -> str:
        return (
            f"'{self.left} = {self.right}' is false: the left side is {format_number(self.left_value)}, "
            f"the right side {format_number(self.right_value)}"
        )


def _rewrite_latex(text: str) -> str:
    for old, new in _REWRITES:
        text = text.replace(old, new)
    for _ in range(3):  # nested fractions, innermost first
        rewritten = _LATEX_FRACTION.sub(r"((\1)/(\2))", text)
        rewritten = _BRACED_EXPONENT.sub(r"^(\1)", rewritten)
        if rewritten == text:
            break
        text = rewritten
    return _THOUSANDS.sub(lambda match: match.group(1).replace(",", ""), text)


def _is_boundary(char: str) -> bool:
    """True for the start or end of text, whitespace, sentence punctuation and CJK characters."""
    return not char or char.isspace() or char in ",;:" or bool(_CJK.match(char))


def _value(side: str) -> Fraction | None:
    # Implicit products: "2(3 + 4)", "(1/2)(2^10 - 1)", "(3)4".
    side = re.sub(r"(?<=[\d)])\s*\(", "*(", side)
    side = re.sub(r"\)\s*(?=\d)", ")*", side)
    try:
        return evaluate_arithmetic(side)
    except (UnsupportedExpression, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None


def _has_operator(side: str) -> bool:
    return bool(re.search(r"(?<=[\d)\s])[-+*/^]", side))


def _close(left: Fraction, right: Fraction, left_text: str, right_text: str) -> bool:
    if left == right:
        return True
    # A bare decimal may be shown rounded or truncated to its own number of decimals.
    for bare in (right_text, left_text):
        if re.fullmatch(r"-?\d+\.\d+", bare):
            decimals = len(bare.split(".")[1])
            return abs(left - right) < Fraction(1, 10**decimals)
    return False


def _left_side_ok(text: str, start: int, side: str) -> bool:
    """Tell whether the first side of a chain is a whole expression, judged from the text before it."""
    preceding = text[:start].rstrip()
    before = text[start - 1] if start else ""
    if not _is_boundary(before):
        return False  # P(1) = 2, a_4 = 7, 3:2 = 1.5
    word = _WORD_BEFORE.search(preceding)
    if word and word.group(1).lower() in _OPERATOR_WORDS:
        return False
    if side[0] in "+-" and preceding and not _CJK.match(preceding[-1]) and (
        preceding[-1].isalnum() or preceding[-1] in ")]}!"
    ):
        return False  # x - 1 + 2 = 5: the sign is a binary operator on something outside the chain
    if side[0] in "*/^":
        return False
    # "half of 10 = 5", "3乘以4=12": a bare number after other text may be an operand of that text.
    return _has_operator(side) or not preceding


def _right_side_ok(text: str, end: int, side: str) -> bool:
    """Tell whether the last side of a chain is a whole expression, judged from the text after it."""
    after = text[end] if end < len(text) else ""
    if after == "." and end + 1 < len(text) and not _is_boundary(text[end + 1]):
        return False
    if not (_is_boundary(after) or after in ".?"):
        return False  # 12x, 5!, 2\sqrt{3}, 50%
    word = _WORD_AFTER.search(text[end:])
    if word and word.group(1).lower() in _OPERATOR_WORDS:
        return False
    return side[-1:] not in "+-*/^("


def _check_chain(text: str, start: int, end: int) -> ArithmeticClaim | None:
    chain = text[start:end]
    start += len(chain) - len(chain.lstrip())
    end = start + len(chain.strip())
    chain = text[start:end].rstrip(".")
    if "=" not in chain or len(chain) > MAX_CHAIN_CHARS or "==" in chain or ".." in chain:
        return None
    sides = [side.strip() for side in chain.split("=")]
    usable = [bool(side) for side in sides]
    if usable[0]:
        usable[0] = _left_side_ok(text, start, sides[0])
    if usable[-1]:
        usable[-1] = _right_side_ok(text, start + len(chain), sides[-1])
    values = [_value(side) if ok else None for side, ok in zip(sides, usable)]
    for index in range(len(sides) - 1):
        left, right = values[index], values[index + 1]
        if left is None or right is None:
            continue
        if not (_has_operator(sides[index]) or _has_operator(sides[index + 1])):
            continue  # "3 = 3" restates a number; nothing was computed
        if not _close(left, right, sides[index], sides[index + 1]):
            return ArithmeticClaim(chain, sides[index], sides[index + 1], left, right)
    return None


def find_false_arithmetic(text: str | None) -> list[ArithmeticClaim]:
    """Return every stated computation in ``text`` whose sides evaluate to different numbers."""
    if not text:
        return []
    claims = []
    for line in _rewrite_latex(normalize_math_text(strip_code_blocks(text))).splitlines():
        if "=" not in line or _MODULAR.search(line):
            continue  # "5^5 = 5 * 3^2 (mod 11)": equalities that hold only modulo something
        for match in _RUN.finditer(line):
            claim = _check_chain(line, match.start(), match.end())
            if claim is not None:
                claims.append(claim)
    return claims
