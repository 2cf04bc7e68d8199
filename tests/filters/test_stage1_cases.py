"""Field cases for stage 1, run end to end through ``run_stage1`` unless a test says otherwise.

Input frames use the case's ``id`` as ``sample_id`` so that "lowest id survives" is testable, and
``lang`` comes from ``detect_lang`` on prompt and response, as ingestion does for unlabeled rows.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from filters.lang import detect_lang
from filters.schema import SAMPLE_SCHEMA
from filters.stage1 import Stage1Config, run_stage1
from filters.toxicity import ProfanityCheckScorer, ToxicityConfig, apply_toxicity

CASES = Path(__file__).parent / "cases_stage1"
REPO = Path(__file__).resolve().parents[2]


def read_case(*names: str) -> list[dict]:
    rows = []
    for name in names:
        with open(CASES / name, encoding="utf-8") as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    return rows


def to_frame(rows: list[dict]) -> pl.DataFrame:
    records = []
    for row in rows:
        record = {name: None for name in SAMPLE_SCHEMA}
        record.update(
            sample_id=row["id"],
            source=row["source"],
            task=row["task"],
            prompt=row["prompt"],
            response=row["response"],
            lang=row.get("lang") or detect_lang(row["prompt"] + "\n" + row["response"]),
        )
        records.append(record)
    return pl.DataFrame(records, schema=SAMPLE_SCHEMA)


def template_rows() -> list[dict]:
    """The shared-template case: a 540-word rule list in front of two different math problems."""
    template = " ".join(f"Rule {i}: show step {i} of your work clearly." for i in range(1, 61))
    question_1 = "Problem: A farmer has 12 cows and buys 7 more. How many cows does the farmer have now?"
    answer_1 = "He starts with 12 cows and adds 7, so 12 + 7 = 19. Check: 19 - 7 = 12. #### 19"
    question_2 = "Problem: A library lends 45 books on Monday and 38 on Tuesday. How many books did it lend in total?"
    answer_2 = "It lends 45 and then 38, so 45 + 38 = 83. Check: 83 - 38 = 45. #### 83"
    rows = [
        {"id": "t1", "prompt": template + "\n\n" + question_1, "response": answer_1},
        {"id": "t2", "prompt": template + "\n\n" + question_2, "response": answer_2},
        {"id": "t4", "prompt": template + "\n\n" + question_1, "response": answer_1 + " Great job, you did it!"},
    ]
    for row in rows:
        row.update(source="tutor_synth", task="math")
    return rows


def long_response_rows() -> list[dict]:
    """The long-response case: an 800-word benign log with a toxic sentence at the end, none, or the start."""
    filler = " ".join(f"Step {i}: write the measured temperature in the lab notebook." for i in range(1, 81))
    insult = "You are a pathetic idiot and nobody will ever want to work with you."
    rows = [
        {"id": "y1", "response": filler + " " + insult},
        {"id": "y2", "response": filler},
        {"id": "y3", "response": insult + " " + filler},
    ]
    for row in rows:
        row.update(source="lab_logs", task="chat", prompt="Summarise the lab procedure.")
    return rows


@pytest.fixture(scope="module")
def scorer() -> ProfanityCheckScorer:
    return ProfanityCheckScorer()


def run(rows: list[dict], scorer, **overrides):
    samples = to_frame(rows)
    result = run_stage1(samples, Stage1Config(**overrides), scorer)
    result.check_conservation(samples["sample_id"])
    return result


def kept_ids(result) -> set[str]:
    return set(result.kept["sample_id"].to_list())


def reasons(result) -> dict[str, str]:
    return dict(zip(result.rejected["sample_id"], result.rejected["reason"], strict=True))


def cluster_members(result, kind: str) -> list[set[str]]:
    clusters = result.tables["clusters"].filter(pl.col("kind") == kind)
    groups = clusters.group_by("cluster_id").agg(pl.col("sample_id"))
    return sorted((set(ids) for ids in groups["sample_id"].to_list()), key=sorted)


def test_short_texts_never_share_a_signature(scorer):
    """Texts shorter than one shingle go to exact dedup only; empty ones go to the quality rules."""
    result = run(read_case("case01.jsonl"), scorer)
    assert kept_ids(result) == {"s1", "s2", "s4"}
    assert reasons(result) == {"s3": "exact_duplicate", "s5": "empty_response", "s6": "empty_prompt"}
    assert cluster_members(result, "exact") == [{"s1", "s3"}]
    assert cluster_members(result, "near") == []
    duplicate_of = result.rejected.filter(pl.col("sample_id") == "s3")["duplicate_of"].item()
    assert duplicate_of == "s1"
    assert set(result.kept["shingle_kind"].to_list()) == {"none"}


def test_chinese_uses_character_shingles(scorer):
    result = run(read_case("case02.jsonl"), scorer)
    assert kept_ids(result) == {"z1", "z3", "z4"}
    assert cluster_members(result, "near") == [{"z1", "z2"}]
    assert cluster_members(result, "exact") == [{"z4", "z5", "z6", "z7", "z8", "z9"}]
    near = result.tables["clusters"].filter(pl.col("kind") == "near")
    assert near.filter(pl.col("is_survivor"))["sample_id"].to_list() == ["z1"]
    assert result.kept["lang"].to_list() == ["zh", "zh", "zh"]
    assert result.kept["shingle_kind"].to_list() == ["char", "char", "char"]


def test_exact_key_ignores_invisible_characters(scorer):
    """e1-e7 differ only in whitespace, NBSP, ZWSP, a full-width stop, CRLF and a BOM."""
    rows = read_case("case03.jsonl")
    result = run(rows, scorer)
    assert cluster_members(result, "exact") == [{"e1", "e2", "e3", "e4", "e5", "e6", "e7"}]
    assert kept_ids(result) == {"e1", "e8", "c1", "c2"}
    assert sorted(result.rejected["sample_id"].to_list()) == ["e2", "e3", "e4", "e5", "e6", "e7"]
    assert set(result.rejected["reason"].to_list()) == {"exact_duplicate"}
    stored = result.kept.filter(pl.col("sample_id") == "e1")["response"].item()
    assert stored == rows[0]["response"]


def test_indentation_variants_stay_apart(scorer):
    """c1 and c2 differ only in the indentation of ``b()``: different programs, never merged.

    Their word-5-gram Jaccard is 4/7, above the default threshold, so near dedup must keep
    layout-only variants apart on purpose.
    """
    rows = [row for row in read_case("case03.jsonl") if row["id"] in {"c1", "c2"}]
    result = run(rows, scorer)
    assert kept_ids(result) == {"c1", "c2"}
    assert cluster_members(result, "exact") == []
    assert cluster_members(result, "near") == []


def test_indentation_variants_of_long_code_stay_apart(scorer):
    body = "\n".join(f"    total_{i} = compute_{i}(values, {i})" for i in range(30))
    first = f"```python\ndef run(values):\n{body}\n    return total_0\n```"
    second = first.replace("\n    return total_0", "\nreturn total_0")
    rows = [
        {"id": "k1", "source": "web_qa", "task": "code", "prompt": "Write run.", "response": first},
        {"id": "k2", "source": "web_qa", "task": "code", "prompt": "Write run.", "response": second},
        {"id": "k3", "source": "web_qa", "task": "code", "prompt": "Write run.", "response": first + "\nDone."},
    ]
    result = run(rows, scorer)
    assert kept_ids(result) == {"k1", "k2"}
    assert cluster_members(result, "near") == [{"k1", "k3"}]


@pytest.mark.parametrize("order", ["files_ab", "files_ba", "one_file_r4_r2_r3_r1"])
def test_cross_source_near_duplicate_keeps_lowest_id(scorer, order):
    rows_by_id = {row["id"]: row for row in read_case("case04a.jsonl", "case04b.jsonl")}
    orders = {
        "files_ab": ["r3", "r4", "r2", "r1"],
        "files_ba": ["r2", "r1", "r3", "r4"],
        "one_file_r4_r2_r3_r1": ["r4", "r2", "r3", "r1"],
    }
    result = run([rows_by_id[i] for i in orders[order]], scorer)
    assert kept_ids(result) == {"r1", "r4"}
    assert cluster_members(result, "near") == [{"r1", "r2", "r3"}]
    ledger = result.rejected.sort("sample_id")
    assert ledger["reason"].to_list() == ["near_duplicate", "near_duplicate"]
    assert ledger["duplicate_of"].to_list() == ["r1", "r1"]
    per_source = result.kept.group_by("source").len().sort("source")
    assert dict(per_source.iter_rows()) == {"alpaca_mix": 1, "dolly_mix": 1}


def test_survivor_independent_of_hash_seed():
    """A fresh interpreter with another PYTHONHASHSEED gives the same survivors and clusters."""
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from tests.filters.test_stage1_cases import read_case, to_frame\n"
        "from filters.stage1 import Stage1Config, run_stage1\n"
        "from filters.toxicity import ProfanityCheckScorer\n"
        "rows = read_case('case04b.jsonl', 'case04a.jsonl', 'case02.jsonl')\n"
        "result = run_stage1(to_frame(rows), Stage1Config(), ProfanityCheckScorer())\n"
        "print(json.dumps([sorted(result.kept['sample_id'].to_list()), result.tables['clusters'].rows()]))\n"
    )
    outputs = []
    for hash_seed in ("0", "12345"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
        completed = subprocess.run(
            [sys.executable, "-c", script, str(REPO)], capture_output=True, text=True, env=environment, check=True
        )
        outputs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == ["r1", "r4", "z1", "z3", "z4"]


def test_rerun_gives_identical_output(scorer):
    rows = read_case("case04a.jsonl", "case04b.jsonl")
    first = run(rows, scorer)
    second = run(rows, scorer)
    assert first.kept.equals(second.kept)
    assert first.rejected.equals(second.rejected)
    assert first.tables["clusters"].equals(second.tables["clusters"])


def test_shared_template_does_not_merge_problems(scorer):
    result = run(template_rows(), scorer)
    assert kept_ids(result) == {"t1", "t2"}
    assert cluster_members(result, "near") == [{"t1", "t4"}]
    assert reasons(result) == {"t4": "near_duplicate"}
    for members in cluster_members(result, "near") + cluster_members(result, "exact"):
        assert not {"t1", "t2"} <= members


def test_shared_template_lowest_id_rule_agrees(scorer):
    result = run(template_rows(), scorer, survivor_rule="lowest_id")
    assert kept_ids(result) == {"t1", "t2"}


def test_benign_technical_text_not_toxic(scorer):
    result = run(read_case("case06.jsonl"), scorer)
    assert kept_ids(result) == {"x1", "x2", "x3", "x4"}
    assert reasons(result) == {"x5": "toxic"}
    x5 = result.rejected.filter(pl.col("sample_id") == "x5")
    assert x5["score"].item() >= x5["threshold"].item()
    assert x5["threshold"].item() == Stage1Config().max_toxicity
    assert (result.kept["toxicity_score"] < Stage1Config().max_toxicity).all()
    assert set(result.kept["toxicity_model"].to_list()) == {"alt-profanity-check-1.9.1"}
    assert result.kept["toxicity_prompt_score"].null_count() == 0


def test_toxic_prompt_word_does_not_reject_response(scorer):
    """The decision reads the response score only, even when the prompt alone would fail."""
    rows = [row for row in read_case("case06.jsonl") if row["id"] == "x1"]
    rows[0] = {**rows[0], "prompt": "You are a pathetic idiot. How do I kill a zombie process on Linux?"}
    result = run(rows, scorer)
    assert kept_ids(result) == {"x1"}
    assert result.kept["toxicity_prompt_score"].item() >= Stage1Config().max_toxicity


def test_late_toxic_sentence_found_in_long_response(scorer):
    """Scored with the toxicity step directly: y1-y3 are near duplicates of each other and very
    repetitive, so the full stage would remove two of them before toxicity runs."""
    samples = to_frame(long_response_rows())
    result = apply_toxicity(samples, scorer, Stage1Config().toxicity_config())
    scored = pl.concat([result.kept.select("sample_id"), result.rejected.select("sample_id")])
    assert scored.height == 3
    assert reasons(result) == {"y1": "toxic", "y3": "toxic"}
    assert kept_ids(result) == {"y2"}
    assert result.kept["toxicity_score"].item() < ToxicityConfig().max_toxicity
    assert result.kept["toxicity_chunks"].item() >= 2
    chunk_counts = result.rejected["detail"].to_list()
    assert all("response chunks" in detail for detail in chunk_counts)


def test_oversized_response_rejected_by_length(scorer):
    rows = [
        {"id": "b6", "source": "vendor_export", "task": "chat", "lang": "en", "prompt": "Q6?",
         "response": "x " * (10 * 1024 * 1024)},
        {"id": "b7", "source": "vendor_export", "task": "chat", "lang": "en", "prompt": "Q7?", "response": "A7."},
    ]
    result = run(rows, scorer)
    assert reasons(result) == {"b6": "response_too_long"}
    assert kept_ids(result) == {"b7"}


@pytest.fixture(scope="module")
def packaged_samples() -> pl.DataFrame:
    """The stage-1 input of the packaged demo: every source in config/sources.yaml."""
    from filters.ingest import read_source
    from filters.sources import load_sources_config

    sources = load_sources_config(REPO / "config" / "sources.yaml")
    return pl.concat([read_source(source).samples for source in sources])


def test_packaged_survivors_independent_of_input_order(packaged_samples, scorer):
    forward = run_stage1(packaged_samples, Stage1Config(), scorer)
    backward = run_stage1(packaged_samples.reverse(), Stage1Config(), scorer)
    assert forward.tables["clusters"].height > 0
    assert sorted(forward.kept["sample_id"].to_list()) == sorted(backward.kept["sample_id"].to_list())
    assert forward.tables["clusters"].equals(backward.tables["clusters"])
    assert forward.rejected.sort("sample_id").equals(backward.rejected.sort("sample_id"))


def test_packaged_survivors_independent_of_batching(packaged_samples, scorer):
    """Signing responses in worker processes, in small batches, changes no survivor."""
    whole = run_stage1(packaged_samples, Stage1Config(), scorer)
    in_batches = run_stage1(packaged_samples, Stage1Config(dedup_processes=2, dedup_batch_documents=500), scorer)
    assert sorted(whole.kept["sample_id"].to_list()) == sorted(in_batches.kept["sample_id"].to_list())
    assert whole.tables["clusters"].equals(in_batches.tables["clusters"])


WHY_REMOVED_SQL = """
SELECT c.sample_id, c.kind, c.cluster_id, l.reason, l.score, l.threshold,
       c.survivor_id AS kept_in_cluster, l.duplicate_of AS kept_finally, k.response AS kept_response
