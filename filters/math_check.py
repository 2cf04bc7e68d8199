"""Math selection: extract the final answer, check it against the reference and the reasoning.

Per row with task "math", in this order:

1. Find every final-answer marker: ``#### N``, ``\\boxed{...}`` (nested braces allowed),
   "The answer is N", "Final answer: N" and the Chinese and Japanese equivalents. None found:
   rejected ``no_final_answer``. Markers with different values (a run-on continuation that
   invents a second question, or a corrected guess): rejected ``multiple_final_answers``.
2. Recompute every GSM8K-style ``<<expr=result>>`` annotation with a small AST evaluator (numbers,
   + - * / // % and ** with exponents up to 64, never ``eval``). A wrong one: rejected
   ``arithmetic_error``.
3. With a reference: the answer must equal it numerically (``8,000`` == ``8000`` == ``8000.0``),
   else rejected ``answer_mismatch``; kept as "matches_reference".
4. Without a reference: the answer must equal the last value computed in the reasoning before
   the first marker (the last ``= N``), else rejected ``reasoning_mismatch``; kept as
   "matches_reasoning". With no computed value: kept as "unverified".

Answers that are not single numbers (``x^2+1``, a list ``1,2``, a proof) are compared with the
reference as normalized strings, or kept "unverified" without one; they are never rejected
for being non-numeric. Text is NFKC-normalized first, so full-width digits and markers work.
"""

import ast
import logging
import operator
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import polars as pl

from filters.code_check import DETAIL, REASON, SCORE, THRESHOLD

log = logging.getLogger(__name__)

CURRENCY = "$€¥£₹"

# A comma is a thousands separator only between groups of exactly three digits: "9,500" is
# one number, "1,2" and "12,34" are lists, and in "72, in total" the comma ends the number.
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+"
_LEADING_NUMBER = re.compile(rf"(?P<sign1>[-+]?)\s*(?:[{CURRENCY}]\s*)?(?P<sign2>[-+]?)(?P<number>{_NUMBER})")
_LIST_CONTINUES = re.compile(r"\s*,\s*[-+]?\d")
_EXPRESSION_CONTINUES = re.compile(r"\s*(?:[-+*/^=×÷<>]|\\(?!%))|[a-zA-Z]\s*[-+*/^=(]")
_LATEX_FRACTION = re.compile(r"([-+]?)\\[dt]?frac\s*\{\s*(" + _NUMBER + r")\s*\}\s*\{\s*(" + _NUMBER + r")\s*\}")
_PLAIN_FRACTION = re.compile(r"([-+]?)(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")

_HASH_MARKER = re.compile(r"#{4}[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PHRASE_MARKER = re.compile(
    r"(?:\bfinal\s+answer(?:\s+is)?|\bthe\s+answer\s+is|答案(?:是|为|為)|^[ \t]*答案(?=[:：])|答えは)[ \t]*[:：]?[ \t*_]*",
    re.IGNORECASE | re.MULTILINE,
)
# A phrase answer ends at a newline or a sentence end; a "." between digits is a decimal point.
_SENTENCE_END = re.compile(r"\n|[。！？!?]|\.(?!\d)")
_ANNOTATION = re.compile(r"<<([^<>]+?)>>")
# "= N", also "= $144/5" and "= টকা8" (a currency word written before the number).
_COMPUTED_VALUE = re.compile(rf"=\s*(?:[^\d\s<=>+\-]{{1,6}}\s*)?(-?(?:{_NUMBER})(?:/\d+(?!\.\d))?)")

MAX_EXPONENT = 64
MAX_MAGNITUDE = Fraction(10) ** 60
MAX_EXPRESSION_CHARS = 300


@dataclass(frozen=True)
class MathCheckConfig:
    """Rules for checking math answers.

    Attributes:
        answer_rel_tol: relative tolerance when comparing numbers (1e-6 only absorbs float
            noise; exact rationals are compared exactly).
        require_reasoning_match: without a reference, reject answers that differ from the last
            value computed in the reasoning.
        check_arithmetic: recompute ``<<expr=result>>`` annotations.
    """

    answer_rel_tol: float = 1e-6
    require_reasoning_match: bool = True
    check_arithmetic: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.answer_rel_tol <= 0.1:
            raise ValueError(f"answer_rel_tol={self.answer_rel_tol} is invalid: use 0.0 to 0.1 (e.g. 1e-6)")


class UnsupportedExpression(ValueError):
    """An annotation uses syntax or sizes the arithmetic evaluator does not handle."""


def normalize_math_text(text: str) -> str:
    """NFKC-normalize (full-width digits and signs become ASCII) and map the minus sign U+2212 to '-'."""
    return unicodedata.normalize("NFKC", text).replace("\u2212", "-")


