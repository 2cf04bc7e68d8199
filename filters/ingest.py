"""Read a configured source into the sample schema, quarantining bad records instead of failing.

``read_source`` returns three frames: the samples (exactly ``SAMPLE_SCHEMA``), the quarantine (one
row per record that could not become a sample, with a stable ``reason``) and per-file counts, so
``loaded + quarantined == records`` holds for every file.

Records become samples as described in ``filters.shapes``.

JSONL choices: bare ``NaN``/``Infinity`` are not JSON, so such a line is quarantined as
``invalid_json`` rather than parsed. Identical rows are kept as separate samples, with ``#2``,
``#3``... appended to the repeated ``sample_id`` in file order, so stage 1's exact dedup records
them in the rejection ledger instead of the reader dropping them.
"""

import gzip
import json
import logging
import math
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

import polars as pl

from filters.schema import SAMPLE_SCHEMA, make_sample_id
from filters.shapes import (  # re-exported: callers import them from here
    INVALID_FIELD,
    MISSING_FIELD,
    RecordError,
    map_record,
    render_chat_prompt,
)

if TYPE_CHECKING:  # filters.sources imports filters.packaged, which imports this module
    from filters.sources import SourceConfig

logger = logging.getLogger(__name__)

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String,
    "file": pl.String,
    "line": pl.Int64,  # 1-based: the physical line of a JSONL file, the row number of a Parquet file
    "reason": pl.String,
    "detail": pl.String,
}

FILES_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String,
    "file": pl.String,
    "records": pl.Int64,  # non-blank lines or rows read; loaded + quarantined == records
    "loaded": pl.Int64,
    "quarantined": pl.Int64,
    "bytes": pl.Int64,  # file size, null when unknown (remote files)
}

# Quarantine reasons, besides filters.shapes' missing_field and invalid_field. A record whose
# mapping raised any other exception gets "error_<ExceptionName>".
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
TOO_LARGE = "too_large"
NOT_AN_OBJECT = "not_an_object"
READ_ERROR = "read_error"

_BOM = b"\xef\xbb\xbf"
_NEWLINE = re.compile(rb"\r\n|\r|\n")
_CHUNK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 50_000
_FILE_COLUMN = "__ingest_file__"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class SourceReadError(OSError):
    """A source's files cannot be found or opened at all."""


@dataclass
class IngestResult:
    """Samples read from one source, the records quarantined on the way, and per-file counts."""

    samples: pl.DataFrame  # SAMPLE_SCHEMA columns, in that order
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    files: pl.DataFrame  # FILES_SCHEMA
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "loaded": self.samples.height,
            "quarantined": self.quarantine.height,
            "quarantined_by_reason": dict(sorted(Counter(self.quarantine["reason"].to_list()).items())),
            "files": self.files.height,
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------------------------
# Collecting rows


class _Collector:
    """Accumulates samples, quarantine rows and per-file counts for one source."""

    def __init__(self, source: "SourceConfig"):
        self.source = source
        self.rows: list[dict[str, Any]] = []
        self.quarantine: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []

    @property
    def full(self) -> bool:
        return self.source.max_rows is not None and len(self.rows) >= self.source.max_rows

    def reject(self, file: str, line: int, reason: str, detail: str) -> None:
        self.quarantine.append(
            {"source": self.source.name, "file": file, "line": line, "reason": reason, "detail": detail}
        )

    def add_record(self, record: object, file: str, line: int) -> bool:
        """Map one parsed record; return True when it was loaded, False when quarantined."""
        if not isinstance(record, dict):
            kind = type(record).__name__
            self.reject(file, line, NOT_AN_OBJECT, f"the record is a JSON {kind}, expected an object")
            return False
        try:
            self.rows.append(map_record(record, self.source))
        except RecordError as error:
            self.reject(file, line, error.reason, error.detail)
            return False
        except Exception as error:  # an unexpected error quarantines this record and the file goes on
            self.reject(file, line, f"error_{type(error).__name__}", str(error)[:500])
            return False
        return True

    def add_file(self, file: str, records: int, loaded: int, size: int | None) -> None:
        self.files.append(
            {
                "source": self.source.name,
                "file": file,
                "records": records,
                "loaded": loaded,
                "quarantined": records - loaded,
                "bytes": size,
            }
        )


def assign_sample_ids(source_name: str, rows: list[dict[str, Any]]) -> list[str]:
    """Return one sample id per row: ``make_sample_id``, with ``#2``, ``#3``... for repeats in row order."""
    seen: Counter[str] = Counter()
    ids = []
    for row in rows:
        base = make_sample_id(source_name, row["prompt"], row["response"])
        seen[base] += 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


