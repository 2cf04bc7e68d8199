"""Real-world JSONL faults: schema drift late in a file, bare NaN, BOM, bad UTF-8, CRLF, huge records.

The files are generated in ``tmp_path`` byte for byte as the bug reports describe them.
"""

import json
from pathlib import Path

import polars as pl
import pytest

from filters.ingest import read_source, unnest_meta
from filters.sources import SourceConfig

DRIFT_LINES = 150


def drift_lines() -> list[str]:
    """150 records: bare NaN on line 60, ``task`` only from line 120, ``meta.rating`` int then float."""
    lines = []
    for i in range(1, DRIFT_LINES + 1):
        record = {
            "id": f"a{i:03d}",
            "source": "mixed_dump",
            "prompt": f"Question {i}?",
            "response": f"Answer {i}.",
            "meta": {"rating": 7 if i < 130 else 3.5},
        }
        if i >= 120:
            record["task"] = "math"
        lines.append(json.dumps(record))
    lines[59] = '{"id": "a060", "source": "mixed_dump", "prompt": "Question 60?", "response": "Answer 60.", "score": NaN}'
    return lines


@pytest.fixture
def drift_file(tmp_path) -> Path:
    path = tmp_path / "drift.jsonl"
    path.write_text("\n".join(drift_lines()) + "\n")
    return path


@pytest.fixture
def drift_result(drift_file):
    return read_source(SourceConfig(name="mixed_dump", kind="jsonl", path=str(drift_file)))


def by_origin(samples: pl.DataFrame, origin_id: str) -> dict:
    rows = samples.filter(pl.col("origin_id") == origin_id)
    assert rows.height == 1, f"{origin_id} appears {rows.height} times"
    return rows.row(0, named=True)


def test_drift_every_line_accounted(drift_result):
    files = drift_result.files.row(0, named=True)
    assert files["records"] == DRIFT_LINES
    assert files["loaded"] + files["quarantined"] == DRIFT_LINES
    assert drift_result.samples.height + drift_result.quarantine.height == DRIFT_LINES
    summary = drift_result.summary()
    assert summary["loaded"] == DRIFT_LINES - 1
    assert summary["quarantined"] == 1


def test_drift_nan_line_quarantined_as_invalid_json(drift_result):
    """Our documented choice: bare NaN is not JSON, so line 60 is quarantined, not loaded."""
    assert drift_result.quarantine.select("line", "reason").to_dicts() == [{"line": 60, "reason": "invalid_json"}]
    assert "a060" not in drift_result.samples["origin_id"].to_list()


def test_drift_rows_after_bad_line_loaded(drift_result):
    loaded = set(drift_result.samples["origin_id"])
    expected_after = {f"a{i:03d}" for i in range(61, DRIFT_LINES + 1)}
    assert expected_after <= loaded
    assert len(loaded) == DRIFT_LINES - 1


def test_drift_late_task_key_kept(drift_result):
    samples = drift_result.samples
    with_task = samples.filter(pl.col("task").is_not_null())
    assert sorted(with_task["origin_id"]) == [f"a{i:03d}" for i in range(120, DRIFT_LINES + 1)]
    assert set(with_task["task"]) == {"math"}
    assert samples.filter(pl.col("task").is_null()).height == DRIFT_LINES - 1 - 31


def test_drift_rating_widens_to_float(drift_result):
    samples = unnest_meta(drift_result.samples)
    rating = samples["meta"].struct.field("meta").struct.field("rating")
    assert rating.dtype == pl.Float64
    assert rating.null_count() == 0
    ratings = dict(zip(samples["origin_id"], rating))
    assert ratings["a129"] == 7.0
    assert ratings["a130"] == 3.5


