"""Sentence segmentation and sentence roles used by the stage 2 NLI check."""

import pytest

from filters.segment import (
    extract_premise,
    find_final_answer,
    has_formula,
    is_hypothetical,
    is_question,
    split_sentences,
)


def test_split_sentences_english_prose():
    text = "The parcel weighs 3 kilograms. It was shipped on Monday! Did it arrive? Yes."
    assert split_sentences(text) == [
        "The parcel weighs 3 kilograms.",
        "It was shipped on Monday!",
        "Did it arrive?",
        "Yes.",
    ]


def test_split_sentences_keeps_decimals():
    assert split_sentences("The rate rose 3.5 percent. It fell to 2.25 later.") == [
        "The rate rose 3.5 percent.",
        "It fell to 2.25 later.",
    ]


def test_split_sentences_keeps_abbreviations():
    text = "Dr. Smith moved to the U.S. last year. He likes fruit, e.g. apples and pears. Mr. Lee agrees."
    assert split_sentences(text) == [
        "Dr. Smith moved to the U.S. last year.",
        "He likes fruit, e.g. apples and pears.",
        "Mr. Lee agrees.",
    ]


def test_split_sentences_keeps_initials():
    assert split_sentences("The paper is by J. Smith and colleagues. It is short.") == [
        "The paper is by J. Smith and colleagues.",
        "It is short.",
    ]


def test_split_sentences_chinese_punctuation():
    text = "今天天气很好。我们去公园吧！你来吗？好的；走吧"
    assert split_sentences(text) == ["今天天气很好。", "我们去公园吧！", "你来吗？", "好的；", "走吧"]


def test_split_sentences_chinese_mixed_with_english():
    assert split_sentences("答案是 3.5。The answer is 3.5. 对吗？") == ["答案是 3.5。", "The answer is 3.5.", "对吗？"]


def test_split_sentences_inline_latex_is_one_span():
    text = "We know $x = 3. Y$ holds here. Then \\(a. B\\) is true. Next."
    assert split_sentences(text) == ["We know $x = 3. Y$ holds here.", "Then \\(a. B\\) is true.", "Next."]


def test_split_sentences_display_math_is_one_span():
    text = "The sum is $$\\sum_i x_i. \\quad Y$$ for all rows. Done."
    assert split_sentences(text) == ["The sum is $$\\sum_i x_i. \\quad Y$$ for all rows.", "Done."]


def test_split_sentences_currency_is_not_math():
    assert split_sentences("It costs $5. Then it costs $10. Fine.") == ["It costs $5.", "Then it costs $10.", "Fine."]


def test_split_sentences_skips_fenced_code():
    text = "Here is the code:\n```python\nx = 1. Hello. World\nprint(x)\n```\nThat was the code. Done."
    assert split_sentences(text) == ["Here is the code:", "That was the code.", "Done."]


def test_split_sentences_skips_unclosed_fence_to_end():
    assert split_sentences("Intro sentence here.\n```\nx = 1. y = 2.") == ["Intro sentence here."]


def test_split_sentences_keeps_inline_code():
    assert split_sentences("Call `obj.run(). Now` once. Then stop.") == ["Call `obj.run(). Now` once.", "Then stop."]


def test_split_sentences_list_numbering():
    text = "1. First item here.\n2. Second item. It has two sentences.\n3) Third item"
    assert split_sentences(text) == [
        "1. First item here.",
        "2. Second item.",
        "It has two sentences.",
        "3) Third item",
    ]


def test_split_sentences_gsm_annotations():
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips in May. Altogether she sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert split_sentences(text) == [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
        "Altogether she sold 48+24 = <<48+24=72>>72 clips.",
        "#### 72",
    ]


def test_split_sentences_newlines_end_lines():
    text = "For n = 1:\nf(1) = 3\n\nf(2) = 4"
    assert split_sentences(text) == ["For n = 1:", "f(1) = 3", "f(2) = 4"]


def test_split_sentences_joins_wrapped_line():
    text = "This sentence is wrapped\nin the middle. Next one."
    assert split_sentences(text) == ["This sentence is wrapped in the middle.", "Next one."]


def test_split_sentences_quote_after_period():
    assert split_sentences('He said "Stop." Then he left.') == ['He said "Stop."', "Then he left."]


def test_split_sentences_empty_and_whitespace():
    assert split_sentences(None) == []
    assert split_sentences("") == []
    assert split_sentences("   \n ") == []


def test_is_question_ascii_and_fullwidth():
    assert is_question("Which of them is younger?")
    assert is_question("你来吗？")
    assert not is_question("Alice is older than Bob.")


def test_find_final_answer_markers():
    assert find_final_answer(["She sold 72 clips.", "#### 72"]) == 1
    assert find_final_answer(["So x = 2.", "Thus the result is $\\boxed{2}$.", "Done."]) == 1
    assert find_final_answer(["We add them.", "The answer is 7.", "Check: 3 + 4 = 7."]) == 1
    assert find_final_answer(["We add them.", "It is 7."]) is None


def test_extract_premise_declarative_sentence():
    assert extract_premise("Alice is older than Bob.") == "Alice is older than Bob."


@pytest.mark.parametrize(
    "sentence",
    [
        "1. Find possible values of n mod 8 by considering 2n mod 8.",
        "3. Study the parity of f(0) and f(1).",
        "Is this sequence periodic, and if so, find its period.",
        "How many strings of length 6 are there.",
    ],
)
def test_extract_premise_hint_or_question_is_none(sentence):
    assert extract_premise(sentence) is None


def test_extract_premise_keeps_numbered_statement():
    assert extract_premise("2. There are 25 primes below 100.") == "2. There are 25 primes below 100."


def test_extract_premise_question_alone_is_none():
    assert extract_premise("Which of them is younger?") is None


def test_extract_premise_given_clause_of_question():
    sentence = "Given that the server room is locked on weekends, can a technician enter it on Sunday?"
    assert extract_premise(sentence) == "The server room is locked on weekends."


def test_extract_premise_instruction_is_none():
    assert extract_premise("Solve the following problem.") is None
    assert extract_premise("Make sure to show your work.") is None


def test_is_hypothetical_suppositions_and_cases():
    assert is_hypothetical("Assume that all three inequalities are true.")
    assert is_hypothetical("For d=1, the equation has a solution.")
    assert is_hypothetical("If the last digit is 1, the previous digit is 1 or 2.")
    assert not is_hypothetical("For weekdays the museum opens at 9 am.")
    assert not is_hypothetical("The museum opens at 9 am.")


def test_has_formula_equations_and_latex():
    assert has_formula("So we have 10^k*d+r=57r.")
    assert has_formula("The total is $3\\times 2$.")
    assert not has_formula("The maintenance window is on Tuesday at 02:00.")
