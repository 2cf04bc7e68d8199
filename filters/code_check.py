"""Code selection: extract the fenced Python code, compile it, run its tests in the sandbox.

Per row with task "code", in this order:

1. No fenced Python block in the response: kept with ``code_status = "no_code_block"``. Such a
   row (an explanation of a concept, say) is not subject to code checks, and the count is logged
   and reported by stage 3.
2. ``compile(code, "<sample>", "exec")`` fails: rejected ``syntax_error``, detail = the compiler
   message. ``ast.parse`` is not enough because the compiler alone rejects ``return`` or
   ``yield`` outside a function, ``break`` outside a loop and duplicate argument names. Python 2
   code is rejected as written, never converted. These rows never reach the sandbox.
3. The row has tests: code + tests (+ ``check(entry_point)`` when an entry point is given, as in
   HumanEval) run in ``filters.sandbox``. Outcomes: kept ``passed``, or rejected ``test_failed``
   (detail = last stderr line), ``timeout``, ``memory_limit``, ``forbidden`` (file access outside
   the scratch directory, or network), ``process_limit``, ``output_limit``, or
   ``error_<ExceptionName>`` when the sandbox itself failed.
4. No tests: kept with ``code_status = "compiled"``.
"""

import logging
import re
import secrets
import textwrap
import warnings
from dataclasses import dataclass

import polars as pl

from filters import sandbox

log = logging.getLogger(__name__)

# Columns every row-check module in stage 3 adds; stage 3 turns rows with a reason into ledger rows.
REASON, SCORE, THRESHOLD, DETAIL = "_reject_reason", "_reject_score", "_reject_threshold", "_reject_detail"

PYTHON_FENCE_TAGS = frozenset({"", "python", "py", "python3", "py3"})

# An opening fence with an optional language tag, the body, and a closing fence or the end of
# the text (a response cut off mid-block still yields its code, which then usually fails to compile).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class CodeCheckConfig:
    """Sandbox limits and parallelism for running code tests.

    Attributes:
        timeout_s: wall-clock limit per sample in seconds (default 5).
        cpu_s: CPU-time limit per sample in seconds.
        memory_mb: address-space limit per sample in MiB.
        max_output_kb: largest stdout, stderr or file a sample may write, in KiB.
        max_processes: RLIMIT_NPROC for the sample (not enforced by the kernel for root).
        max_open_files: RLIMIT_NOFILE for the sample.
        workers: sandbox processes run at the same time.
    """

    timeout_s: float = sandbox.DEFAULT_TIMEOUT_S
    cpu_s: int = sandbox.DEFAULT_CPU_S
    memory_mb: int = sandbox.DEFAULT_MEMORY_MB
    max_output_kb: int = sandbox.DEFAULT_MAX_OUTPUT_KB
    max_processes: int = sandbox.DEFAULT_MAX_PROCESSES
    max_open_files: int = sandbox.DEFAULT_MAX_OPEN_FILES
    workers: int = 2

    def __post_init__(self) -> None:
        if not 0.1 <= self.timeout_s <= 600:
            raise ValueError(f"timeout_s={self.timeout_s} is invalid: use 0.1 to 600 seconds")
        if not 1 <= self.cpu_s <= 600:
            raise ValueError(f"cpu_s={self.cpu_s} is invalid: use 1 to 600 seconds")
        if not 64 <= self.memory_mb <= 65536:
            raise ValueError(
                f"memory_mb={self.memory_mb} is invalid: use 64 to 65536 MiB (the interpreter alone needs about 30)"
            )
        if not 1 <= self.max_output_kb <= 1_048_576:
            raise ValueError(f"max_output_kb={self.max_output_kb} is invalid: use 1 to 1048576 KiB")
        if not 1 <= self.max_processes <= 4096:
            raise ValueError(f"max_processes={self.max_processes} is invalid: use 1 to 4096")
        if not 16 <= self.max_open_files <= 65536:
            raise ValueError(f"max_open_files={self.max_open_files} is invalid: use 16 to 65536")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers={self.workers} is invalid: use 1 to 64 sandbox workers")

    def sandbox_limits(self) -> dict[str, float | int]:
        """Return the keyword arguments for ``sandbox.run_python``."""
        return {
            "timeout_s": self.timeout_s,
            "cpu_s": self.cpu_s,
            "memory_mb": self.memory_mb,
            "max_output_kb": self.max_output_kb,
            "max_processes": self.max_processes,
            "max_open_files": self.max_open_files,
        }


def extract_code_blocks(text: str | None) -> list[str]:
    """Return the bodies of fenced blocks tagged python, py, python3 or untagged, in order.

    Blocks tagged with another language (```bash, ```json) are skipped. Indentation shared by
    a whole block (a fence inside a Markdown list) is removed.
    """
    if not text:
        return []
    blocks = []
    for match in _FENCE.finditer(text):
        tag = match.group(1).lower()
        body = textwrap.dedent(match.group(2))
        if tag in PYTHON_FENCE_TAGS and body.strip():
            blocks.append(body)
    return blocks


