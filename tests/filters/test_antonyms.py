"""Antonym swaps between statements about one subject."""

import pytest

from filters.antonyms import antonym_contradiction


@pytest.mark.parametrize(
    ("premise", "hypothesis", "pair"),
    [
        (
            "The server room is locked on weekends.",
            "Yes, the server room is open on weekends, so the technician can walk in on Sunday.",
            ("locked", "open"),
        ),
        ("Alice is older than Bob.", "Alice is the younger one.", ("older", "younger")),
        ("The parcel is full.", "So the parcel is empty.", ("full", "empty")),
    ],
)
def test_antonym_swap_contradicts(premise, hypothesis, pair):
    assert antonym_contradiction(premise, hypothesis) == pair


@pytest.mark.parametrize(
    ("premise", "hypothesis"),
    [
        ("Alice is older than Bob.", "Bob is the younger one."),  # another subject: it agrees
        ("The store is open on weekdays.", "The store is closed on Sundays."),  # different days
        ("The door is not open.", "The door is locked."),  # negation agrees with the swap
        ("The museum is open at 9 am.", "The museum is open on Sundays."),  # no antonym
        ("The cup is full and the jug is empty.", "The cup is empty."),  # both words in one sentence
        ("Alice is older than Bob.", "Alice is older than Carol."),
        ("", "The door is open."),
    ],
)
def test_no_contradiction_without_a_clean_swap(premise, hypothesis):
    assert antonym_contradiction(premise, hypothesis) is None
