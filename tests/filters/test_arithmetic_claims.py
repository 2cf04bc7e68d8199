"""False stated computations: found in plain text, LaTeX and Chinese; skipped whenever the context could change their meaning."""

import time
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
        ("2.5 × 4 = 11", "2.5 * 4", "11"),  # decimal operands are widened, but not this far
        ("3.5 + 1.5 = 6", "3.5 + 1.5", "6"),  # another decimal: "3." is no list label
        ("(2)5×6=31", "(2)5*6", "31"),  # false with and without the label
        ("10² = 1000", "10^(2)", "1000"),
        ("1. 3 + 3 = 7", "3 + 3", "7"),
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
        # times, decimal commas, European thousands
        "10:30 + 2 = 12:30",
        "Il costo è 2,5 × 4 = 10 euro",
        "1.000,5 + 1 = 1.001,5",
        "1.000 + 500 = 1.500 Euro",
        # quotients, roundings and rounded operands
        "7/2 = 3 R 1",
        "17÷5=3余2",
        "So 25 / 4 = 6 buses, with 1 left over.",
        "1000 × 1.05^10 = 1629",
        "0.33 + 0.33 = 0.67",
        "$33.33 × 3 = $100",
        "12.57 × 2 = 25.13",
        "1.414 × 1.414 = 2",
        "1/3 = .333",
        r"6.02 \times 10^{23} \times 2 = 1.20 \times 10^{24}",
        "The speed is 3.0 x 10^8 = 300,000,000 m/s",
        "0.1 + 0.2 = 0.30000000000000004",
        # superscripts, ranges, ids, labels, mixed numbers, disputed products
        "2.5 × 10³ = 2500",
        "2² + 3² = 13",
        "2⁻¹ = 0.5",
        "pages 10-20 = 11 pages",
        "phone 555-1234 = 5551234",
        "ISBN 978-3-16 = 148410",
        "2024/1/1 = 1",
        "- 2 + 2 = 4",
        "(2)5×6=30",
        "(2) 5 + 5 = 10",
        "3.4+4=8",
        r"2\frac{1}{2} = 2.5",
        "6/2(1+2) = 1",
        # bases, clocks, fields and claims that are refuted or supposed
        "In base 2, 1 + 1 = 10.",
        "11 + 3 = 2 pm",
        "5 + 4 = 2 in Z_7",
        "1 + 1 = 0 in GF(2)",
        "Is 2 + 2 = 5? No.",
        "If 2 + 2 = 5, then ...",
        "The student claimed 7 × 8 = 54, which is wrong.",
        "2 + 3 = 6 ✗",
    ],
)
def test_correct_or_ambiguous_not_flagged(text):
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


def test_hostile_input_returns_quickly():
    texts = [
        "1+1=2\n" * 200_000,
        "1234567890=" * 100_000,
        "(" * 100_000 + "1" + ")" * 100_000 + " + 1 = 3",
        "2" + "⁹" * 100_000 + " = 1",
        "2 + 2\x00 = 5 \ud800",
    ]
    for text in texts:
        started = time.perf_counter()
        find_false_arithmetic(text)
        assert time.perf_counter() - started < 5.0, text[:40]


@pytest.mark.parametrize(
    "text",
    [
        "17 + 25 = 43.\nWait, 17 + 25 = 42.",
        "17 + 25 = 43.\n\nActually, that is 42.",
        "所以3×4=13。\n不对，3×4=12。",
    ],
)
def test_retracted_claim_not_flagged(text):
    assert find_false_arithmetic(text) == []


def test_unretracted_claim_flagged():
    assert len(find_false_arithmetic("17 + 25 = 43.\nWe carry on with the next step.")) == 1


@pytest.mark.parametrize("text", ["3/6 = 50 %.", "1/4 = 25 ‰", "90 + 90 = 180 °"])
def test_spaced_percent_not_flagged(text):
    assert find_false_arithmetic(text) == []
