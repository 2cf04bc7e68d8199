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
- the chain contains ``==`` or an ellipsis. After ``<=``, ``>=`` or ``!=``, only the part past the
  operator is read as a chain;
- the line mentions a modulus, congruence, number base or clock (``5^5 = 5 * 3^2 (mod 11)``,
  ``1 + 1 = 10 in binary``, ``11 + 2 = 1 pm``), or a word that marks the claim as hedged or
  refuted ("if", "wrong", "not");
- a chain is followed by a question mark, or a side touches a time or a decimal comma
  (``10:30 + 2 = 12:30``, ``2,5 * 4 = 10``), a compact range or id (``pages 10-20 = 11``,
  ``555-1234``, ``2024/1/1``), a mixed number (``2\\frac{1}{2}``) or an implicit product after a
  division (``6/2(1+2)``), whose reading is disputed;
- the next non-empty line takes the claim back ("Wait, ...", "Actually, ...", "不对", ...);
- a side does not parse, or its value is past the evaluator's limits.

A claimed decimal may be rounded or truncated to its own number of decimals (``1/3 = 0.33``). A
claimed integer may be the floor, ceiling or rounding of a fraction (``25 / 4 = 6`` buses). Every
decimal operand may itself be rounded by half a unit in its last digit (``0.33 + 0.33 = 0.67``,
``6.02 * 10^23 * 2 = 1.20 * 10^24``). A chain that opens a line is read both with and
without a leading list label (``(2)5*6 = 30``, ``3.4+4=8`` for item 3, ``- 2 + 2 = 4``). A chain
with ``1.000``-style numbers is read with the dots both as decimal points and as thousands
separators. A chain is reported only when every reading is false.
Fenced code blocks are not read. Full-width digits and signs are normalized first, superscript
digits become exponents (``10³``), and CJK characters count as word boundaries, so Chinese text
is checked like English.
"""

import ast
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

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
    "remainder percent per rem base x".split()
)
_REWRITES = (
    ("\\left", ""), ("\\right", ""), ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"),
    ("÷", "/"), ("\\,", " "), ("\\;", " "), ("\\!", ""), ("\\ ", " "), ("$", ""), ("\\(", ""), ("\\)", ""),
    ("\\[", ""), ("\\]", ""),
)
_MODULAR = re.compile(
    r"(?i)≡|\\equiv|\\[pb]?mod\b|\bmod(?:ulo)?\b|\bcongruent\b|\bremainder\b"
    r"|\bbase\b|\bbinary\b|\boctal\b|\bhex(?:adecimal)?\b|\bZ_|\\mathbb\s*\{?Z|ℤ|\bGF\s*\("
    r"|\bclock\b|o'clock|\d\s*[ap]\.?m\b|\bXOR\b|\bboolean\b"
)
# The start of a line that takes back the line before it.
_RETRACTION = re.compile(
    r"(?i)\s*(?:[-*>]\s*)?(?:wait|oops|hmm|actually|correction|no,|sorry|let me (?:re|double)|that(?:'s| is) (?:wrong|not))"
    r"|\s*(?:不对|等等|更正)"
)
# A false chain on a line with one of these words is quoted, supposed or refuted, not claimed.
_HEDGED = re.compile(
    r"(?i)\b(?:if|suppose[sd]?|assume[sd]?|wrong|incorrect|false|mistakes?|errors?|not|isn't|claim(?:s|ed)?"
    r"|wait|oops|typo|instead|wrote|writes|says?|said)\b|n't\b|[≠✗✘❌✕✖]"
)
# "10:30", "2,5": a colon or a comma between digits joins them into a time or a decimal.
_JOINED_DIGITS = re.compile(r"\d[:,]$")
# Ranges and ids ("10-20", "555-1234", "978-3-16", "2024/1/1") read as arithmetic only by accident.
_COMPACT_RANGE = re.compile(r"(?<![\d.])(\d+)-(\d+)(?![\d.])")
_COMPACT_ID = re.compile(r"\d[-/]\d+[-/]\d")
# "6/2(1+2)": whether the implicit product binds tighter than the division is disputed.
_PRODUCT_AFTER_DIVISION = re.compile(r"/\s*(?:[\d.]+|\([^()]*\))\s*\(")
# A list label at the start of a line: "(2)", "3.", "3)", "- ", "* ".
_LIST_LABEL = re.compile(r"^(?:\(\d+\)\s*|\d+[.)]\s*|[-+*]\s+)(?=\d)")
_DECIMAL = re.compile(r"\d+\.\d+")
_DOTTED_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{3})+(?![\d.])")
_SUPERSCRIPT = re.compile(r"[⁺⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_SUPERSCRIPT_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")
_SUBSCRIPT = re.compile(r"[₀-₉]+")
MAX_CHAIN_CHARS = 200
# Chains checked per text. Real solutions contain far fewer, and the cap bounds the time on hostile input.
MAX_CHAINS_CHECKED = 2000


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
    # "2\frac{1}{2}" is a mixed number or a product; renaming the command keeps it unread.
    text = re.sub(r"(?<=\d)\s*\\[dt]?frac", r"\\mixedfrac", text)
    for _ in range(3):  # nested fractions, innermost first
        rewritten = _LATEX_FRACTION.sub(r"((\1)/(\2))", text)
        rewritten = _BRACED_EXPONENT.sub(r"^(\1)", rewritten)
        if rewritten == text:
            break
        text = rewritten
    return _THOUSANDS.sub(lambda match: match.group(1).replace(",", ""), text)


def _is_boundary(char: str) -> bool:
    """Tell whether a character ends a word: empty (text start or end), whitespace, ``,;:`` or CJK."""
    return not char or char.isspace() or char in ",;:" or bool(_CJK.match(char))


def _rewrite_superscripts(text: str) -> str:
    """Write superscript digits as exponents and subscripts as ``_`` indices, before NFKC flattens both.

    NFKC turns ``10³`` into ``103`` and ``10₂`` into ``102``, which would read as other numbers.
    """
    text = _SUPERSCRIPT.sub(lambda match: "^(" + match.group(0).translate(_SUPERSCRIPT_DIGITS) + ")", text)
    return _SUBSCRIPT.sub(lambda match: "_" + match.group(0), text)


def _is_disputed(side: str) -> bool:
    """Tell whether a side reads as arithmetic only by accident or under a disputed convention."""
    if _COMPACT_ID.search(side) or _PRODUCT_AFTER_DIVISION.search(side):
        return True
    # "pages 10-20", "ages 5-10": a compact difference below zero is a range.
    return any(int(low) < int(high) for low, high in _COMPACT_RANGE.findall(side))


def _with_products(side: str) -> str:
    # Implicit products: "2(3 + 4)", "(1/2)(2^10 - 1)", "(3)4".
    side = re.sub(r"(?<=[\d)])\s*\(", "*(", side)
    return re.sub(r"\)\s*(?=\d)", ")*", side)


@lru_cache(maxsize=4096)
def _value(side: str) -> Fraction | None:
    """Evaluate one side exactly, or return None when it is disputed or not plain arithmetic."""
    if _is_disputed(side):
        return None
    try:
        return evaluate_arithmetic(_with_products(side))
    except (UnsupportedExpression, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None


def _interval(node: ast.AST, decimals: dict[str, tuple[Fraction, Fraction]]) -> tuple[Fraction, Fraction]:
    """Bound an expression whose decimal operands (names in ``decimals``) may be rounded."""
    if isinstance(node, ast.Expression):
        return _interval(node.body, decimals)
    if isinstance(node, ast.Name):
        return decimals[node.id]
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value), Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        low, high = _interval(node.operand, decimals)
        return (-high, -low) if isinstance(node.op, ast.USub) else (low, high)
    if isinstance(node, ast.BinOp):
        low, high = _interval(node.left, decimals)
        right_low, right_high = _interval(node.right, decimals)
        if isinstance(node.op, ast.Add):
            return low + right_low, high + right_high
        if isinstance(node.op, ast.Sub):
            return low - right_high, high - right_low
        if isinstance(node.op, ast.Div):
            if right_low <= 0 <= right_high:
                raise ZeroDivisionError("divisor interval contains 0")
            right_low, right_high = 1 / right_high, 1 / right_low
        elif isinstance(node.op, ast.Pow):
            # The exact evaluation already succeeded, so the exponent is a small integer.
            if right_low != right_high or right_low.denominator != 1 or right_low < 0:
                raise UnsupportedExpression("exponent is not a fixed non-negative integer")
            exponent = int(right_low)
            ends = (low**exponent, high**exponent)
            if low < 0 < high and exponent % 2 == 0:
                return Fraction(0), max(ends)
            return min(ends), max(ends)
        elif not isinstance(node.op, ast.Mult):
            raise UnsupportedExpression(f"operator {type(node.op).__name__} is not bounded")
        products = (low * right_low, low * right_high, high * right_low, high * right_high)
        return min(products), max(products)
    raise UnsupportedExpression(f"{type(node).__name__} is not bounded")


def _rounded_range(side: str) -> tuple[Fraction, Fraction] | None:
    """Return the range of a side when each decimal operand is off by up to half a unit in its last digit.

    ``0.33 + 0.33`` covers 0.65 to 0.67, so ``0.33 + 0.33 = 0.67`` (rounded thirds) is not false.
    """
    decimals: dict[str, tuple[Fraction, Fraction]] = {}

    def name_decimal(match: re.Match) -> str:
        value = Fraction(match.group(0))
        half_unit = Fraction(1, 2 * 10 ** len(match.group(0).split(".")[1]))
        name = f"d{len(decimals)}"
        decimals[name] = (value - half_unit, value + half_unit)
        return name

    expression = _DECIMAL.sub(name_decimal, _with_products(side)).replace("^", "**")
    if not decimals:
        return None
    try:
        return _interval(ast.parse(expression, mode="eval"), decimals)
    except (SyntaxError, KeyError, UnsupportedExpression, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None


def _has_operator(side: str) -> bool:
    return bool(re.search(r"(?<=[\d)\s])[-+*/^]", side))


def _close(left: Fraction, right: Fraction, left_text: str, right_text: str) -> bool:
    if left == right:
        return True
    for bare, other in ((right_text, left), (left_text, right)):
        # A bare decimal may be shown rounded or truncated to its own number of decimals.
        if re.fullmatch(r"-?\d*\.\d+", bare):
            decimals = len(bare.split(".")[1])
            if abs(left - right) < Fraction(1, 10**decimals):
                return True
            # "0.30000000000000004": a float's repr, exact only in binary floating point.
            if len(bare.replace("-", "").replace(".", "").lstrip("0")) >= 15:
                return True
        # "25 / 4 = 6" buses, "1000 * 1.05^10 = 1629": a bare integer may be a floor, ceiling or rounding.
        if re.fullmatch(r"-?\d+", bare) and other.denominator != 1 and abs(left - right) < 1:
            return True
    left_range = _rounded_range(left_text) or (left, left)
    right_range = _rounded_range(right_text) or (right, right)
    # Strict: "0.1 + 0.2 = 0.4" only touches the range's edge.
    return left_range[0] < right_range[1] and right_range[0] < left_range[1]


def _left_side_ok(text: str, start: int, side: str) -> bool:
    """Tell whether the first side of a chain is a whole expression, judged from the text before it."""
    preceding = text[:start].rstrip()
    before = text[start - 1] if start else ""
    if not _is_boundary(before) or _JOINED_DIGITS.search(text[:start]):
        return False  # P(1) = 2, a_4 = 7, 3:2 = 1.5, 10:30 + 2, 2,5 * 4
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
    if not (_is_boundary(after) or after == ".") or re.match(r"[:,]\d", text[end : end + 2]):
        return False  # 12x, 5!, 2\sqrt{3}, 50%, = 12:30, = 7,5, and "2 + 2 = 5?" is a question, not a claim
    if re.match(r"\s*[%‰°]", text[end:]):
        return False  # "3/6 = 50 %": a percent written with a space, as French and German style guides ask
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
    readings = [[side] for side in sides]
    # At the start of a line, the first side is also read without a list label: "(2)5*6" and
    # "3.4+4" (item 3) unless another decimal shows that "3.4" is a number.
    label = _LIST_LABEL.match(sides[0])
    if label and usable[0] and not text[:start].strip():
        unlabeled = sides[0][label.end() :].strip()
        if not ("." in label.group(0) and _DECIMAL.search(chain[label.end() :])):
            readings[0] = [reading for reading in (sides[0], unlabeled) if _value(reading) is not None]
            values[0] = _value(readings[0][0]) if readings[0] else None
    for index in range(len(sides) - 1):
        if values[index] is None or values[index + 1] is None:
            continue
        if all(_is_false_pair(left, sides[index + 1], values[index + 1]) for left in readings[index]):
            left = readings[index][0]
            return ArithmeticClaim(chain, left, sides[index + 1], _value(left), values[index + 1])
    return None


def _undot(side: str) -> str:
    return _DOTTED_THOUSANDS.sub(lambda match: match.group(0).replace(".", ""), side)


def _is_false_pair(left_text: str, right_text: str, right: Fraction | None) -> bool:
    """Tell whether ``left_text = right_text`` is a computation that is false in every reading of its numbers."""
    left = _value(left_text) if left_text != "" else None
    if left is None or right is None:
        return False
    if not (_has_operator(left_text) or _has_operator(right_text)):
        return False  # "3 = 3" restates a number; nothing was computed
    if _close(left, right, left_text, right_text):
        return False
    # "1.000 + 500 = 1.500": the dots may separate thousands, as in German or Indonesian.
    if _DOTTED_THOUSANDS.search(left_text) or _DOTTED_THOUSANDS.search(right_text):
        left_text, right_text = _undot(left_text), _undot(right_text)
        left, right = _value(left_text), _value(right_text)
        if left is None or right is None or _close(left, right, left_text, right_text):
            return False
    return True


def find_false_arithmetic(text: str | None) -> list[ArithmeticClaim]:
    """Return every stated computation in ``text`` whose sides evaluate to different numbers."""
    if not text:
        return []
    claims = []
    chains_checked = 0
    text = _rewrite_latex(normalize_math_text(_rewrite_superscripts(strip_code_blocks(text))))
    lines = text.splitlines()
    following = [""] * len(lines)  # the next non-empty line after each line
    for index in range(len(lines) - 2, -1, -1):
        following[index] = lines[index + 1] if lines[index + 1].strip() else following[index + 1]
    for line, next_line in zip(lines, following):
        if "=" not in line or _MODULAR.search(line) or _HEDGED.search(line):
            continue  # "5^5 = 5 * 3^2 (mod 11)", "if 2 + 2 = 5": not a claim about plain arithmetic
        if _RETRACTION.match(next_line):
            continue  # "17 + 25 = 43.\nWait, 17 + 25 = 42.": the text takes the claim back itself
        for match in _RUN.finditer(line):
            if "=" not in match.group(0):
                continue
            chains_checked += 1
            if chains_checked > MAX_CHAINS_CHECKED:
                return claims
            claim = _check_chain(line, match.start(), match.end())
            if claim is not None:
                claims.append(claim)
    return claims
