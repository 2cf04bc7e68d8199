"""Source configuration: which files or packaged datasets feed the pipeline, and how to read them.

A YAML file lists the sources under a top-level ``sources:`` key. Every entry becomes one frozen
``SourceConfig``, validated when it is built, so a typo fails before any file is read::

    sources:
      - name: my_chat_dump           # unique, snake_case; becomes the ``source`` column
        kind: jsonl                  # jsonl | parquet | hf_parquet | packaged
        path: data/chat/*.jsonl      # file, directory or glob, relative to the YAML file
        shape: auto                  # auto | prompt_response | alpaca | messages
        field_map: {prompt: title}   # our column -> the column name in the files
        task: chat                   # default task when a record has none
        max_rows: 10000

Packaged sources read a dataset shipped in an installed Python package (see ``filters.packaged``)
and take ``dataset`` plus the options ``languages``, ``eval_fraction``, ``seed`` and
``max_llm_solutions``.
"""

import glob
import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from filters import packaged

logger = logging.getLogger(__name__)

KINDS = ("jsonl", "parquet", "hf_parquet", "packaged")
SHAPES = ("auto", "prompt_response", "alpaca", "messages")
LOCAL_KINDS = ("jsonl", "parquet")

# Columns a ``field_map`` may point at another column name. ``system``, ``instruction`` and
# ``input`` are inputs of the prompt rather than sample columns.
MAPPABLE_FIELDS = (
    "prompt",
    "response",
    "messages",
    "system",
    "instruction",
    "input",
    "origin_id",
    "task",
    "lang",
    "reference",
    "tests",
    "entry_point",
)

