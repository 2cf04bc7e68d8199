"""Hostile code samples against the sandbox jail: each ends with its own status and the host is unchanged.

Every test here needs the namespace jail, which needs root or CAP_SYS_ADMIN and mount namespaces.
Without the jail the sandbox does not claim to stop file access, so the tests skip.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from filters import sandbox
from filters.code_check import CodeCheckConfig, check_code_rows
from filters.sandbox import isolation_mode, live_uid_members, run_python

pytestmark = pytest.mark.skipif(
    isolation_mode() != "jail", reason="the sandbox jail needs root or CAP_SYS_ADMIN and mount namespaces"
)


@pytest.fixture
def canary_dir(tmp_path):
    """A host directory outside any scratch directory, with a secret file the snippets must not reach."""
    directory = tmp_path / "host"
    directory.mkdir()
    (directory / "canary.txt").write_text("secret canary 4711\n")
    (directory / "keep.txt").write_text("must survive\n")
    return directory


def snapshot(directory) -> dict[str, tuple[str, int, int]]:
    """Map every path under ``directory`` to (sha256, mode, mtime_ns)."""
    state = {}
    for path in sorted(directory.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[str(path.relative_to(directory))] = (digest, stat.st_mode, stat.st_mtime_ns)
    return state


def hostile_samples(canary) -> dict[str, tuple[str, str]]:
    """Name -> (code, expected status) for every hostile behaviour the jail must stop."""
    secret = str(canary / "canary.txt")
    keep = str(canary / "keep.txt")
    return {
        "read_canary": (f"print(open({secret!r}).read())", "forbidden"),
        "read_canary_caught": (
            f"try:\n    print(open({secret!r}).read())\nexcept OSError:\n    pass\n", "forbidden"
        ),
        "read_shadow": ("print(open('/etc/shadow').read())", "forbidden"),
        "read_proc_environ": ("print(open('/proc/1/environ').read())", "forbidden"),
        "write_outside": (f"open({str(canary / 'planted.txt')!r}, 'w').write('x')", "forbidden"),
        "delete_canary": (f"import os\nos.remove({keep!r})", "forbidden"),
        "rmtree_host_dir": (f"import shutil\nshutil.rmtree({str(canary)!r})", "forbidden"),
        "rmtree_libraries": ("import shutil\nshutil.rmtree('/usr/lib')", "forbidden"),
        "chmod_canary": (f"import os\nos.chmod({secret!r}, 0o777)", "forbidden"),
        "socket_connect": ("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)", "forbidden"),
        "socket_connect_caught": (
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n"
            "except OSError:\n    pass\n",
            "forbidden",
        ),
        "socket_bind": (
            "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 8080))\ns.listen()\n", "forbidden"
        ),
        "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", "process_limit"),
        "huge_allocation": ("data = bytearray(8 * 1024 ** 3)", "memory"),
        "huge_file": (
            "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n", "output_limit"
        ),
        "fill_scratch": (
            "i = 0\nwhile True:\n    open(f'part{i}', 'wb').write(b'x' * 60000)\n    i += 1\n", "output_limit"
        ),
        "busy_loop": ("while True:\n    pass\n", "timeout"),
        "stderr_flood": ("import sys\nsys.stderr.write('e' * (10 << 20))\nprint('done')\n", "output_limit"),
    }


def test_jail_runs_as_unprivileged_uid():
    result = run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())", timeout_s=5)
    uid, gid, groups = result.stdout_tail.split(" ", 2)
    assert result.status == "passed"
    assert int(uid) >= sandbox.JAIL_UID_BASE
    assert int(gid) == int(uid)
    assert groups.strip() == "[]"


def test_jail_hides_host_files_from_native_code(canary_dir):
    """A libc open() bypasses the audit hook; the chroot must still make the file unreachable."""
    secret = str(canary_dir / "canary.txt").encode()
    code = f"import ctypes\nlibc = ctypes.CDLL(None)\nprint(libc.open({secret!r}, 0))\n"
    result = run_python(code, timeout_s=5)
    assert result.status == "passed"
    assert result.stdout_tail.strip() == "-1"


def test_jail_root_lists_only_jail_entries():
    result = run_python("import os\nprint(sorted(os.listdir('/')))", timeout_s=5)
    visible = set(eval(result.stdout_tail))
    assert visible <= {"usr", "lib", "lib64", "root", "dev", "scratch", "snippet.py"}
    assert "etc" not in visible
    assert "tmp" not in visible


def test_jail_scratch_is_writable():
    code = "open('out.txt', 'w').write('ok')\nprint(open('out.txt').read())\n"
    result = run_python(code, timeout_s=5)
    assert result.status == "passed"
    assert result.stdout_tail == "ok\n"


@pytest.mark.parametrize("name", sorted(hostile_samples(Path("/unused"))))
def test_hostile_sample_status(name, canary_dir):
    code, expected = hostile_samples(canary_dir)[name]
    result = run_python(code, timeout_s=3, cpu_s=2, memory_mb=256, max_output_kb=64, max_processes=16, scratch_mb=4)
    assert result.status == expected, (result.status, result.violation, result.last_error_line)


def test_hostile_samples_leave_host_unchanged(canary_dir):
    before = snapshot(canary_dir)
    codes = [code for code, _ in hostile_samples(canary_dir).values()]
    results = sandbox.run_many(codes, workers=2, timeout_s=3, cpu_s=2, memory_mb=256, max_processes=16, scratch_mb=4)
    after = snapshot(canary_dir)
    assert len(results) == len(codes)
    assert after == before
    assert (canary_dir / "canary.txt").read_text() == "secret canary 4711\n"


def test_setsid_child_does_not_survive():
    code = "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(600)\nprint(os.getuid())\n"
    result = run_python(code, timeout_s=5)
    uid = int(result.stdout_tail)
    assert result.status == "passed"
    assert live_uid_members(uid) == []


def test_sandbox_directories_removed_after_hostile_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))
    run_python("import os\nwhile True:\n    os.fork()\n", timeout_s=2, max_processes=16)
    run_python("open('big', 'wb').write(b'x' * 10**7)", timeout_s=2)
    assert list(tmp_path.iterdir()) == []


def test_code_check_rejects_hostile_samples_with_reasons(canary_dir):
    """Stage 3's code check turns each sandbox status into the rejection reason of the same name."""
    secret = str(canary_dir / "canary.txt")
    responses = {
        "reads_host": f"```python\ndef f():\n    return open({secret!r}).read()\n```",
        "fork_bomb": "```python\nimport os\ndef f():\n    while True:\n        os.fork()\n```",
        "huge_file": "```python\ndef f():\n    open('x', 'wb').write(b'x' * 10**8)\n```",
        "network": "```python\nimport socket\ndef f():\n    return socket.create_connection(('192.0.2.1', 80), timeout=1)\n```",
    }
    frame = pl.DataFrame(
        {
            "sample_id": list(responses),
            "response": list(responses.values()),
            "tests": ["f()"] * len(responses),
            "entry_point": [None] * len(responses),
        }
    )
    started = time.monotonic()
    checked = check_code_rows(frame, CodeCheckConfig(timeout_s=3, cpu_s=2, max_processes=16, workers=2))
    reasons = dict(zip(checked["sample_id"].to_list(), checked["_reject_reason"].to_list()))
    assert reasons["reads_host"] == "forbidden"
    assert reasons["fork_bomb"] == "process_limit"
    assert reasons["huge_file"] == "output_limit"
    assert reasons["network"] == "forbidden"
    assert time.monotonic() - started < 30
    assert os.path.exists(secret)



def live_children(parent_pid: int) -> list[int]:
    """Return the pids of non-zombie processes whose parent is ``parent_pid``."""
    children = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        status = sandbox._proc_fields(entry, "status") or ""
        if f"PPid:\t{parent_pid}\n" in status and "State:\tZ" not in status:
            children.append(int(entry))
    return children


def test_snippet_dies_with_its_parent():
    """A pipeline process killed with SIGKILL takes its running snippet with it."""
    script = (
        "import sys\nsys.path.insert(0, sys.argv[1])\nfrom filters.sandbox import run_python\n"
        "run_python('import time\\ntime.sleep(600)', timeout_s=600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).resolve().parents[2])])
    deadline = time.monotonic() + 60
    snippets = []
    while not snippets and time.monotonic() < deadline:
        time.sleep(0.2)
        snippets = [pid for pid in live_children(parent.pid) if "-I" in (sandbox._proc_fields(str(pid), "cmdline") or "")]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    time.sleep(0.5)
    survivors = [pid for pid in snippets if "State:\tZ" not in (sandbox._proc_fields(str(pid), "status") or "State:\tZ")]
    assert snippets
    assert survivors == []
