"""Stage 3 end to end on the field cases: math separators and run-on markers, the compile gate,
hanging code, task labels and decontamination, through ``run_stage3``."""

import subprocess
import time

import polars as pl
import pytest

from filters import sandbox
from filters.code_check import CodeCheckConfig
from filters.schema import LEDGER_SCHEMA, SAMPLE_SCHEMA
from filters.stage3 import ADDED_COLUMNS, Stage3Config, run_stage3

LAMPS = "A shop sells 200 lamps at $40 each. What is the revenue?"
EGGS = "Sam has 3 boxes with 6 eggs each. How many eggs?"
RETURN_N = "Write f(n) returning n."

# Thousands separators, currency and trailing words in final answers.
CASE_11 = [
    ("m1", "math", LAMPS, "Revenue is 200 × 40 = 8,000 dollars, so the answer is \\boxed{8,000}.", "8000", None),
    ("m2", "math", "Rent is $9,000 plus a $500 fee. Total?", "9,000 + 500 = 9,500. Final answer: \\boxed{$9{,}500}", "9500", None),
    (
        "m3",
        "math",
        "She sold 48 clips in April and half as many in May. How many in total?",
        "In May she sold 48 / 2 = 24, so 48 + 24 = 72. The answer is 72, in total, across both months.",
        "72",
        None,
    ),
    ("m4", "math", "How many grams are in 1 kilogram?", "There are 1,000 grams in a kilogram.\n#### 1,000", "1000", None),
    ("m5", "math", LAMPS, "Revenue is 200 × 42 = 8,400 dollars.\n#### 8,400", "8000", None),
    ("m6", "math", "A team scores 1,250 points in game one and 1,250 in game two. Total?", "1,250 + 1,250 = 2,500\n#### 2,500", "2500", None),
]
# Several final markers: a run-on invented question (k1), a corrected guess (k3).
CASE_13 = [
    (
        "k1",
        "math",
        EGGS,
        "3 × 6 = 18 eggs.\n#### 18\n\nQuestion: Tom has 5 apples and buys 37 more. How many apples?\nAnswer: 5 + 37 = 42.\n#### 42",
        "18",
        None,
    ),
    ("k2", "math", EGGS, "3 × 6 = 18 eggs.\n#### 18", "18", None),
    ("k3", "math", EGGS, "First guess: 3 + 6 = 9.\n#### 9\nWait, that is wrong: 3 × 6 = 18.\n#### 18", "18", None),
]
# Code that ast.parse accepts but compile rejects, Python 2 code, and prose without a code block.
CASE_14 = [
    ("c1", "code", "Write a function add(a, b).", "```python\ndef add(a, b):\n    return a + b\n```", None, "assert add(2, 3) == 5"),
    ("c2", "code", "Print hello (legacy snippet).", "```python\nprint 'hello'\n```", None, ""),
    ("c3", "code", "Return the answer.", "```python\nx = 40 + 2\nreturn x\n```", None, ""),
    ("c4", "code", "Write f that returns its argument.", "```python\ndef f(a, a):\n    return a\n```", None, "assert f(1, 1) == 1"),
    ("c5", "code", "Loop until done.", "```python\nfor i in range(3):\n    pass\nbreak\n```", None, ""),
    (
        "c6",
        "code",
        "Explain list comprehensions.",
        "A list comprehension builds a list in one expression, e.g. `[x * x for x in range(5)]`.",
        None,
        None,
    ),
]
# Solutions or tests that never terminate (l1, l2, l4) beside a passing (l3) and a failing (l5) one.
CASE_15 = [
    ("l1", "code", RETURN_N, "```python\ndef f(n):\n    while True:\n        pass\n```", None, "assert f(1) == 1"),
    (
        "l2",
        "code",
        RETURN_N,
        "```python\ndef f(n):\n    while True:\n        try:\n            pass\n        except BaseException:\n            pass\n```",
        None,
        "assert f(1) == 1",
    ),
    ("l3", "code", RETURN_N, "```python\ndef f(n):\n    return n\n```", None, "assert f(1) == 1"),
    ("l4", "code", RETURN_N, "```python\ndef f(n):\n    return n\n```", None, "import time\ntime.sleep(10**6)\nassert f(1) == 1"),
    ("l5", "code", RETURN_N, "```python\ndef f(n):\n    return n\n```", None, "assert f(2) == 3"),
]


