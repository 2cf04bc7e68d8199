"""Tests for the JSONL and Parquet readers, the record shapes and the quarantine reasons."""

import gzip
import io
import json
from pathlib import Path

import polars as pl
import pytest

from filters import ingest, shapes
from filters.ingest import SourceReadError, iter_lines, read_source, unnest_meta
from filters.schema import SAMPLE_SCHEMA, make_sample_id
from filters.sources import SourceConfig


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def read_records(tmp_path: Path, records: list[object], **config) -> ingest.IngestResult:
    path = write_jsonl(tmp_path / "records.jsonl", records)
    return read_source(SourceConfig(name="unit", kind="jsonl", path=str(path), **config))


def read_one(tmp_path: Path, record: object, **config) -> ingest.IngestResult:
    return read_records(tmp_path, [record], **config)


def only_sample(result: ingest.IngestResult) -> dict:
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    assert result.samples.height == 1
    return result.samples.row(0, named=True)


def only_quarantine(result: ingest.IngestResult) -> dict:
    assert result.samples.height == 0
    assert result.quarantine.height == 1
    return result.quarantine.row(0, named=True)


# ---------------------------------------------------------------------------------------------
# Shapes


def test_prompt_response_shape_maps_columns(tmp_path):
    sample = only_sample(read_one(tmp_path, {"prompt": "What is 2+2?", "response": "4", "id": 7, "rating": 5}))
    assert sample["prompt"] == "What is 2+2?"
    assert sample["response"] == "4"
    assert sample["origin_id"] == "7"
    assert sample["source"] == "unit"
    assert sample["sample_id"] == make_sample_id("unit", "What is 2+2?", "4")
    assert json.loads(sample["meta"]) == {"rating": 5}
    assert sample["messages"] is None


@pytest.mark.parametrize(
    "prompt_key, response_key",
    [
        ("question", "answer"),
        ("query", "response"),
        ("input", "output"),
        ("problem", "solution"),
        ("prompt", "completion"),
    ],
)
def test_prompt_response_accepts_aliases(tmp_path, prompt_key, response_key):
    sample = only_sample(read_one(tmp_path, {prompt_key: "Name a colour.", response_key: "Blue."}))
    assert sample["prompt"] == "Name a colour."
    assert sample["response"] == "Blue."
    assert sample["meta"] == "{}"


def test_unused_alias_stays_in_meta(tmp_path):
    sample = only_sample(read_one(tmp_path, {"prompt": "P", "input": "extra", "response": "R"}))
    assert sample["prompt"] == "P"
    assert json.loads(sample["meta"]) == {"input": "extra"}


def test_alpaca_joins_instruction_and_input(tmp_path):
    record = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    sample = only_sample(read_one(tmp_path, record))
    assert sample["prompt"] == "Translate to French.\n\nGood morning"
    assert sample["response"] == "Bonjour"


def test_alpaca_without_input_keeps_instruction(tmp_path):
    sample = only_sample(read_one(tmp_path, {"instruction": "Say hi.", "input": "", "output": "Hi!"}))
    assert sample["prompt"] == "Say hi."


def test_system_field_goes_before_prompt(tmp_path):
    sample = only_sample(read_one(tmp_path, {"system": "Be brief.", "prompt": "Why?", "response": "Because."}))
    assert sample["prompt"] == "Be brief.\n\nWhy?"


def test_messages_single_user_turn_stays_plain(tmp_path):
    turns = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    sample = only_sample(read_one(tmp_path, {"messages": turns}))
    assert sample["prompt"] == "You are terse.\n\nCapital of France?"
    assert sample["response"] == "Paris."
    assert json.loads(sample["messages"]) == turns


def test_messages_multi_turn_renders_roles(tmp_path):
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell a joke."},
        {"role": "assistant", "content": "No."},
    ]
    sample = only_sample(read_one(tmp_path, {"messages": turns}))
    assert sample["prompt"] == "user: Hi\nassistant: Hello!\nuser: Tell a joke."
    assert sample["response"] == "No."


