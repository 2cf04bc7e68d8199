"""Start `dagster dev` and materialize an asset through the GraphQL API that the UI uses."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.assets.conftest import FIXTURE_ROWS, write_sources

REPO_ROOT = Path(__file__).resolve().parents[2]

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""
RUN_STATUS = 'query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }'
ASSET_NODES = "{ assetNodes { assetKey { path } groupName } }"
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    log = open(tmp_path / "dagster_dev.log", "w")
    # A process group of its own, with default signal handling, so the whole tree stops with one signal.
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"dagster dev exited early: {(tmp_path / 'dagster_dev.log').read_text()[-2000:]}")
            time.sleep(1)
    else:
        pytest.fail("dagster dev did not answer on /server_info within 120 s")
    try:
        yield port
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_ui_shows_every_stage_and_materializes_raw_samples(dagster_dev, tmp_path):
    port = dagster_dev
    nodes = graphql(port, ASSET_NODES)["assetNodes"]
    keys = {node["assetKey"]["path"][-1] for node in nodes}
    assert {"raw_samples", "basic_filtered", "consistent_samples", "selected_samples", "task_error_stats"} <= keys

    location = graphql(port, LOCATIONS)["workspaceOrError"]["locationEntries"][0]["name"]
    sources = write_sources(tmp_path, packaged=())
    warehouse_path = tmp_path / "warehouse.duckdb"
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["raw_samples"]}],
        },
        "runConfigData": {
            "ops": {"raw_samples": {"config": {"sources_path": str(sources)}}},
            "resources": {"warehouse": {"config": {"path": str(warehouse_path)}}},
        },
        "mode": "default",
    }
    launched = graphql(port, LAUNCH, {"params": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    status = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS"

    import duckdb

    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM raw_samples").fetchone()[0]
    assert rows == len(FIXTURE_ROWS)