def _meta_json(meta: dict[str, Any]) -> str:
    try:
        return json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except ValueError:  # JSON has no NaN or infinity, so they are stored as null
        return json.dumps(_replace_non_finite(meta), ensure_ascii=False, sort_keys=True, default=str)


def _replace_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _replace_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_non_finite(item) for item in value]
    return value


def samples_frame(source_name: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Build the ``SAMPLE_SCHEMA`` frame for mapped rows, assigning sample ids and serializing meta."""
    columns: dict[str, list[Any]] = {
        "sample_id": assign_sample_ids(source_name, rows),
        "source": [source_name] * len(rows),
    }
    for column in SAMPLE_SCHEMA:
        if column in columns:
            continue
        if column == "meta":
            columns[column] = [_meta_json(row.get("meta") or {}) for row in rows]
        else:
            columns[column] = [row.get(column) for row in rows]
    return pl.DataFrame(columns, schema=SAMPLE_SCHEMA)


# ---------------------------------------------------------------------------------------------
# JSONL


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def iter_lines(handle: BinaryIO, max_record_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield (line number, content, size in bytes) for every line of a binary stream.

    Lines end at LF, CRLF or CR, and the terminator is not part of the content. A UTF-8 byte order
    mark at the start of the stream is dropped. A line longer than ``max_record_bytes`` is yielded
    with content None and is never held in memory whole.
    """
    head = handle.read(len(_BOM))
    pending = b"" if head == _BOM else head
    # Offset in ``pending`` from which a line end may still be found. The bytes read to look for
    # a BOM may contain line ends anywhere, so their search starts at 0.
    search_from = 0
    # read1 returns what one underlying read yields, so the lines before a corrupt gzip block
    # are yielded before the error is raised.
    read_chunk = getattr(handle, "read1", handle.read)
    discarded = 0  # bytes of the current over-limit line dropped so far
    line_number = 0
    at_end = False
    while not at_end:
        chunk = read_chunk(_CHUNK_BYTES)
        at_end = not chunk
        data = pending + chunk
        start = 0
        for match in _NEWLINE.finditer(data, search_from):
            if not at_end and match.end() == len(data) and match.group() == b"\r":
                break  # the LF of a CRLF may be in the next chunk
            line_number += 1
            content = data[start : match.start()]
            size = discarded + len(content)
            yield line_number, (content if size <= max_record_bytes else None), size
            discarded = 0
            start = match.end()
        pending = data[start:]
        if len(pending) > max_record_bytes:
            keep = 1 if pending.endswith(b"\r") else 0
            discarded += len(pending) - keep
            pending = pending[len(pending) - keep :]
        # ``pending`` now contains no line end except perhaps a final CR, so the next search starts there.
        search_from = max(len(pending) - 1, 0)
    if pending or discarded:
        size = discarded + len(pending)
        yield line_number + 1, (pending if size <= max_record_bytes else None), size


def _open_binary(path: Path) -> BinaryIO:
    try:
        return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")
    except OSError as error:
        raise SourceReadError(
            f"cannot open {path}: {error.strerror or error}. Check that the file exists and is readable."
        ) from error


def _read_jsonl_file(path: Path, collector: _Collector, max_record_bytes: int) -> None:
    file = str(path)
    records = loaded = line_number = 0
    with _open_binary(path) as handle:
        try:
            for line_number, content, size in iter_lines(handle, max_record_bytes):
                if content is None:
                    records += 1
                    detail = f"{size} bytes, max_record_bytes is {max_record_bytes}"
                    collector.reject(file, line_number, TOO_LARGE, detail)
                    continue
                if not content.strip():
                    continue
                records += 1
                loaded += _load_json_line(content, file, line_number, collector)
                if collector.full:
                    break
        except (OSError, EOFError, zlib.error) as error:  # e.g. a truncated gzip stream
            records += 1
            collector.reject(file, line_number + 1, READ_ERROR, f"reading stopped: {error}")
    collector.add_file(file, records, loaded, path.stat().st_size)


def _load_json_line(content: bytes, file: str, line_number: int, collector: _Collector) -> int:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = content[error.start : error.start + 1].hex()
        detail = f"byte 0x{bad} at offset {error.start} is not valid UTF-8"
        collector.reject(file, line_number, INVALID_UTF8, detail)
        return 0
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the parser's stack
        collector.reject(file, line_number, INVALID_JSON, f"{type(error).__name__}: {error}"[:500])
        return 0
    if _SURROGATE_ESCAPE.search(content) and _has_lone_surrogate(record):
        # json.loads accepts a "\ud800" escape, but the resulting string cannot be encoded as UTF-8.
        detail = "a \\u escape encodes a lone UTF-16 surrogate, which is not valid Unicode text"
        collector.reject(file, line_number, INVALID_UTF8, detail)
        return 0
    return int(collector.add_record(record, file, line_number))


def _has_lone_surrogate(record: object) -> bool:
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Parquet


def scan_parquet(path: str) -> pl.LazyFrame:
    """Scan a local or ``hf://`` Parquet path with polars, adding the file path of every row.

    NOTE: ``hf://`` paths go to polars unchanged and were only tested with local files in their
    place, because the development machine has no network access.
    """
    return pl.scan_parquet(path, include_file_paths=_FILE_COLUMN)


def _read_parquet_path(path: str, collector: _Collector, size: int | None) -> None:
    try:
        frame = scan_parquet(path)
        per_file: dict[str, list[int]] = {}
        offset = 0
        while not collector.full:
            batch = frame.slice(offset, _PARQUET_BATCH_ROWS).collect()
            if batch.height == 0:
                break
            offset += batch.height
            for row in batch.iter_rows(named=True):
                file = row.pop(_FILE_COLUMN)
                counts = per_file.setdefault(file, [0, 0])
                counts[0] += 1
                counts[1] += collector.add_record(row, file, counts[0])
                if collector.full:
                    break
    except (OSError, pl.exceptions.PolarsError) as error:
        raise SourceReadError(
            f"cannot read Parquet {path}: {error}. Check the path; for a glob over files with different "
            "columns, list the files as separate sources."
        ) from error
    for file, (records, loaded) in per_file.items():
        collector.add_file(file, records, loaded, size if len(per_file) == 1 else None)


# ---------------------------------------------------------------------------------------------
# Entry point


def read_source(source: "SourceConfig", *, max_record_bytes: int = 8 * 2**20) -> IngestResult:
    """Read every record of ``source`` into samples, quarantine rows and per-file counts.

    Files of a directory or glob are read in sorted path order. ``max_rows`` caps the loaded
    samples (quarantined records do not count) and stops reading once reached. Packaged sources
    return their train split only. ``max_record_bytes`` applies to JSONL lines. Raises
    ``SourceReadError`` when the path matches no file or a file cannot be opened.
    """
    started = time.perf_counter()
    logger.info("reading source %s (kind %s)", source.name, source.kind)
    collector = _Collector(source)

    if source.kind == "packaged":
        from filters.packaged import read_packaged  # imported here: filters.packaged imports this module

        rows, files = read_packaged(source)
        collector.rows = rows
        for file in files:
            collector.add_file(file["file"], file["records"], file["records"], file["bytes"])
    elif source.kind == "hf_parquet":
        _read_parquet_path(source.path, collector, size=None)
    else:
        paths = source.local_files()
        if not paths:
            raise SourceReadError(
                f"source {source.name!r}: no {source.kind} files found at {source.path}. "
                "Check the path in the sources config; relative paths start at the config file's directory."
            )
        for path in paths:
            if collector.full:
                break
            if source.kind == "jsonl":
                _read_jsonl_file(path, collector, max_record_bytes)
            else:
                _read_parquet_path(str(path), collector, size=path.stat().st_size)

    result = IngestResult(
        samples=samples_frame(source.name, collector.rows),
        quarantine=pl.DataFrame(collector.quarantine, schema=QUARANTINE_SCHEMA),
        files=pl.DataFrame(collector.files, schema=FILES_SCHEMA),
        seconds=time.perf_counter() - started,
    )
    summary = result.summary()
    logger.info(
        "read source %s: %d loaded, %d quarantined %s from %d files in %.2f s",
        source.name,
        summary["loaded"],
        summary["quarantined"],
        summary["quarantined_by_reason"],
        summary["files"],
        result.seconds,
    )
    return result


def unnest_meta(samples: pl.DataFrame) -> pl.DataFrame:
    """Decode the ``meta`` JSON of ``samples`` into a struct column ``meta``.

    The struct type is inferred from every row, not a prefix, so a key that first appears late is
    kept, and a field that is an integer in one row and a float in another becomes Float64.
    """
    if samples.height == 0 or samples["meta"].drop_nulls().eq("{}").all():
        return samples
    # The Series method is used because polars 2 removed schema inference from the expression form.
    return samples.with_columns(samples["meta"].str.json_decode(infer_schema_length=None))