def samples(rows) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "sample_id": sample_id,
                "source": "case",
                "origin_id": sample_id,
                "task": task,
                "lang": "en",
                "prompt": prompt,
                "response": response,
                "messages": None,
                "reference": reference,
                "tests": tests,
                "entry_point": None,
                "meta": None,
            }
            for sample_id, task, prompt, response, reference, tests in rows
        ],
        schema=SAMPLE_SCHEMA,
    )


def no_eval_sets() -> pl.DataFrame:
    return pl.DataFrame(schema={"benchmark": pl.String, "item_id": pl.String, "task": pl.String, "lang": pl.String, "prompt": pl.String})


def reasons(result) -> dict[str, str]:
    return dict(zip(result.rejected["sample_id"].to_list(), result.rejected["reason"].to_list()))


@pytest.fixture
def started_pids(monkeypatch):
    """Record the pid (also the process group id) of every sandbox process."""
    sandbox.network_isolation()  # run the one-off probe before recording
    pids = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pids.append(self.pid)

    monkeypatch.setattr(sandbox.subprocess, "Popen", RecordingPopen)
    return pids


def test_case11_separators_currency_and_trailing_words():
    frame = samples(CASE_11)
    result = run_stage3(frame, Stage3Config(), no_eval_sets(), None)
    result.check_conservation(frame["sample_id"])
    kept = dict(zip(result.kept["sample_id"].to_list(), result.kept["math_answer"].to_list()))
    assert kept == {"m1": "8000", "m2": "9500", "m3": "72", "m4": "1000", "m6": "2500"}
    assert reasons(result) == {"m5": "answer_mismatch"}
    assert set(result.kept["math_check"].to_list()) == {"matches_reference"}


def test_case13_run_on_markers_rejected_under_one_reason():
    frame = samples(CASE_13)
    result = run_stage3(frame, Stage3Config(), no_eval_sets(), None)
    assert result.kept["sample_id"].to_list() == ["k2"]
    assert reasons(result) == {"k1": "multiple_final_answers", "k3": "multiple_final_answers"}
    assert result.reason_counts() == {"multiple_final_answers": 2}


def test_case14_compile_gate_runs_before_sandbox(started_pids):
    """c6 has no fenced block: the documented path keeps it with code_status "no_code_block"."""
    frame = samples(CASE_14)
    result = run_stage3(frame, Stage3Config(), no_eval_sets(), None)
    result.check_conservation(frame["sample_id"])
    assert reasons(result) == {"c2": "syntax_error", "c3": "syntax_error", "c4": "syntax_error", "c5": "syntax_error"}
    details = dict(zip(result.rejected["sample_id"].to_list(), result.rejected["detail"].to_list()))
    assert details["c3"].startswith("'return' outside function")
    assert details["c4"].startswith("duplicate argument 'a' in function definition")
    assert details["c5"].startswith("'break' outside loop")
    status = dict(zip(result.kept["sample_id"].to_list(), result.kept["code_status"].to_list()))
    assert status == {"c1": "passed", "c6": "no_code_block"}
    assert len(started_pids) == 1  # only c1 reached the sandbox
    counts = result.tables["status_counts"].filter(pl.col("status") == "no_code_block")["n"].to_list()
    assert counts == [1]


