"""Tests for the subprocess sandbox: statuses, limits, isolation and cleanup."""

import os
import subprocess
import time

import pytest

from filters import sandbox
from filters.sandbox import live_group_members, network_isolation, run_many, run_python

SWALLOWING_LOOP = "while True:\n    try:\n        pass\n    except BaseException:\n        pass\n"


@pytest.fixture
def started_pids(monkeypatch):
    """Record the pid (also the process group id) of every process the sandbox starts."""
    pids = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pids.append(self.pid)

    monkeypatch.setattr(sandbox.subprocess, "Popen", RecordingPopen)
    return pids


def test_run_python_passes_clean_exit():
    result = run_python("print('hello')", timeout_s=5)
    assert result.status == "passed"
    assert result.returncode == 0
    assert result.stdout_tail == "hello\n"


def test_run_python_fails_on_assertion():
    result = run_python("assert 1 == 2, 'one is not two'", timeout_s=5)
    assert result.status == "failed"
    assert result.last_error_line == "AssertionError: one is not two"


def test_run_python_times_out_exception_swallowing_loop():
    started = time.monotonic()
    result = run_python(SWALLOWING_LOOP, timeout_s=1)
    assert result.status == "timeout"
    assert time.monotonic() - started < 4


def test_run_python_stops_cpu_time_over_limit():
    result = run_python("while True:\n    pass\n", timeout_s=10, cpu_s=1)
    assert result.status == "timeout"
    assert result.wall_s < 6


def test_run_python_reports_memory_limit():
    result = run_python("data = bytearray(1024 * 1024 * 1024)", timeout_s=5, memory_mb=256)
    assert result.status == "memory"


def test_run_python_blocks_network():
    code = "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)\n"
    result = run_python(code, timeout_s=5)
    assert result.status == "forbidden"
    assert network_isolation() in ("netns", "unshare_binary", "audit_hook")
    assert "Error" in result.last_error_line


def test_run_python_caps_output_size():
    result = run_python("import sys\nsys.stdout.write('x' * 200_000)\nsys.stdout.flush()\n", timeout_s=5, max_output_kb=16)
    assert result.status == "output_limit"
    assert len(result.stdout_tail) <= sandbox.TAIL_CHARS


def test_run_python_uses_minimal_environment_and_scratch_dir():
    code = "import os, json\nprint(json.dumps({'env': sorted(os.environ), 'cwd': os.getcwd()}))\n"
    result = run_python(code, timeout_s=5)
    import json

    report = json.loads(result.stdout_tail)
    assert set(report["env"]) == {"HOME", "LANG", "LC_ALL", "PATH", "TMPDIR"}
    if result.isolation == "jail":
        assert report["cwd"] == sandbox.JAIL_SCRATCH
    else:
        assert report["cwd"].endswith("/work")
        assert not os.path.exists(report["cwd"])


def test_run_python_leaves_no_live_group_member(started_pids):
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(600)\ntime.sleep(600)\n"
    result = run_python(code, timeout_s=1)
    assert result.status == "timeout"
    assert len(started_pids) == 1
    assert live_group_members(started_pids[0]) == []


def test_run_python_kills_background_child_after_normal_exit(started_pids):
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(600)\n"
    result = run_python(code, timeout_s=5)
    assert result.status == "passed"
    assert live_group_members(started_pids[0]) == []


def test_run_many_keeps_order_after_hung_samples():
    codes = ["import time\ntime.sleep(600)", SWALLOWING_LOOP, "print('done')"]
    started = time.monotonic()
    results = run_many(codes, workers=1, timeout_s=1)
    assert [result.status for result in results] == ["timeout", "timeout", "passed"]
    assert results[2].stdout_tail == "done\n"
    assert time.monotonic() - started < 8


def test_run_many_rejects_zero_workers():
    with pytest.raises(ValueError, match="workers=0"):
        run_many(["pass"], workers=0)