def test_drift_split_file_reads_the_same(tmp_path, drift_result):
    """Two halves (lines 1-75 and 76-150) read as a directory give the same records and schema."""
    lines = drift_lines()
    halves = tmp_path / "halves"
    halves.mkdir()
    (halves / "part1.jsonl").write_text("\n".join(lines[:75]) + "\n")
    (halves / "part2.jsonl").write_text("\n".join(lines[75:]) + "\n")
    split = read_source(SourceConfig(name="mixed_dump", kind="jsonl", path=str(halves)))

    assert split.samples.schema == drift_result.samples.schema
    assert split.samples.equals(drift_result.samples)
    assert unnest_meta(split.samples).schema == unnest_meta(drift_result.samples).schema
    assert split.quarantine.select("line", "reason").to_dicts() == [{"line": 60, "reason": "invalid_json"}]
    assert split.files["loaded"].sum() + split.files["quarantined"].sum() == DRIFT_LINES


def vendor_record(i: int, **fields) -> bytes:
    record = {"id": f"b{i}", "source": "vendor_export", "task": "chat", "prompt": f"Q{i}?", "response": f"A{i}."}
    record.update(fields)
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


@pytest.fixture(scope="module")
def vendor_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vendor")
    (folder / "18a.jsonl").write_bytes(b"\xef\xbb\xbf" + vendor_record(1) + b"\n" + vendor_record(2) + b"\n")
    latin1 = b'{"id": "b4", "source": "vendor_export", "task": "chat", "prompt": "Caf\xe9?", "response": "Yes."}'
    (folder / "18b.jsonl").write_bytes(vendor_record(3) + b"\r\n" + latin1 + b"\r\n" + vendor_record(5) + b"\r\n")
    huge = vendor_record(6, response="x " * (10 * 1024 * 1024))  # about 20 MiB on one line
    (folder / "18c.jsonl").write_bytes(huge + b"\n" + vendor_record(7) + b"\n")
    return folder


@pytest.fixture(scope="module")
def vendor_result(vendor_dir):
    return read_source(SourceConfig(name="vendor_export", kind="jsonl", path=str(vendor_dir)))


def file_counts(result) -> dict[str, dict]:
    return {Path(row["file"]).name: row for row in result.files.to_dicts()}


def test_vendor_all_files_read_with_counts(vendor_result):
    counts = file_counts(vendor_result)
    assert sorted(counts) == ["18a.jsonl", "18b.jsonl", "18c.jsonl"]
    assert (counts["18a.jsonl"]["loaded"], counts["18a.jsonl"]["quarantined"]) == (2, 0)
    assert (counts["18b.jsonl"]["loaded"], counts["18b.jsonl"]["quarantined"]) == (2, 1)
    assert (counts["18c.jsonl"]["loaded"], counts["18c.jsonl"]["quarantined"]) == (1, 1)


def test_vendor_bom_does_not_rename_id(vendor_result):
    b1 = by_origin(vendor_result.samples, "b1")
    assert b1["origin_id"] == "b1"
    assert not any(column.startswith("\ufeff") for column in vendor_result.samples.columns)
    assert not any(key.startswith("\ufeff") for key in json.loads(b1["meta"]))


def test_vendor_latin1_line_quarantined(vendor_result):
    bad = vendor_result.quarantine.filter(pl.col("reason") == "invalid_utf8")
    assert bad.height == 1
    assert Path(bad["file"][0]).name == "18b.jsonl"
    assert bad["line"][0] == 2
    assert "b4" not in vendor_result.samples["origin_id"].to_list()


def test_vendor_crlf_values_have_no_cr(vendor_result):
    assert by_origin(vendor_result.samples, "b3")["response"] == "A3."
    assert by_origin(vendor_result.samples, "b5")["response"] == "A5."


def test_vendor_huge_record_too_large(vendor_result):
    """The 20 MiB record is over the 8 MiB default, so ingestion quarantines it."""
    huge = vendor_result.quarantine.filter(pl.col("reason") == "too_large")
    assert huge.height == 1
    assert Path(huge["file"][0]).name == "18c.jsonl"
    assert huge["line"][0] == 1
    assert by_origin(vendor_result.samples, "b7")["response"] == "A7."


def test_vendor_survivors_are_expected(vendor_result):
    assert sorted(vendor_result.samples["origin_id"]) == ["b1", "b2", "b3", "b5", "b7"]
