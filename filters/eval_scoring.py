"""Accuracy scorers for generated answers: exact match for math, tests passed for code.

Each scorer takes the model's generated text and the evaluation row (a dict with ``reference``,
``tests``, ``entry_point``) and returns True when the answer counts as correct. The training step
uses them for the per-task accuracy it writes to the feedback table.
"""

import re
from collections.abc import Callable

from filters import sandbox
from filters.code_check import (
    build_test_program,
    compile_error,
    extract_code_blocks,
    new_completion_marker,
    tests_completed,
)
from filters.math_check import extract_final_answers, parse_number

Scorer = Callable[[str, dict], bool]

_LAST_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def _predicted_number(generated: str):
    """Take the first final-answer marker; without one, the last number in the text."""
    answers = extract_final_answers(generated)
    if answers:
        return parse_number(answers[0])
    numbers = _LAST_NUMBER.findall(generated)
    return parse_number(numbers[-1]) if numbers else None


def math_exact_match(generated: str, row: dict) -> bool:
    """True when the generated final answer equals the reference numerically."""
    expected = parse_number(row.get("reference"))
    predicted = _predicted_number(generated)
    if expected is None or predicted is None:
        return False
    return abs(float(predicted) - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))


def code_tests_pass(generated: str, row: dict, timeout_s: float = 5.0) -> bool:
    """True when the generated program compiles and passes the row's tests in the sandbox."""
    tests = row.get("tests") or ""
    blocks = extract_code_blocks(generated)
    code = blocks[0] if blocks else generated
    if not tests.strip() or compile_error(code) is not None:
        return False
    marker = new_completion_marker()
    program = build_test_program(code, tests, row.get("entry_point"), marker)
    return tests_completed(sandbox.run_python(program, timeout_s=timeout_s), marker)


def build_task_scorers() -> dict[str, tuple[str, Scorer]]:
    """Return ``{task: (accuracy_kind, scorer)}`` for the tasks whose accuracy is defined."""
    return {"math": ("exact_match", math_exact_match), "code": ("tests_passed", code_tests_pass)}