FROM stage1_clusters c
JOIN rejection_ledger l ON l.sample_id = c.sample_id AND l.stage = 'stage1'
LEFT JOIN raw_samples k ON k.sample_id = l.duplicate_of
WHERE NOT c.is_survivor AND c.sample_id = $sample_id
"""


def test_cluster_query_explains_removal(scorer):
    """One DuckDB query over the stage-1 tables says why a sample was removed and what was kept."""
    import duckdb

    rows = read_case("case04a.jsonl", "case04b.jsonl")
    raw_samples = to_frame(rows)
    result = run(rows, scorer)
    connection = duckdb.connect()
    connection.register("stage1_clusters", result.tables["clusters"].to_arrow())
    connection.register("rejection_ledger", result.rejected.with_columns(pl.lit("stage1").alias("stage")).to_arrow())
    connection.register("raw_samples", raw_samples.to_arrow())
    answer = connection.execute(WHY_REMOVED_SQL, {"sample_id": "r3"}).fetchall()
    assert len(answer) == 1
    sample_id, kind, cluster_id, reason, score, threshold, kept_in_cluster, kept_finally, kept_response = answer[0]
    assert (sample_id, kind, cluster_id, reason) == ("r3", "near", "near:r1", "near_duplicate")
    assert score >= threshold
    assert kept_in_cluster == "r1"
    assert kept_finally == "r1"
    assert kept_response == raw_samples.filter(pl.col("sample_id") == "r1")["response"].item()