def _strip_latex(text: str) -> str:
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\%", "%").replace("\\$", "$")
    text = re.sub(r"(?<=\d)\\,(?=\d{3})", ",", text)  # 9\,500: a thin space as thousands separator
    text = text.replace("\\,", " ").replace("\\;", " ").replace("\\ ", " ")
    text = text.replace("\\left", "").replace("\\right", "")
    text = _LATEX_TEXT.sub(r" \1 ", text)
    for delimiter in ("\\(", "\\)", "\\[", "\\]"):
        text = text.replace(delimiter, "")
    return text.strip()


# An exact Fraction of "1e99999999" needs a 100-million-digit integer, which takes minutes to build.
# Final answers past these sizes are compared as text instead.
MAX_ANSWER_EXPONENT = 400
MAX_ANSWER_DIGITS = 400
_EXPONENT = re.compile(r"[eE]([-+]?\d+)$")


def _too_large_to_parse(number: str) -> bool:
    exponent = _EXPONENT.search(number)
    if exponent and abs(int(exponent.group(1)[:6])) > MAX_ANSWER_EXPONENT:
        return True
    return sum(char.isdigit() for char in number) > MAX_ANSWER_DIGITS


def parse_number(text: str | None) -> float | Fraction | None:
    """Parse one final answer into an exact ``Fraction``, or None when it is not a single number.

    Accepts currency symbols, thousands separators between 3-digit groups, signs, decimals,
    exponents, ``a/b`` and ``\\frac{a}{b}``, a percent sign (``50%`` parses as 50, the number as
    written) and trailing units or words (``8,000 dollars``, ``72, in total``). Returns None for
    lists (``1,2``), expressions (``x^2+1``, ``5 + 3``) and text without a leading number.
    Every value this parser produces is exact, so it returns a ``Fraction``. The float in the
    return type is for callers that pass in their own numbers.
    """
    if text is None:
        return None
    text = _strip_latex(normalize_math_text(text)).strip().strip("$").strip()
    if not text:
        return None

    whole = _LATEX_FRACTION.fullmatch(text) or _PLAIN_FRACTION.fullmatch(text)
    if whole:
        sign, numerator, denominator = whole.groups()
        if _too_large_to_parse(numerator.replace(",", "")) or _too_large_to_parse(denominator.replace(",", "")):
            return None
        denominator_value = Fraction(denominator.replace(",", ""))
        if denominator_value == 0:
            return None
        value = Fraction(numerator.replace(",", "")) / denominator_value
        return -value if sign == "-" else value

    # NOTE: a decimal comma ("82,3" in Italian or Dutch solutions) reads as a list, so such
    # answers are compared as text and kept "unverified" without a reference.
    match = _LEADING_NUMBER.match(text)
    if match is None:
        return None
    rest = text[match.end():]
    if _LIST_CONTINUES.match(rest) or _EXPRESSION_CONTINUES.match(rest) or "=" in rest:
        return None
    number = match.group("number").replace(",", "")
    if _too_large_to_parse(number):
        return None
    value = Fraction(number)
    negative = (match.group("sign1") == "-") != (match.group("sign2") == "-")
    return -value if negative else value