# File name endings read from a directory, per kind. Globs and single files are read whatever
# their ending is.
FILE_SUFFIXES = {
    "jsonl": (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json"),
    "parquet": (".parquet",),
}

_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")
_LANG_CODE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")


class SourceConfigError(ValueError):
    """A source entry in the configuration is invalid."""


@dataclass(frozen=True)
class SourceConfig:
    """One configured source of samples.

    ``path`` is stored resolved: ``load_sources_config`` joins a relative local path onto the
    directory of the YAML file. ``field_map`` maps our column name to the column name used in the
    source files, for example ``{"prompt": "question_text"}``.
    """

    name: str
    kind: str
    path: str | None = None
    task: str | None = None
    lang: str | None = None
    shape: str = "auto"
    field_map: Mapping[str, str] = field(default_factory=dict, hash=False)
    max_rows: int | None = None
    enabled: bool = True
    dataset: str | None = None
    languages: tuple[str, ...] | None = None
    eval_fraction: float = 0.2
    seed: int = 0
    max_llm_solutions: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.name, bool):
            raise SourceConfigError(
                f"source name {self.name!r} is invalid: YAML reads yes/no/on/off as booleans, so quote the name"
            )
        if not isinstance(self.name, str) or not _SNAKE_CASE.match(self.name):
            raise SourceConfigError(
                f"source name {self.name!r} is invalid: use snake_case (lowercase letters, digits and "
                "underscores, starting with a letter), for example 'gsm_symbolic'"
            )
        self._check_choice("kind", self.kind, KINDS)
        self._check_choice("shape", self.shape, SHAPES)
        self._check_path()
        self._check_field_map()
        self._check_optional_code("task", self.task, _SNAKE_CASE, "a snake_case task name such as 'math'")
        self._check_optional_code("lang", self.lang, _LANG_CODE, "an ISO 639 code such as 'en' or 'zh'")
        if self.max_rows is not None and (not _is_int(self.max_rows) or self.max_rows < 1):
            self._fail("max_rows", self.max_rows, "an integer of at least 1, or leave it out for no cap")
        if not isinstance(self.enabled, bool):
            self._fail("enabled", self.enabled, "true or false")
        self._check_packaged_options()

    def local_files(self) -> list[Path]:
        """List the files of a local source in read order, sorted by path.

        Returns an empty list for hf_parquet and packaged sources and when nothing matches, so
        callers that only fingerprint files need no error handling. ``filters.ingest.read_source``
        raises ``SourceReadError`` for a local source without files.
        """
        if self.kind not in LOCAL_KINDS or self.path is None:
            return []
        path = Path(self.path)
        if path.is_file():
            return [path]
        if path.is_dir():
            suffixes = FILE_SUFFIXES[self.kind]
            found = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes)]
            return sorted(found)
        if glob.has_magic(self.path):
            return sorted(Path(p) for p in glob.glob(self.path, recursive=True) if Path(p).is_file())
        return []

    def _fail(self, field_name: str, value: object, allowed: str) -> None:
        raise SourceConfigError(f"source {self.name!r}: field {field_name!r} is {value!r}; allowed: {allowed}")

    def _check_choice(self, field_name: str, value: object, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            self._fail(field_name, value, ", ".join(allowed))

    def _check_optional_code(self, field_name: str, value: object, pattern: re.Pattern, allowed: str) -> None:
        if value is not None and (not isinstance(value, str) or not pattern.match(value)):
            self._fail(field_name, value, f"{allowed}, or leave it out")

    def _check_path(self) -> None:
        if self.kind == "packaged":
            if self.path is not None:
                self._fail("path", self.path, "no path for kind 'packaged'; the data comes from an installed package")
            return
        if not isinstance(self.path, str) or not self.path.strip():
            self._fail("path", self.path, f"a file, directory or glob for kind {self.kind!r}")
        if self.kind == "hf_parquet" and not self.path.startswith("hf://"):
            self._fail("path", self.path, "an 'hf://datasets/owner/name/...parquet' path for kind 'hf_parquet'")
        if self.kind in LOCAL_KINDS and self.path.startswith("hf://"):
            self._fail("path", self.path, "a local path; use kind 'hf_parquet' for hf:// paths")

    def _check_field_map(self) -> None:
        if not isinstance(self.field_map, Mapping):
            self._fail("field_map", self.field_map, "a mapping of our column name to the source's column name")
        for ours, theirs in self.field_map.items():
            if ours not in MAPPABLE_FIELDS:
                self._fail("field_map", ours, "keys " + ", ".join(MAPPABLE_FIELDS))
            if not isinstance(theirs, str) or not theirs:
                self._fail(f"field_map.{ours}", theirs, "a non-empty column name")
        # A read-only copy, so a frozen config cannot change through a dict the caller still holds.
        object.__setattr__(self, "field_map", MappingProxyType(dict(self.field_map)))

    def _check_packaged_options(self) -> None:
        if self.kind != "packaged":
            for name in ("dataset", "languages", "max_llm_solutions"):
                if getattr(self, name) is not None:
                    self._fail(name, getattr(self, name), f"leave it out: {name!r} applies to kind 'packaged' only")
            return

        self._check_choice("dataset", self.dataset, packaged.PACKAGED_DATASETS)
        if self.languages is not None:
            if isinstance(self.languages, str) or not isinstance(self.languages, (list, tuple)) or not self.languages:
                self._fail("languages", self.languages, "a non-empty list of language codes")
            object.__setattr__(self, "languages", tuple(self.languages))
            allowed = packaged.selectable_languages(self.dataset)
            if not allowed:
                self._fail("languages", self.languages, f"leave it out: dataset {self.dataset!r} has one language")
            for code in self.languages:
                if code not in allowed:
                    self._fail("languages", code, ", ".join(allowed))
        if isinstance(self.eval_fraction, bool) or not isinstance(self.eval_fraction, (int, float)):
            self._fail("eval_fraction", self.eval_fraction, "a number from 0.0 up to, not including, 1.0")
        if not 0.0 <= self.eval_fraction < 1.0:
            self._fail("eval_fraction", self.eval_fraction, "a number from 0.0 up to, not including, 1.0")
        if not _is_int(self.seed):
            self._fail("seed", self.seed, "an integer")
        if self.max_llm_solutions is not None:
            if self.dataset != "champ":
                self._fail("max_llm_solutions", self.max_llm_solutions, "leave it out: it applies to dataset 'champ'")
            if not _is_int(self.max_llm_solutions) or self.max_llm_solutions < 0:
                self._fail("max_llm_solutions", self.max_llm_solutions, "an integer of at least 0")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_sources_config(path: Path) -> list[SourceConfig]:
    """Read and validate the source list in the YAML file at ``path``.

    Relative local paths are resolved against the YAML file's directory. Disabled sources are
    returned too, with ``enabled=False``, so callers decide what to skip. Raises
    ``SourceConfigError`` for an invalid entry, an unknown key or a duplicate name, and
    ``FileNotFoundError`` when ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"sources config {path} is missing; set sources_path to an existing YAML file "
            "(relative paths start at the repository root), e.g. config/sources.yaml"
        )
    try:
        with path.open(encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise SourceConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("sources"), list):
        raise SourceConfigError(f"{path}: expected a top-level 'sources:' key holding a list of sources")

    allowed_keys = [f.name for f in fields(SourceConfig)]
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for position, entry in enumerate(document["sources"], start=1):
        if not isinstance(entry, dict):
            raise SourceConfigError(f"{path}: source #{position} is {entry!r}; expected a mapping of fields")
        label = entry.get("name", f"#{position}")
        if "name" not in entry or "kind" not in entry:
            missing = [key for key in ("name", "kind") if key not in entry]
            raise SourceConfigError(f"{path}: source {label!r} is missing the field(s) {', '.join(missing)}")
        unknown = sorted(set(entry) - set(allowed_keys))
        if unknown:
            raise SourceConfigError(
                f"{path}: source {label!r} has unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed_keys)}"
            )
        try:
            source = SourceConfig(**_resolve_entry(entry, path.resolve().parent))
        except SourceConfigError as error:
            raise SourceConfigError(f"{path}: {error}") from None
        if source.name in seen:
            raise SourceConfigError(f"{path}: source name {source.name!r} is used twice; names must be unique")
        seen.add(source.name)
        sources.append(source)

    logger.info(
        "loaded %d sources from %s (%d enabled)", len(sources), path, sum(source.enabled for source in sources)
    )
    return sources


def _resolve_entry(entry: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    resolved = dict(entry)
    raw_path = resolved.get("path")
    if isinstance(raw_path, str) and resolved.get("kind") in LOCAL_KINDS and not Path(raw_path).is_absolute():
        resolved["path"] = str(base_dir / Path(raw_path).expanduser())
    if resolved.get("field_map") is None:
        resolved.pop("field_map", None)
    return resolved
