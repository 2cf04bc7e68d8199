"""Tests for n-gram decontamination against eval prompts."""

import polars as pl
import pytest

from filters.decontam import DecontamConfig, EvalIndex, contamination_table, find_contamination, normalize_for_overlap

INSTRUCTION = "Solve the following math problem step by step and put your final answer in a box at the end."
QUESTIONS = [
    "A fog bank rolls in from the ocean to cover a city. It takes 10 minutes to cover every 3 miles of the city. "
    "If the city is 42 miles across, how many minutes will it take to cover the whole city?",
    "Benny saw a 10-foot shark with 2 6-inch remoras attached to it. What percentage of the shark's body "
    "length is the combined length of the remoras?",
] + [
    f"Shop number {i} sells {i + 3} red lamps and {2 * i + 5} blue lamps every single week of the year. "
    f"How many lamps in total does shop {i} sell over {i + 1} weeks of trading?"
    for i in range(10)
]
CONFIG = DecontamConfig()


def eval_frame() -> pl.DataFrame:
    count = len(QUESTIONS)
    return pl.DataFrame(
        {
            "benchmark": ["gsm_symbolic_eval"] * count,
            "item_id": [f"item{i}" for i in range(count)],
            "task": ["math"] * count,
            "lang": ["en"] * count,
            "prompt": [f"{INSTRUCTION}\n\n{question}" for question in QUESTIONS],
        }
    )


def train_frame(prompts: list[str], responses: list[str] | None = None, langs: list[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sample_id": [f"t{i}" for i in range(len(prompts))],
            "lang": langs or ["en"] * len(prompts),
            "prompt": prompts,
            "response": responses or ["ok"] * len(prompts),
        }
    )


def test_normalize_removes_case_punctuation_and_wrapping():
    assert normalize_for_overlap("Hello,\n  WORLD!  It's\t fine.") == "hello world it s fine"


def test_rewrapped_and_embedded_eval_prompt_is_caught():
    rewrapped = QUESTIONS[0].upper().replace(" ", "\n", 5).replace(",", " ;")
    prompt = f"Here is a puzzle my teacher gave me yesterday, please help!\n\n{rewrapped}\n\nThanks a lot."
    matches = find_contamination(train_frame([prompt]), eval_frame(), CONFIG)
    assert matches["item_id"].to_list() == ["item0"]
    assert matches["field"].to_list() == ["prompt"]
    # The n-grams that span the instruction and the question are missing from the copy.
    assert matches["overlap_ratio"][0] > 0.8


def test_shared_instruction_boilerplate_is_not_caught():
    prompt = f"{INSTRUCTION}\n\nA farmer has 17 goats and buys 4 more goats at the market. How many goats now?"
    matches = find_contamination(train_frame([prompt]), eval_frame(), CONFIG)
    assert matches.height == 0


def test_configured_boilerplate_phrase_is_ignored():
    # One item is too few for frequency-based boilerplate, and the instruction dominates it.
    eval_sets = pl.DataFrame(
        {"benchmark": ["tiny"], "item_id": ["i1"], "prompt": [f"{INSTRUCTION}\n\nWhat is seven plus eight?"]}
    )
    prompt = f"{INSTRUCTION}\n\nName three primary colours, please."
    without = find_contamination(train_frame([prompt]), eval_sets, CONFIG)
    with_phrase = find_contamination(train_frame([prompt]), eval_sets, DecontamConfig(boilerplate_phrases=(INSTRUCTION,)))
    assert without.height == 1
    assert with_phrase.height == 0


def test_copy_in_response_is_caught():
    matches = find_contamination(train_frame(["Please answer."], [QUESTIONS[1]]), eval_frame(), CONFIG)
    assert matches["field"].to_list() == ["response"]


def test_partial_copy_below_threshold_is_not_caught():
    words = QUESTIONS[0].split()
    partial = " ".join(words[: len(words) // 3])
    matches = find_contamination(train_frame([partial]), eval_frame(), CONFIG)
    assert matches.height == 0


def test_chinese_prompt_matches_by_characters():
    question = "一團霧從海上飄來，逐漸籠罩一座城市。它每10分鐘可以覆蓋這座城市的3英里。這座城市寬42英里，要花多少分鐘？"
    eval_sets = pl.DataFrame({"benchmark": ["zh_eval"], "item_id": ["z1"], "lang": ["zh"], "prompt": [question]})
    rewrapped = "請幫我解題：" + question.replace("，", " ,\n")
    matches = find_contamination(train_frame([rewrapped], langs=["zh"]), eval_sets, CONFIG)
    assert matches["item_id"].to_list() == ["z1"]


def test_find_contamination_is_empty_on_clean_frame():
    clean = train_frame(["Write a haiku about rain.", "What is the capital of France?"])
    assert find_contamination(clean, eval_frame(), CONFIG).height == 0


def test_contamination_table_counts_per_benchmark():
    eval_sets = eval_frame()
    index = EvalIndex(eval_sets, CONFIG)
    matches = find_contamination(train_frame([QUESTIONS[0], QUESTIONS[0] + " Thanks!", QUESTIONS[1]]), eval_sets, CONFIG)
    table = contamination_table(index, matches).row(0, named=True)
    assert table["n_eval_items"] == len(QUESTIONS)
    assert table["n_matched_train_rows"] == 3
    assert table["n_matched_eval_items"] == 2


def test_config_rejects_invalid_ratio():
    with pytest.raises(ValueError, match="min_overlap_ratio=0"):
        DecontamConfig(min_overlap_ratio=0)
