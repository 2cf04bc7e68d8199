"""Answer consensus among responses to the same problem."""

import pytest

from filters.peer_answers import display_answer, final_answer_key, group_key, peer_disagreements


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So 3 + 4 = 7.\n#### 7", "7"),
        (r"The area is \boxed{\frac{3}{2}}.", "3/2"),
        ("We count the cases.\nTherefore, there are 1,024 such strings.", "1024"),
        ("计算过程如下。\n所以答案是42。", "42"),
        ("We count the cases.\nThere are 12 cases.", None),  # no marker and no concluding word
        ("#### 5\nThe answer is 6.", None),  # two different marked answers
        ("Therefore, the claim holds.", None),  # concluding sentence without a number
        ("Hmm.\nSo she has 12 apples left, which is 3 fewer than 15.", None),  # several numbers
        ("Hmm.\nTherefore, there are 1 000 strings.", None),  # "1 000" may be 1 or 1000
        ("#### 3:30", "3:30"),  # a time, not the number 3
        (r"\boxed{x = 5}", "5"),
        (r"\boxed{90^\circ}", "90"),
        (r"\boxed{\textbf{(B)}}", "b"),
        ("", None),
    ],
)
def test_final_answer_key(text, expected):
    assert display_answer(final_answer_key(text)) == expected


def test_equal_numbers_share_key():
    assert final_answer_key("#### 0.5") == final_answer_key(r"\boxed{1/2}")
    assert final_answer_key("#### 1,000") == final_answer_key("Thus the total is 1000.")


def test_group_key_prefers_group_id():
    assert group_key("P_1", "anything") == "group:P_1"
    assert group_key(None, "What is  2+2?") == group_key(None, "what is 2+2?")
    assert group_key(None, "What is 2+2?") != group_key(None, "What is 2+3?")


def test_minority_answer_is_flagged_with_evidence():
    answers = ["number:7/1"] * 5 + ["number:8/1"]
    found = peer_disagreements(answers, ["g"] * 6)
    assert found[:5] == [None] * 5
    assert found[5] == {"answer": "8", "majority_answer": "7", "majority_share": 1.0, "peers": 5}


def test_weak_majority_flags_nothing():
    assert peer_disagreements(["a", "a", "a", "b"], ["g"] * 4) == [None] * 4  # 3 peers < 5
    split = ["a", "a", "b", "b", "c", "c", "d"]
    assert peer_disagreements(split, ["g"] * 7) == [None] * 7  # no answer reaches half of the peers


def test_peer_disagreements_keeps_groups_apart():
    answers = ["a"] * 5 + ["b"] + [None] + ["b"]
    groups = ["g1"] * 7 + ["g2"]
    found = peer_disagreements(answers, groups)
    assert found[5] is not None
    assert found[6] is None  # no answer: never flagged
    assert found[7] is None  # alone in its group


def test_extra_peers_vote_but_are_not_checked():
    found = peer_disagreements(["b"], ["g"], extra_answers=["a"] * 6, extra_groups=["g"] * 6)
    assert len(found) == 1
    assert (found[0]["majority_answer"], found[0]["peers"]) == ("a", 6)


def test_invalid_settings_rejected():
    with pytest.raises(ValueError, match="min_majority"):
        peer_disagreements(["a"], ["g"], min_majority=0)
    with pytest.raises(ValueError, match="one group per answer"):
        peer_disagreements(["a"], [])


def test_tied_group_flags_nobody():
    answers = ["number:1/1"] * 3 + ["number:2/1"] * 3
    assert peer_disagreements(answers, ["g"] * 6) == [None] * 6


@pytest.mark.parametrize(
    "minority",
    [r"\boxed{\dfrac12}", "The answer is 50%.", r"\boxed{6.28}", "#### 1 1/2", "The answer is 1.000 euros.", "#### 2,5"],
)
def test_majority_spelling_not_flagged(minority):
    majority = {
        r"\boxed{\dfrac12}": "#### 0.5",
        "The answer is 50%.": "#### 0.5",
        r"\boxed{6.28}": r"\boxed{2\pi}",
        "#### 1 1/2": "#### 1.5",
        "The answer is 1.000 euros.": "#### 1000",
        "#### 2,5": "#### 2.5",
    }[minority]
    answers = [final_answer_key(majority)] * 5 + [final_answer_key(minority)]
    assert peer_disagreements(answers, ["g"] * 6)[-1] is None


def test_choice_letters_are_compared():
    answers = [final_answer_key(r"\boxed{B}")] * 5 + [final_answer_key("The answer is (C).")]
    assert peer_disagreements(answers, ["g"] * 6)[-1]["majority_answer"] == "b"


def test_many_markers_give_no_answer():
    assert final_answer_key("The answer is 5. " * 100_000) is None
    assert final_answer_key("\\boxed{" * 100_000 + "1" + "}" * 100_000) is None


def test_choice_and_number_never_outvote():
    found = peer_disagreements(["choice:b"], ["g"], extra_answers=["number:5/1"] * 6, extra_groups=["g"] * 6)
    assert found == [None]