def test_sharegpt_conversations_are_read(tmp_path):
    turns = [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！有什么可以帮你？"}]
    sample = only_sample(read_one(tmp_path, {"conversations": turns, "system": "友好"}))
    assert sample["prompt"] == "友好\n\n你好"
    assert sample["response"] == "你好！有什么可以帮你？"
    assert sample["lang"] == "zh"
    assert json.loads(sample["messages"]) == turns


def test_messages_as_json_string_are_parsed(tmp_path):
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    sample = only_sample(read_one(tmp_path, {"messages": json.dumps(turns)}))
    assert sample["prompt"] == "Q"
    assert sample["response"] == "A"


def test_field_map_renames_columns(tmp_path):
    record = {"title": "Sum 1 and 2", "body": "3", "gold": 3, "kind": "math"}
    field_map = {"prompt": "title", "response": "body", "reference": "gold", "task": "kind"}
    sample = only_sample(read_one(tmp_path, record, field_map=field_map))
    assert sample["prompt"] == "Sum 1 and 2"
    assert sample["response"] == "3"
    assert sample["reference"] == "3"
    assert sample["task"] == "math"
    assert sample["meta"] == "{}"


def test_code_columns_are_mapped(tmp_path):
    record = {"prompt": "Write f.", "response": "def f(): return 1", "tests": "assert f() == 1", "entry_point": "f"}
    sample = only_sample(read_one(tmp_path, record))
    assert sample["tests"] == "assert f() == 1"
    assert sample["entry_point"] == "f"


def test_task_defaults_to_source_task(tmp_path):
    records = [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d", "task": "code"}]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    samples = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path), task="chat")).samples
    assert samples["task"].to_list() == ["chat", "code"]


def test_lang_order_record_then_source_then_detected(tmp_path):
    records = [
        {"prompt": "Wie spät ist es?", "response": "Drei Uhr.", "lang": "de"},
        {"prompt": "What time is it?", "response": "It is three."},
    ]
    path = write_jsonl(tmp_path / "l.jsonl", records)
    detected = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path))).samples
    assert detected["lang"].to_list() == ["de", "en"]
    stated = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path), lang="fr")).samples
    assert stated["lang"].to_list() == ["de", "fr"]


def test_origin_id_from_underscore_id_or_uid(tmp_path):
    records = [{"_id": "x1", "prompt": "a", "response": "b"}, {"uid": 9, "prompt": "c", "response": "d"}]
    path = write_jsonl(tmp_path / "ids.jsonl", records)
    samples = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path))).samples
    assert samples["origin_id"].to_list() == ["x1", "9"]


def test_samples_have_exact_schema(tmp_path):
    samples = read_one(tmp_path, {"prompt": "a", "response": "b"}).samples
    assert samples.schema == pl.Schema(SAMPLE_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Quarantine reasons


def test_missing_response_is_quarantined(tmp_path):
    row = only_quarantine(read_one(tmp_path, {"prompt": "only a question"}))
    assert row["reason"] == "missing_field"
    assert row["detail"].startswith("response")
    assert row["line"] == 1


def test_missing_prompt_is_quarantined(tmp_path):
    row = only_quarantine(read_one(tmp_path, {"response": "an answer to nothing"}))
    assert row["reason"] == "missing_field"
    assert row["detail"].startswith("prompt")


def test_null_prompt_counts_as_missing(tmp_path):
    row = only_quarantine(read_one(tmp_path, {"prompt": None, "response": "x"}))
    assert row["reason"] == "missing_field"


def test_messages_without_assistant_is_missing_response(tmp_path):
    row = only_quarantine(read_one(tmp_path, {"messages": [{"role": "user", "content": "hello?"}]}))
    assert row["reason"] == "missing_field"
    assert row["detail"].startswith("response")


def test_non_string_prompt_is_invalid_field(tmp_path):
    row = only_quarantine(read_one(tmp_path, {"prompt": ["a", "list"], "response": "x"}))
    assert row["reason"] == "invalid_field"
    assert "prompt" in row["detail"]


def test_unknown_role_is_invalid_field(tmp_path):
    turns = [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "upon"}]
    row = only_quarantine(read_one(tmp_path, {"messages": turns}))
    assert row["reason"] == "invalid_field"
    assert "narrator" in row["detail"]


