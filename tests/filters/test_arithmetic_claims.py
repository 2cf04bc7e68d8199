"""False stated computations: found in plain text, LaTeX and Chinese; skipped whenever the context could change their meaning."""

from fractions import Fraction

import pytest

from filters.arithmetic_claims import find_false_arithmetic


@pytest.mark.parametrize(
    ("text", "left", "right"),
    [
        ("So 2 + 3 = 6.", "2 + 3", "6"),
        ("The total is 1,000 + 500 = 1,600 dollars.", "1000 + 500", "1600"),
        (r"Hence $\frac{1}{2}(2^{10} - 1) = 1023$.", "((1)/(2))(2^(10) - 1)", "1023"),
        ("a_9 = (1 + a_7 * a_8) / a_6 = (1 + 11 * 26) / 7 = 47", "(1 + 11 * 26) / 7", "47"),
        ("f(2) = f(0) + f(1) = 1 + 3 = 5", "1 + 3", "5"),
        ("100010001 = 10001 * 10001 = (73 * 137) * (73 * 137)", "100010001", "10001 * 10001"),
        ("所以3×4=13元。", "3*4", "13"),
        ("\uff13\uff0b\uff14\uff1d\uff18", "3+4", "8"),  # full-width digits and signs
        (r"$3 \times 4 \div 2 = 7$", "3 * 4 / 2", "7"),
    ],
)
def test_false_computation_is_found(text, left, right):
    claims = find_false_arithmetic(text)
    assert [(claim.left, claim.right) for claim in claims] == [(left, right)]
    assert claims[0].left_value != claims[0].right_value


@pytest.mark.parametrize(
    "text",
    [
        "2 + 2 = 4",
        "1/3 = 0.33",  # a rounded decimal
        "2/3 = 0.66",  # a truncated decimal
        "x - 1 + 2 = 5",  # the sign belongs to x
        "half of 10 = 5",
        "10 times 2 + 3 = 23",  # "times" makes 2 + 3 an operand
        "2 + 3 = 5 times 2",
        "P(1) = 2",
        "a_4 = 7",
        "3:2 = 1.5",
        "3乘以4=12",
        "5! = 120",
        "50% = 0.5",
        r"5^5 = 5 \times (5^2)^2 = 45 mod 11",
        "2^10 = 1024 ≡ 4 (mod 5)",
        "1/3 = 0.333...",
        "2 + 3 = 5x",
        "if a == 2 + 3 = 6",
        "x = 5 + 3",
        "```\nprint(2 + 2 = 5)\n```",  # fenced code is not read
        "9**9**9**9 = 1",  # past the evaluator's limits: skipped, not a crash
        "1/0 = 5",
        "",
    ],
)
def test_correct_or_ambiguous_computation_is_not_flagged(text):
    assert find_false_arithmetic(text) == []


def test_none_is_no_claim():
    assert find_false_arithmetic(None) == []


def test_description_names_both_values():
    claim = find_false_arithmetic("So 7 * 8 = 54.")[0]
    assert claim.left_value == Fraction(56)
    assert claim.describe() == "'7 * 8 = 54' is false: the left side is 56, the right side 54"


def test_find_false_arithmetic_reads_every_line():
    text = "First 2 + 2 = 5.\nThen 3 * 3 = 9.\nLast 10 - 4 = 7."
    assert [claim.left for claim in find_false_arithmetic(text)] == ["2 + 2", "10 - 4"]