def format_number(value: float | Fraction) -> str:
    """Write a number canonically: ``8000``, ``2.5``, ``-0.125``, and ``1/3`` when no finite decimal exists."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        decimal = Decimal(value.numerator) / Decimal(value.denominator)
        return format(decimal.normalize(), "f")
    return f"{value.numerator}/{value.denominator}"


def normalize_answer_text(text: str) -> str:
    """Normalize a non-numeric answer for string comparison: no spaces, no $ delimiters, lowercase."""
    text = _strip_latex(normalize_math_text(text))
    text = re.sub(r"\s+", "", text).strip("$").rstrip(".。").lower()
    return text


def _answer_key(raw: str) -> tuple[str, object]:
    number = parse_number(raw)
    if number is not None:
        return ("number", Fraction(number))
    return ("text", normalize_answer_text(raw))


def _matching_brace(text: str, open_index: int) -> int | None:
    depth = 0
    for index in range(open_index, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _find_markers(text: str) -> list[tuple[int, int, int, str]]:
    """Return (marker start, value start, value end, raw value) for every final-answer marker."""
    found = []
    for match in _HASH_MARKER.finditer(text):
        found.append((match.start(), match.start(1), match.end(1), match.group(1)))
    for match in _BOXED.finditer(text):
        close = _matching_brace(text, match.end() - 1)
        if close is not None:
            found.append((match.start(), match.end(), close, text[match.end():close]))
    for match in _PHRASE_MARKER.finditer(text):
        end_match = _SENTENCE_END.search(text, match.end())
        end = end_match.start() if end_match else len(text)
        value = text[match.end():end]
        # "The answer is \boxed{...}" is one answer; the boxed marker above already has it.
        if "\\boxed" in value or "\\fbox" in value:
            continue
        found.append((match.start(), match.end(), end, value))

    found = [marker for marker in found if marker[3].strip()]
    # Drop a marker whose value contains another marker ("#### The answer is 18" counts once).
    kept = []
    for marker in found:
        contains_other = any(
            other is not marker and marker[1] <= other[1] and other[2] <= marker[2] and (other[1], other[2]) != (marker[1], marker[2])
            for other in found
        )
        if not contains_other:
            kept.append(marker)
    unique = {(marker[1], marker[2]): marker for marker in kept}
    return sorted(unique.values())


def extract_final_answers(text: str | None) -> list[str]:
    """Return the raw value of every final-answer marker in ``text``, in order of appearance.

    Never returns empty strings. The same value marked twice (``#### 18`` and ``\\boxed{18}``)
    appears twice; callers compare values with ``parse_number``.
    """
    if not text:
        return []
    text = normalize_math_text(text)
    return [raw.strip().rstrip(".。").strip() for _, _, _, raw in _find_markers(text) if raw.strip().rstrip(".。").strip()]


def last_computed_value(text: str) -> Fraction | None:
    """Return the last ``= N`` result in the reasoning before the first final-answer marker."""
    text = normalize_math_text(text)
    markers = _find_markers(text)
    reasoning = text[: markers[0][0]] if markers else text
    values = [parse_number(match.group(1)) for match in _COMPUTED_VALUE.finditer(reasoning)]
    values = [value for value in values if value is not None]
    return Fraction(values[-1]) if values else None


_BINARY_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _evaluate_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left = _evaluate_node(node.left)
        right = _evaluate_node(node.right)
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1 or abs(right) > MAX_EXPONENT:
                raise UnsupportedExpression(f"exponent {right} is not an integer up to {MAX_EXPONENT}")
            result = left ** int(right)
        elif type(node.op) in _BINARY_OPERATORS:
            result = _BINARY_OPERATORS[type(node.op)](left, right)
        else:
            raise UnsupportedExpression(f"operator {type(node.op).__name__} is not supported")
        if abs(result) > MAX_MAGNITUDE:
            raise UnsupportedExpression("intermediate value exceeds 1e60")
        return Fraction(result)
    raise UnsupportedExpression(f"{type(node).__name__} is not supported")


def evaluate_arithmetic(expression: str) -> Fraction:
    """Evaluate a plain arithmetic expression exactly, without ``eval``.

    Supports numbers (thousands separators, ``$`` and ``%`` are not), parentheses, unary +/-,
    + - * / // % and ** with integer exponents up to 64; ``×``, ``÷`` and ``^`` are read as
    ``*``, ``/`` and ``**``. Raises ``UnsupportedExpression`` for anything else (names, calls,
    huge values) and ``ZeroDivisionError`` for a division by zero.
    """
    expression = normalize_math_text(expression).strip()
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise UnsupportedExpression(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    expression = re.sub(r"\b\d{1,3}(?:,\d{3})+\b", lambda match: match.group(0).replace(",", ""), expression)
    expression = expression.replace("×", "*").replace("÷", "/").replace("^", "**").replace("$", "")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as error:
        raise UnsupportedExpression(f"not an arithmetic expression: {error.msg}") from error
    return _evaluate_node(tree)


def _close_to_claimed(computed: Fraction, claimed: Fraction, claimed_text: str) -> bool:
    """Accept a claimed result shown rounded or truncated to its own number of decimals."""
    decimals = len(claimed_text.split(".", 1)[1]) if "." in claimed_text else 0
    return abs(computed - claimed) < Fraction(1, 10**decimals)


def find_arithmetic_errors(text: str) -> list[str]:
    """Return a description of every ``<<expr=result>>`` annotation whose result is wrong.

    Annotations the evaluator cannot read (names, percent signs) are skipped, not counted.
    """
    errors = []
    for match in _ANNOTATION.finditer(normalize_math_text(text)):
        body = match.group(1)
        if "=" not in body:
            continue
        expression, claimed_text = body.rsplit("=", 1)
        claimed = parse_number(claimed_text)
        if claimed is None:
            continue
        try:
            computed = evaluate_arithmetic(expression)
        except UnsupportedExpression:
            continue
        except ZeroDivisionError:
            errors.append(f"<<{body}>> divides by zero")
            continue
        if not _close_to_claimed(computed, Fraction(claimed), claimed_text.strip()):
            errors.append(f"<<{body}>> evaluates to {format_number(computed)}")
    return errors


def numbers_equal(left: Fraction, right: Fraction, rel_tol: float) -> bool:
    """Compare exactly, then within ``rel_tol`` (absolute 1e-9 near zero), in exact arithmetic.

    Fractions are compared without converting to float, so values past the float range (1e309)
    compare instead of raising OverflowError.
    """
    if left == right:
        return True
    left, right = Fraction(left), Fraction(right)
    difference = abs(left - right)
    tolerance = max(Fraction(rel_tol) * max(abs(left), abs(right)), Fraction(1, 10**9))
    return difference <= tolerance


@dataclass(frozen=True)
class MathOutcome:
    """The verdict for one response: kept with ``math_check``, or rejected with ``reason``."""

    answer: str | None
    math_check: str | None
    reason: str | None = None
    score: float | None = None
    threshold: float | None = None
    detail: str | None = None


def _keys_equal(left: tuple[str, object], right: tuple[str, object], rel_tol: float) -> bool:
    if left[0] == "number" and right[0] == "number":
        return numbers_equal(left[1], right[1], rel_tol)
    return left == right


def _display(key: tuple[str, object]) -> str:
    return format_number(key[1]) if key[0] == "number" else str(key[1])


def check_math_answer(response: str | None, reference: str | None, config: MathCheckConfig) -> MathOutcome:
    """Check one math response; see the module docstring for the order of checks."""
    raw_answers = extract_final_answers(response)
    if not raw_answers:
        return MathOutcome(None, None, "no_final_answer", detail="no ####, \\boxed{} or 'answer is' marker with a value")

    distinct: list[tuple[str, object]] = []
    for key in map(_answer_key, raw_answers):
        if not any(_keys_equal(key, seen, config.answer_rel_tol) for seen in distinct):
            distinct.append(key)
    if len(distinct) > 1:
        shown = ", ".join(_display(key) for key in distinct)
        return MathOutcome(None, None, "multiple_final_answers", float(len(distinct)), 1.0, f"final answers: {shown}")

    answer_key = distinct[0]
    answer = _display(answer_key)
    if config.check_arithmetic:
        errors = find_arithmetic_errors(response or "")
        if errors:
            return MathOutcome(answer, None, "arithmetic_error", float(len(errors)), 0.0, "; ".join(errors)[:500])

    if reference is not None and reference.strip():
        reference_key = _answer_key(reference)
        if _keys_equal(answer_key, reference_key, config.answer_rel_tol):
            return MathOutcome(answer, "matches_reference")
        return MathOutcome(answer, None, "answer_mismatch", detail=f"answer {answer}, reference {_display(reference_key)}")

    computed = last_computed_value(response or "") if answer_key[0] == "number" else None
    if computed is None:
        return MathOutcome(answer, "unverified")
    if numbers_equal(answer_key[1], computed, config.answer_rel_tol):
        return MathOutcome(answer, "matches_reasoning")
    # NOTE: a solution that finishes its last step in words ("leaving 4") after an earlier
    # "= 8" is rejected here. On 8,594 GSM-symbolic solutions in 108 languages this rule
    # rejected 29, and the ones read by hand were real inconsistencies.
    if config.require_reasoning_match:
        detail = f"answer {answer}, last computed value {format_number(computed)}"
        return MathOutcome(answer, None, "reasoning_mismatch", detail=detail)
    return MathOutcome(answer, "unverified")


def check_math_rows(frame: pl.DataFrame, config: MathCheckConfig) -> pl.DataFrame:
    """Add ``math_answer``, ``math_check`` and the reject columns to math rows.

    ``frame`` needs ``response`` and ``reference``. ``math_answer`` is the normalized answer
    (``8000``, ``1/2``, or the normalized text of a non-numeric answer).
    """
    outcomes = []
    for response, reference in frame.select("response", "reference").iter_rows():
        try:
            outcomes.append(check_math_answer(response, reference, config))
        except Exception as error:  # a per-sample failure becomes a rejection, never a crashed batch
            outcomes.append(MathOutcome(None, None, f"error_{type(error).__name__}", detail=str(error)[:500]))

    summary: dict[str, int] = {}
    for outcome in outcomes:
        label = outcome.reason or outcome.math_check
        summary[label] = summary.get(label, 0) + 1
    log.info("math check: %d rows: %s", frame.height, dict(sorted(summary.items())))

    return frame.with_columns(
        pl.Series("math_answer", [o.answer for o in outcomes], dtype=pl.String),
        pl.Series("math_check", [o.math_check for o in outcomes], dtype=pl.String),
        pl.Series(REASON, [o.reason for o in outcomes], dtype=pl.String),
        pl.Series(SCORE, [o.score for o in outcomes], dtype=pl.Float64),
        pl.Series(THRESHOLD, [o.threshold for o in outcomes], dtype=pl.Float64),
        pl.Series(DETAIL, [o.detail for o in outcomes], dtype=pl.String),
    )
