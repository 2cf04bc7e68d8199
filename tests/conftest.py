"""Shared fixtures: paths to the offline models and a Dagster instance under tmp_path."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
NLI_MODEL_DIR = SHARED_DIR / "models" / "nli-minilm-l6"

# The project never phones home, and nothing here may reach a model hub.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def nli_model_dir() -> Path:
    if not (NLI_MODEL_DIR / "config.json").exists():
        pytest.skip(f"the offline NLI model is missing at {NLI_MODEL_DIR}; it ships in ../shared beside the repo")
    return NLI_MODEL_DIR


def project_instance(home: Path):
    """A Dagster instance in ``home`` configured by the project's own dagster.yaml."""
    import shutil

    from dagster import DagsterInstance

    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


@pytest.fixture
def dagster_instance(tmp_path):
    with project_instance(tmp_path / "dagster_home") as instance:
        yield instance