def test_json_array_line_is_not_an_object(tmp_path):
    row = only_quarantine(read_one(tmp_path, ["prompt", "response"]))
    assert row["reason"] == "not_an_object"


def test_invalid_json_line_is_quarantined(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": oops}\n{"prompt": "c", "response": "d"}\n')
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)))
    assert result.samples["prompt"].to_list() == ["a", "c"]
    assert result.quarantine["reason"].to_list() == ["invalid_json"]
    assert result.quarantine["line"].to_list() == [2]


def test_bare_nan_is_invalid_json(tmp_path):
    """Bare NaN is not JSON, so the line is quarantined rather than parsed as a float."""
    path = tmp_path / "nan.jsonl"
    path.write_bytes(b'{"prompt": "a", "response": "b", "score": NaN}\n')
    row = only_quarantine(read_source(SourceConfig(name="unit", kind="jsonl", path=str(path))))
    assert row["reason"] == "invalid_json"
    assert "NaN" in row["detail"]


def test_truncated_last_line_is_invalid_json(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "c", "resp')
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)))
    assert result.samples.height == 1
    assert result.quarantine["reason"].to_list() == ["invalid_json"]
    assert result.quarantine["line"].to_list() == [2]


def test_invalid_utf8_is_quarantined(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "Caf\xe9", "response": "x"}\n{"prompt": "ok", "response": "y"}\n')
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)))
    assert result.quarantine["reason"].to_list() == ["invalid_utf8"]
    assert "0xe9" in result.quarantine["detail"][0]
    assert result.samples["prompt"].to_list() == ["ok"]


def test_oversized_record_is_too_large(tmp_path):
    records = [{"prompt": "p", "response": "x" * 5000}, {"prompt": "q", "response": "y"}]
    path = write_jsonl(tmp_path / "big.jsonl", records)
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)), max_record_bytes=1000)
    assert result.quarantine["reason"].to_list() == ["too_large"]
    assert result.quarantine["line"].to_list() == [1]
    assert result.samples["prompt"].to_list() == ["q"]


def test_mapping_exception_becomes_error_reason(tmp_path, monkeypatch):
    def explode(text: str) -> str:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(shapes, "detect_lang", explode)
    row = only_quarantine(read_one(tmp_path, {"prompt": "a", "response": "b"}))
    assert row["reason"] == "error_ZeroDivisionError"
    assert row["detail"] == "boom"


def test_blank_lines_are_skipped_not_counted(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b'\n{"prompt": "a", "response": "b"}\n   \n\n{"prompt": "c", "response": "d"}\n\n')
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)))
    assert result.samples.height == 2
    assert result.quarantine.height == 0
    assert result.files["records"].to_list() == [2]


def test_counts_add_up_per_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"prompt": "a", "response": "b"}\n[1]\n{"prompt": "c"}\n{bad\n')
    files = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path))).files.row(0, named=True)
    assert files["records"] == 4
    assert files["loaded"] == 1
    assert files["quarantined"] == 3
    assert files["bytes"] == path.stat().st_size


# ---------------------------------------------------------------------------------------------
# Bytes and line ends


def test_bom_is_stripped_from_first_key(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "b1", "prompt": "a", "response": "b"}\n')
    sample = only_sample(read_source(SourceConfig(name="unit", kind="jsonl", path=str(path))))
    assert sample["origin_id"] == "b1"
    assert "\ufeff" not in sample["meta"]


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r", b"\n"])
def test_line_ends_leave_no_carriage_return(tmp_path, line_end):
    path = tmp_path / "ends.jsonl"
    path.write_bytes(line_end.join([b'{"prompt": "a", "response": "A3."}', b'{"prompt": "b", "response": "A5."}', b""]))
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)))
    assert result.samples["response"].to_list() == ["A3.", "A5."]
    assert result.files["records"].to_list() == [2]


