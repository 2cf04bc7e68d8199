"""Hostile files for the JSONL and Parquet readers: every record is loaded or quarantined with its position."""

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from filters.ingest import SourceReadError, read_source, unnest_meta
from filters.sources import SourceConfig

GOOD = b'{"prompt": "What is 1 + 1?", "response": "1 + 1 = 2."}'


def read_dir(path: Path, **config):
    return read_source(SourceConfig(name="hostile", kind="jsonl", path=str(path), **config), max_record_bytes=4096)


def quarantine_rows(result) -> list[tuple[str, int, str]]:
    return [(Path(row["file"]).name, row["line"], row["reason"]) for row in result.quarantine.iter_rows(named=True)]


def assert_balanced(result) -> None:
    for row in result.files.iter_rows(named=True):
        assert row["records"] == row["loaded"] + row["quarantined"], row
    assert result.files["loaded"].sum() == result.samples.height
    assert result.files["quarantined"].sum() == result.quarantine.height


# Name -> (file bytes, samples expected to load, expected (line, reason) quarantine rows or None when
# the exact rows do not matter).
HOSTILE_FILES = {
    "bom_and_crlf": (b"\xef\xbb\xbf" + GOOD + b"\r\n" + GOOD.replace(b"1 + 1", b"2 + 2") + b"\r\n", 2, []),
    "invalid_utf8_middle": (GOOD + b'\n{"prompt": "caf\xe9", "response": "x"}\n' + GOOD.replace(b"1", b"3") + b"\n", 2,
                            [(2, "invalid_utf8")]),
    "truncated_last_line": (GOOD + b'\n{"prompt": "cut', 1, [(2, "invalid_json")]),
    "oversize_record": (GOOD + b'\n{"prompt": "' + b"x" * 10_000 + b'", "response": "y"}\n', 1, [(2, "too_large")]),
    "oversize_without_newline": (b'{"prompt": "' + b"z" * 50_000, 0, [(1, "too_large")]),
    "nul_bytes": (b'{"prompt": "a\x00b", "response": "c"}\n' + GOOD + b"\n", 1, [(1, "invalid_json")]),
    "lone_cr_line_ends": (GOOD + b"\r" + GOOD.replace(b"1", b"4") + b"\r", 2, []),
    "utf16_file": ('{"prompt": "p", "response": "r"}\n'.encode("utf-16"), 0, [(1, "invalid_utf8"), (2, "invalid_json")]),
    "binary_garbage": (bytes(range(256)) * 4, 0, None),
    "only_bom": (b"\xef\xbb\xbf", 0, []),
    "empty_file": (b"", 0, []),
    "short_first_line": (b"7\n" + GOOD + b"\n", 1, [(1, "not_an_object")]),
    "leading_blank_line": (b"\n" + GOOD + b"\n", 1, []),
    "only_blank_lines": (b"\n\r\n   \n\t\n", 0, []),
    "json_scalars": (b'42\n"text"\nnull\ntrue\n' + GOOD + b"\n", 1,
                     [(1, "not_an_object"), (2, "not_an_object"), (3, "not_an_object"), (4, "not_an_object")]),
    "nan_and_infinity": (b'{"prompt": "p", "response": "r", "score": NaN}\n{"prompt": "q", "response": Infinity}\n', 0,
                         [(1, "invalid_json"), (2, "invalid_json")]),
    "mixed_types_one_field": (b'{"prompt": 5, "response": "five"}\n{"prompt": ["a"], "response": "b"}\n'
                              b'{"prompt": {"x": 1}, "response": "c"}\n', 1, [(2, "invalid_field"), (3, "invalid_field")]),
    "deeply_nested_meta": (b'{"prompt": "p", "response": "r", "meta": ' + b'{"a": ' * 50 + b"1" + b"}" * 50 + b"}\n", 1, []),
    "too_deeply_nested": (b'{"prompt": "p", "response": "r", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}\n", 0, None),
    "duplicate_keys": (b'{"prompt": "first", "prompt": "second", "response": "r"}\n', 1, []),
    "surrogate_escape": (b'{"prompt": "\\ud800", "response": "r"}\n' + GOOD + b"\n", 1, [(1, "invalid_utf8")]),
    "surrogate_pair_escape": (b'{"prompt": "\\ud83d\\ude00", "response": "r"}\n', 1, []),
    "escaped_backslash_u": (b'{"prompt": "\\\\ud800 is text", "response": "r"}\n', 1, []),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_file_accounted(tmp_path, name):
    content, loaded, expected = HOSTILE_FILES[name]
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(content)
    result = read_dir(path)
    assert result.samples.height == loaded
    assert_balanced(result)
    if expected is not None:
        assert [(line, reason) for _, line, reason in quarantine_rows(result)] == expected
    for row in result.quarantine.iter_rows(named=True):
        assert row["file"] == str(path)
        assert row["line"] >= 1
        assert row["reason"]


def test_binary_garbage_loads_nothing(tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(bytes(range(256)) * 4)
    result = read_dir(path)
    assert result.samples.height == 0
    assert result.quarantine.height == result.files["records"][0]
    assert result.quarantine.height >= 1


def test_too_deep_nesting_is_quarantined(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b'{"prompt": "p", "response": "r", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}\n" + GOOD + b"\n")
    result = read_dir(path)
    assert result.samples.height == 1
    assert result.quarantine.height == 1
    assert result.quarantine["line"][0] == 1


def test_nested_fields_kept_in_meta(tmp_path):
    path = tmp_path / "nested.jsonl"
    record = {"prompt": "p", "response": "r", "info": {"source": {"url": "u", "tags": ["a", "b"]}}, "scores": [1, 2.5]}
    path.write_text(json.dumps(record) + "\n")
    result = read_dir(path)
    meta = json.loads(result.samples["meta"][0])
    assert meta["info"] == {"source": {"url": "u", "tags": ["a", "b"]}}
    assert meta["scores"] == [1, 2.5]


def test_late_nested_key_survives_unnest(tmp_path):
    path = tmp_path / "late.jsonl"
    rows = [{"prompt": f"p{i}", "response": "r"} for i in range(200)]
    rows.append({"prompt": "late", "response": "r", "extra": {"deep": {"value": 7}}})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    meta = unnest_meta(read_dir(path).samples)["meta"]
    assert meta.struct.field("extra").struct.field("deep").struct.field("value").to_list()[-1] == 7


def test_empty_files_counted_with_zero_records(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl").write_bytes(GOOD + b"\n")
    result = read_dir(tmp_path)
    records = dict(zip([Path(f).name for f in result.files["file"]], result.files["records"]))
    assert records == {"a.jsonl": 0, "b.jsonl": 1}
    assert result.samples.height == 1


def test_duplicate_ids_across_files_both_loaded(tmp_path):
    """Two files reuse origin id 7 for different samples: both load, with distinct sample ids."""
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": 7, "prompt": "p", "response": "from a"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": 7, "prompt": "p", "response": "from b"}) + "\n")
    result = read_dir(tmp_path)
    assert result.samples["origin_id"].to_list() == ["7", "7"]
    assert result.samples["sample_id"].n_unique() == 2


def test_identical_records_across_files_numbered(tmp_path):
    """The same record in two files loads twice, so stage 1's exact dedup records the copy."""
    (tmp_path / "a.jsonl").write_bytes(GOOD + b"\n")
    (tmp_path / "b.jsonl").write_bytes(GOOD + b"\n")
    ids = read_dir(tmp_path).samples["sample_id"].to_list()
    assert len(ids) == 2
    assert ids[1] == f"{ids[0]}#2"


def test_corrupt_gzip_keeps_lines_before_damage(tmp_path):
    data = gzip.compress(b"".join(GOOD.replace(b"1 + 1", f"{i} + 1".encode()) + b"\n" for i in range(2000)))
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    result = read_dir(path)
    assert result.samples.height >= 1
    assert result.quarantine["reason"].to_list() == ["read_error"]
    assert_balanced(result)


def test_corrupt_parquet_raises_naming_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(SourceReadError, match="broken.parquet") as raised:
        read_source(SourceConfig(name="broken", kind="parquet", path=str(path)))
    assert "Check the path" in str(raised.value)


def test_directory_named_like_jsonl_is_skipped(tmp_path):
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "good.jsonl").write_bytes(GOOD + b"\n")
    result = read_dir(tmp_path)
    assert result.samples.height == 1
    assert result.files.height == 1


def test_unreadable_file_raises_naming_file_and_fix(tmp_path, monkeypatch):
    path = tmp_path / "locked.jsonl"
    path.write_bytes(GOOD + b"\n")
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(SourceReadError) as raised:
        read_dir(path)
    assert str(path) in str(raised.value)
    assert "Check that the file exists and is readable" in str(raised.value)


def test_parquet_mixed_types_across_files_raise_naming_fix(tmp_path):
    pl.DataFrame({"prompt": ["a"], "response": ["b"]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"prompt": [1], "response": [2]}).write_parquet(tmp_path / "b.parquet")
    source = SourceConfig(name="mixed", kind="parquet", path=str(tmp_path / "*.parquet"))
    try:
        result = read_source(source)
    except SourceReadError as error:
        assert "separate sources" in str(error)
    else:
        assert result.samples.height + result.quarantine.height == 2
        assert_balanced(result)