def compile_error(code: str) -> str | None:
    """Compile ``code`` as a module and return the compiler's message, or None when it compiles.

    The message has the form ``"'return' outside function (line 2)"``.
    """
    try:
        with warnings.catch_warnings():
            # SyntaxWarnings (e.g. "is" with a literal) are not errors; keep them off the log.
            warnings.simplefilter("ignore")
            compile(code, "<sample>", "exec")
    except SyntaxError as error:
        return f"{error.msg} (line {error.lineno})"
    return None


def new_completion_marker() -> str:
    """Return a random line that a test program prints only after every test ran."""
    return f"tests-completed-{secrets.token_hex(12)}"


def build_test_program(code: str, tests: str, entry_point: str | None, marker: str | None = None) -> str:
    """Join solution and tests into one program; HumanEval-style tests also get ``check(entry_point)``.

    With ``marker``, the program prints it as its last statement. Exit code 0 alone does not prove
    the tests ran: the solution or the tests may call ``sys.exit(0)`` or ``os._exit(0)`` first, and
    the code cannot print a marker it never saw.
    """
    program = f"{code.rstrip()}\n\n\n{tests.rstrip()}\n"
    if entry_point:
        program += f"\n\ncheck({entry_point})\n"
    if marker:
        program += f"\n\nprint({marker!r}, flush=True)\n"
    return program


def tests_completed(result: sandbox.SandboxResult, marker: str) -> bool:
    """True when the sandbox exited 0 and the program printed its completion marker."""
    return result.status == "passed" and marker in result.stdout_tail


def _sandbox_outcome(
    result: sandbox.SandboxResult, config: CodeCheckConfig, marker: str
) -> tuple[str | None, float | None, float | None, str]:
    if tests_completed(result, marker):
        return None, None, None, ""
    if result.status == "passed":
        return "tests_not_completed", None, None, "exited with code 0 before the tests finished"
    if result.status == "timeout":
        return "timeout", result.wall_s, config.timeout_s, f"no result within {config.timeout_s} s wall or {config.cpu_s} s CPU"
    if result.status == "memory":
        return "memory_limit", None, float(config.memory_mb), result.last_error_line
    if result.status == "error":
        return f"error_{result.error or 'SandboxError'}", None, None, result.stderr_tail
    if result.status in ("forbidden", "process_limit", "output_limit"):
        return result.status, None, None, result.violation or result.last_error_line
    detail = result.last_error_line or f"exit code {result.returncode} with no error output"
    return "test_failed", None, None, detail


def check_code_rows(frame: pl.DataFrame, config: CodeCheckConfig) -> pl.DataFrame:
    """Add ``code_status`` and the reject columns to code rows.

    ``frame`` needs ``response``, ``tests`` and ``entry_point``. ``code_status`` is "passed",
    "compiled" or "no_code_block" for kept rows and null for rejected ones.
    """
    count = frame.height
    status: list[str | None] = [None] * count
    reasons: list[str | None] = [None] * count
    scores: list[float | None] = [None] * count
    thresholds: list[float | None] = [None] * count
    details: list[str | None] = [None] * count
    to_run: list[tuple[int, str, str]] = []

    rows = frame.select("response", "tests", "entry_point").iter_rows()
    for index, (response, tests, entry_point) in enumerate(rows):
        try:
            blocks = extract_code_blocks(response)
            if not blocks:
                status[index] = "no_code_block"
                continue
            code = "\n\n".join(blocks)
            error = compile_error(code)
            if error is not None:
                reasons[index], details[index] = "syntax_error", error
                continue
            if tests and tests.strip():
                marker = new_completion_marker()
                to_run.append((index, build_test_program(code, tests, entry_point, marker), marker))
            else:
                status[index] = "compiled"
        except Exception as error:  # a per-sample failure becomes a rejection, never a crashed batch
            reasons[index], details[index] = f"error_{type(error).__name__}", str(error)[:500]

    results = sandbox.run_many([program for _, program, _ in to_run], workers=config.workers, **config.sandbox_limits())
    for (index, _, marker), result in zip(to_run, results):
        reason, score, threshold, detail = _sandbox_outcome(result, config, marker)
        if reason is None:
            status[index] = "passed"
        else:
            reasons[index], scores[index], thresholds[index], details[index] = reason, score, threshold, detail

    summary: dict[str, int] = {}
    for value in (reason or code_status for reason, code_status in zip(reasons, status)):
        summary[value] = summary.get(value, 0) + 1
    log.info("code check: %d rows, %d ran tests in the sandbox: %s", count, len(to_run), dict(sorted(summary.items())))

    return frame.with_columns(
        pl.Series("code_status", status, dtype=pl.String),
        pl.Series(REASON, reasons, dtype=pl.String),
        pl.Series(SCORE, scores, dtype=pl.Float64),
        pl.Series(THRESHOLD, thresholds, dtype=pl.Float64),
        pl.Series(DETAIL, details, dtype=pl.String),
    )