def test_crlf_split_across_chunks(monkeypatch):
    monkeypatch.setattr(ingest, "_CHUNK_BYTES", 4)
    data = b"abc\r\ndef\r\n\r\nxyz"
    lines = list(iter_lines(io.BytesIO(data), max_record_bytes=100))
    assert lines == [(1, b"abc", 3), (2, b"def", 3), (3, b"", 0), (4, b"xyz", 3)]


def test_long_line_streams_without_holding_it(monkeypatch):
    monkeypatch.setattr(ingest, "_CHUNK_BYTES", 8)
    data = b"short\n" + b"x" * 100 + b"\r\nafter"
    lines = list(iter_lines(io.BytesIO(data), max_record_bytes=20))
    assert lines == [(1, b"short", 5), (2, None, 100), (3, b"after", 5)]


def test_gzip_jsonl_is_read(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'{"prompt": "a", "response": "b"}\n')
    assert read_source(SourceConfig(name="unit", kind="jsonl", path=str(path))).samples.height == 1


# ---------------------------------------------------------------------------------------------
# Schema, ids and files


def test_late_keys_are_kept(tmp_path):
    records = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(300)]
    records[250]["late_key"] = {"nested": [1, 2]}
    records[299]["task"] = "math"
    samples = read_records(tmp_path, records).samples
    assert samples["task"][299] == "math"
    assert samples["task"].null_count() == 299
    assert json.loads(samples["meta"][250]) == {"late_key": {"nested": [1, 2]}}
    decoded = unnest_meta(samples)
    assert decoded["meta"].struct.field("late_key").struct.field("nested")[250].to_list() == [1, 2]


def test_unnest_meta_widens_int_to_float(tmp_path):
    records = [{"prompt": "a", "response": "b", "rating": 7}, {"prompt": "c", "response": "d", "rating": 3.5}]
    samples = read_records(tmp_path, records).samples
    ratings = unnest_meta(samples)["meta"].struct.field("rating")
    assert ratings.dtype == pl.Float64
    assert ratings.to_list() == [7.0, 3.5]


def test_identical_rows_get_numbered_ids(tmp_path):
    records = [{"prompt": "same", "response": "row"}] * 3 + [{"prompt": "other", "response": "row"}]
    samples = read_records(tmp_path, records).samples
    base = make_sample_id("unit", "same", "row")
    assert samples["sample_id"].to_list()[:3] == [base, f"{base}#2", f"{base}#3"]
    assert samples["sample_id"].n_unique() == 4


def test_sample_ids_stable_across_reads(tmp_path):
    records = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(20)]
    path = write_jsonl(tmp_path / "s.jsonl", records)
    source = SourceConfig(name="unit", kind="jsonl", path=str(path))
    assert read_source(source).samples["sample_id"].to_list() == read_source(source).samples["sample_id"].to_list()


def test_sample_ids_independent_of_order(tmp_path):
    records = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(20)]
    forward = write_jsonl(tmp_path / "f.jsonl", records)
    backward = write_jsonl(tmp_path / "b.jsonl", records[::-1])
    ids_forward = read_source(SourceConfig(name="unit", kind="jsonl", path=str(forward))).samples["sample_id"]
    ids_backward = read_source(SourceConfig(name="unit", kind="jsonl", path=str(backward))).samples["sample_id"]
    assert set(ids_forward) == set(ids_backward)
    assert ids_forward.to_list() != ids_backward.to_list()


def test_directory_files_read_in_sorted_order(tmp_path):
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "b.jsonl", [{"prompt": "from b", "response": "x"}])
    write_jsonl(folder / "a.jsonl", [{"prompt": "from a", "response": "x"}])
    write_jsonl(folder / "sub" / "c.jsonl", [{"prompt": "from c", "response": "x"}])
    (folder / "notes.txt").write_text("not data")
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(folder)))
    assert result.samples["prompt"].to_list() == ["from a", "from b", "from c"]
    assert [Path(file).name for file in result.files["file"]] == ["a.jsonl", "b.jsonl", "c.jsonl"]


def test_glob_reads_matching_files(tmp_path):
    write_jsonl(tmp_path / "part-1.jsonl", [{"prompt": "one", "response": "x"}])
    write_jsonl(tmp_path / "part-2.jsonl", [{"prompt": "two", "response": "x"}])
    write_jsonl(tmp_path / "other.jsonl", [{"prompt": "skip", "response": "x"}])
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(tmp_path / "part-*.jsonl")))
    assert result.samples["prompt"].to_list() == ["one", "two"]


