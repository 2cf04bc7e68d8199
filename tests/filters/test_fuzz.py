"""Property-based tests (hypothesis) over the JSONL reader and the text normalization functions."""

import io
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters import ingest
from filters.ingest import iter_lines, read_source
from filters.normalize import ZERO_WIDTH_CHARS, clean_text, dedup_key
from filters.sources import SourceConfig

FUZZ_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text without lone surrogates, which cannot be written as UTF-8 at all.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
NON_EMPTY_TEXT = TEXT.filter(lambda value: value != "")
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def jsonl_file(draw):
    """Return (file bytes, the prompts of the valid records in file order, the number of records)."""
    bom = draw(st.booleans())
    end = draw(LINE_ENDS)
    lines, prompts = [], []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["good", "good", "garbage", "array", "missing", "bad_utf8"]))
        if kind == "good":
            prompt, response = draw(NON_EMPTY_TEXT), draw(NON_EMPTY_TEXT)
            extra = draw(st.dictionaries(st.sampled_from(["rating", "tags", "nested"]), st.integers() | TEXT, max_size=2))
            lines.append(json.dumps({"prompt": prompt, "response": response, **extra}, ensure_ascii=draw(st.booleans())).encode())
            prompts.append(prompt)
        elif kind == "garbage":
            garbage = draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b"").replace(b"\r", b"")
            lines.append(b"{" + garbage)  # an opening brace without its end is never valid JSON
        elif kind == "array":
            lines.append(json.dumps([draw(TEXT)]).encode())
        elif kind == "missing":
            lines.append(json.dumps({"prompt": draw(TEXT)}).encode())
        else:
            lines.append(b'{"prompt": "\xff\xfe", "response": "x"}')
    truncated = draw(st.booleans()) and lines
    body = end.join(lines) + (b"" if truncated else end if lines else b"")
    return (b"\xef\xbb\xbf" if bom else b"") + body, prompts, len(lines)


@FUZZ_SETTINGS
@given(jsonl_file())
def test_reader_accounts_for_every_line(tmp_path, case):
    content, prompts, records = case
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(content)
    result = read_source(SourceConfig(name="fuzz", kind="jsonl", path=str(path)), max_record_bytes=4096)
    assert result.samples.height + result.quarantine.height == records
    assert result.samples["prompt"].to_list() == prompts
    assert result.files["records"].to_list() == [records]
    if records:
        assert result.quarantine["line"].is_between(1, records).all()
    assert result.samples["sample_id"].n_unique() == result.samples.height


@FUZZ_SETTINGS
@given(st.binary(max_size=300), st.integers(1, 8), st.integers(1, 64))
def test_iter_lines_matches_reference_split(monkeypatch, data, chunk_bytes, max_record_bytes):
    monkeypatch.setattr(ingest, "_CHUNK_BYTES", chunk_bytes)
    lines = list(iter_lines(io.BytesIO(data), max_record_bytes))
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    expected = re.split(rb"\r\n|\r|\n", body)
    if expected and expected[-1] == b"":
        expected.pop()
    assert [number for number, _, _ in lines] == list(range(1, len(expected) + 1))
    assert [size for _, _, size in lines] == [len(line) for line in expected]
    for (_, content, size), line in zip(lines, expected):
        assert content == (line if size <= max_record_bytes else None)


@FUZZ_SETTINGS
@given(TEXT)
def test_clean_text_removes_only_zero_width(text):
    cleaned = clean_text(text)
    assert not any(char in cleaned for char in ZERO_WIDTH_CHARS)
    assert cleaned == "".join(char for char in text if char not in ZERO_WIDTH_CHARS)
    assert clean_text(cleaned) == cleaned


@FUZZ_SETTINGS
@given(st.one_of(st.none(), TEXT, st.text(max_size=40)))
def test_dedup_key_total_and_normalized(text):
    key = dedup_key(text)
    assert isinstance(key, str)
    assert "\r" not in key
    assert not any(char in key for char in ZERO_WIDTH_CHARS)
    assert key == key.strip("\n")


@FUZZ_SETTINGS
@given(st.lists(st.text(st.characters(whitelist_categories=("L", "N", "P")), min_size=1, max_size=12), min_size=1, max_size=8))
def test_dedup_key_ignores_prose_whitespace_and_invisibles(words):
    plain = " ".join(words)
    noisy = "\u200b" + "  \r\n".join(words) + " \ufeff\n"
    assert dedup_key(noisy) == dedup_key(plain)


@FUZZ_SETTINGS
@given(TEXT)
def test_dedup_key_idempotent(text):
    key = dedup_key(text)
    assert dedup_key(key) == key


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_dedup_key_same_for_line_ends_in_code(line_end):
    code = "```python\ndef f(x):\n    return x\n```"
    assert dedup_key(code.replace("\n", line_end)) == dedup_key(code)