def test_case15_hanging_code_times_out_and_leaves_no_process(started_pids):
    """Default per-sample limit T = 5 s wall clock, two workers; the stage must end within 5*T + 30 s."""
    config = Stage3Config()
    frame = samples(CASE_15)
    started = time.monotonic()
    result = run_stage3(frame, config, no_eval_sets(), None)
    elapsed = time.monotonic() - started
    assert config.code.timeout_s == 5.0
    assert elapsed < 5 * config.code.timeout_s + 30
    assert reasons(result) == {"l1": "timeout", "l2": "timeout", "l4": "timeout", "l5": "test_failed"}
    assert result.kept["sample_id"].to_list() == ["l3"]
    assert result.kept["code_status"].to_list() == ["passed"]
    assert len(started_pids) == 5
    assert [pid for pid in started_pids if sandbox.live_group_members(pid)] == []


def test_case15_passing_sample_after_hung_ones_on_one_worker():
    config = Stage3Config(code=CodeCheckConfig(timeout_s=1, cpu_s=1, workers=1))
    frame = samples(CASE_15[:3])
    started = time.monotonic()
    result = run_stage3(frame, config, no_eval_sets(), None)
    assert result.kept["sample_id"].to_list() == ["l3"]
    assert reasons(result) == {"l1": "timeout", "l2": "timeout"}
    assert time.monotonic() - started < 3 * 1 + 15


def test_missing_task_without_embedder_rejected():
    frame = samples([("u1", None, "Hello, how are you?", "Fine, thanks.", None, None)])
    result = run_stage3(frame, Stage3Config(), no_eval_sets(), None)
    assert reasons(result) == {"u1": "no_task_label"}
    assert result.kept.height == 0


def test_missing_task_labelled_with_embedder():
    from filters.embed import load_embedder

    frame = samples(
        [
            ("u1", None, "Tom has 4 bags with 5 marbles in each. How many marbles?", "4 * 5 = 20\n#### 20", None, None),
            ("u2", None, "Write a Python function that returns the square of a number.", "```python\ndef sq(x):\n    return x * x\n```", None, None),
        ]
    )
    result = run_stage3(frame, Stage3Config(), no_eval_sets(), load_embedder())
    kept = result.kept.sort("sample_id")
    assert kept["task"].to_list() == ["math", "code"]
    assert kept["task_source"].to_list() == ["prototype", "prototype"]
    assert kept["math_check"].to_list() == ["matches_reasoning", None]
    assert kept["code_status"].to_list() == [None, "compiled"]


def test_contaminated_row_rejected_with_ratio_and_item():
    eval_sets = pl.DataFrame({"benchmark": ["gsm_symbolic_eval"], "item_id": ["473"], "task": ["math"], "lang": ["en"], "prompt": [LAMPS + " Answer in dollars without any units please."]})
    copied = "Quick question for you:\n" + (LAMPS + " Answer in dollars without any units please.").lower()
    frame = samples([("d1", "chat", copied, "It is 8000.", None, None), ("d2", "chat", "Name a colour.", "Blue.", None, None)])
    result = run_stage3(frame, Stage3Config(), eval_sets, None)
    ledger = result.rejected.row(0, named=True)
    assert ledger["reason"] == "contaminated"
    assert ledger["filter"] == "decontam"
    assert ledger["score"] == pytest.approx(1.0)
    assert ledger["threshold"] == 0.5
    assert ledger["detail"] == "gsm_symbolic_eval/473 (matched by prompt)"
    table = result.tables["contamination"].row(0, named=True)
    assert table["n_matched_train_rows"] == 1
    assert result.kept["sample_id"].to_list() == ["d2"]


def test_output_shape_and_conservation_on_all_cases():
    frame = samples(CASE_11 + CASE_13 + CASE_14)
    result = run_stage3(frame, Stage3Config(), no_eval_sets(), None)
    result.check_conservation(frame["sample_id"])
    assert result.kept.columns == list(SAMPLE_SCHEMA) + list(ADDED_COLUMNS)
    assert result.rejected.columns == list(LEDGER_SCHEMA)
    assert set(result.rejected["stage"].to_list()) == {"stage3"}
    assert result.rows_in == frame.height


def test_duplicate_sample_ids_raise():
    frame = samples(CASE_13[:1] + CASE_13[:1])
    with pytest.raises(ValueError, match="repeated sample_id"):
        run_stage3(frame, Stage3Config(), no_eval_sets(), None)