def test_max_rows_caps_loaded_samples(tmp_path):
    records = [{"prompt": "no response"}] + [{"prompt": f"q{i}", "response": "a"} for i in range(10)]
    path = write_jsonl(tmp_path / "cap.jsonl", records)
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path), max_rows=3))
    assert result.samples["prompt"].to_list() == ["q0", "q1", "q2"]
    assert result.quarantine.height == 1


def test_missing_path_raises_source_read_error(tmp_path):
    with pytest.raises(SourceReadError, match="no jsonl files found"):
        read_source(SourceConfig(name="unit", kind="jsonl", path=str(tmp_path / "absent.jsonl")))


def test_unopenable_file_raises_source_read_error(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "locked.jsonl", [{"prompt": "a", "response": "b"}])

    def deny(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(SourceReadError, match="locked.jsonl"):
        read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)))


def test_truncated_gzip_becomes_read_error(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    payload = gzip.compress(b"".join(b'{"prompt": "q%d", "response": "a"}\n' % i for i in range(2000)))
    path.write_bytes(payload[: len(payload) // 2])
    result = read_source(SourceConfig(name="unit", kind="jsonl", path=str(path)))
    assert result.quarantine["reason"].to_list() == ["read_error"]
    assert result.samples.height > 0
    assert result.files["loaded"][0] == result.samples.height


# ---------------------------------------------------------------------------------------------
# Parquet


def test_parquet_quarantines_rows_missing_fields(tmp_path):
    path = tmp_path / "rows.parquet"
    pl.DataFrame(
        {"question": ["q1", "q2", None], "answer": ["a1", None, "a3"], "score": [1.0, 2.0, 3.0]}
    ).write_parquet(path)
    result = read_source(SourceConfig(name="unit", kind="parquet", path=str(path)))
    assert result.samples["prompt"].to_list() == ["q1"]
    assert json.loads(result.samples["meta"][0]) == {"score": 1.0}
    assert result.quarantine["reason"].to_list() == ["missing_field", "missing_field"]
    assert result.quarantine["line"].to_list() == [2, 3]
    assert result.files.row(0, named=True)["records"] == 3


def test_parquet_messages_shape(tmp_path):
    path = tmp_path / "chat.parquet"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    pl.DataFrame({"messages": [turns]}).write_parquet(path)
    sample = only_sample(read_source(SourceConfig(name="unit", kind="parquet", path=str(path))))
    assert sample["prompt"] == "Hi"
    assert sample["response"] == "Hello"


def test_hf_parquet_path_goes_to_polars(tmp_path, monkeypatch):
    local = tmp_path / "local.parquet"
    pl.DataFrame({"prompt": ["p"], "response": ["r"]}).write_parquet(local)
    seen_paths = []
    real_scan = pl.scan_parquet

    def fake_scan(path, **kwargs):
        seen_paths.append(path)
        return real_scan(local, **kwargs)

    monkeypatch.setattr(pl, "scan_parquet", fake_scan)
    hf_path = "hf://datasets/owner/name/data/train-*.parquet"
    result = read_source(SourceConfig(name="remote", kind="hf_parquet", path=hf_path))
    assert seen_paths == [hf_path]
    assert result.samples["prompt"].to_list() == ["p"]
    assert result.files["bytes"].to_list() == [None]


def test_record_task_label_is_lowercased(tmp_path):
    result = read_one(tmp_path, {"prompt": "Add 2 and 3.", "response": "#### 5", "task": "Math"})
    assert only_sample(result)["task"] == "math"


def test_record_task_label_not_a_name_quarantined(tmp_path):
    result = read_one(tmp_path, {"prompt": "Add 2 and 3.", "response": "#### 5", "task": "Math!! 数学"})
    assert result.samples.height == 0
    assert only_quarantine(result)["reason"] == "invalid_field"
    assert "task" in only_quarantine(result)["detail"]
