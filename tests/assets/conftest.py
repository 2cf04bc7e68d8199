"""Fixtures for asset-level tests: a small real source file, a sources config and the definitions."""

import json

import pytest

from pipelines.definitions import build_definitions
from pipelines.resources import CausalLM, NliModel
from pipelines.warehouse import Warehouse

CHAT = "chat"

# One row per behaviour the curation stages must show, plus plain rows that must survive.
FIXTURE_ROWS = [
    {"id": "keep-math", "task": "math", "prompt": "Sam has 3 boxes with 6 eggs each. How many eggs does he have?",
     "response": "Each box holds 6 eggs, so 3 boxes hold 3 * 6 = <<3*6=18>>18 eggs.\n#### 18", "reference": "18"},
    {"id": "bad-arithmetic", "task": "math", "prompt": "Tom has 5 apples and buys 37 more. How many apples now?",
     "response": "He has 5 + 37 = <<5+37=41>>41 apples in total.\n#### 41", "reference": "42"},
    {"id": "run-on", "task": "math", "prompt": "Ann reads 12 pages a day for 4 days. How many pages?",
     "response": "12 * 4 = <<12*4=48>>48 pages.\n#### 48\n\nQuestion: Bob has 2 cats and gets 3 more. How many?\n"
     "Answer: 2 + 3 = 5.\n#### 5", "reference": "48"},
    {"id": "keep-code", "task": "code", "prompt": "Write a Python function add(a, b) that returns the sum.",
     "response": "```python\ndef add(a, b):\n    return a + b\n```", "tests": "assert add(2, 3) == 5"},
    {"id": "syntax-error", "task": "code", "prompt": "Write a function that returns the answer.",
     "response": "```python\nx = 40 + 2\nreturn x\n```", "tests": ""},
    {"id": "failing-code", "task": "code", "prompt": "Write f(n) that returns n doubled.",
     "response": "```python\ndef f(n):\n    return n + 2\n```", "tests": "assert f(5) == 10"},
    {"id": "keep-chat", "task": CHAT, "prompt": "How should I store fresh basil?",
     "response": "Trim the stems and keep the basil in a glass of water on the counter, loosely covered with a bag. "
     "The fridge turns the leaves black within a day or two."},
    {"id": "exact-copy", "task": CHAT, "prompt": "How should I store fresh basil?",
     "response": "Trim the stems and keep the basil in a glass of water on the counter,  loosely covered with a bag. "
     "The fridge turns the leaves black within a day or two.\n"},
    {"id": "keep-zh", "task": CHAT, "prompt": "怎样学好编程？",
     "response": "学习编程最好的方法是每天动手写代码，遇到问题先自己查阅官方文档和错误信息，实在解决不了再向别人请教。"},
    {"id": "near-zh", "task": CHAT, "prompt": "怎样学好编程？",
     "response": "学习编程最好的方法就是每天动手写代码，遇到问题先自己查阅官方文档和错误信息，实在解决不了再向别人请教。"},
    {"id": "empty", "task": CHAT, "prompt": "Say nothing.", "response": "   "},
    {"id": "toxic", "task": CHAT, "prompt": "Any feedback on my essay?",
     "response": "You are a pathetic idiot and a worthless loser, nobody wants to read your stupid garbage essay."},
    {"id": "contradiction", "task": CHAT, "prompt": "How heavy is the parcel?",
     "response": "The parcel weighs 3 kilograms. It was shipped on Monday. The parcel weighs 5 kilograms."},
    {"id": "keep-chat-2", "task": CHAT, "prompt": "What does a barometer measure?",
     "response": "A barometer measures air pressure. Falling pressure often means that bad weather is coming."},
]


SMALL_GSM = {"name": "gsm_symbolic", "dataset": "gsm_symbolic", "languages": "[en]", "max_rows": 20}
SMALL_PACKAGED = [
    SMALL_GSM,
    {"name": "human_eval", "dataset": "human_eval", "max_rows": 30},
    {"name": "chatterbot", "dataset": "chatterbot", "languages": "[en, zh]", "max_rows": 60},
]


def write_sources(tmp_path, rows=FIXTURE_ROWS, packaged=(SMALL_GSM,)):
    """Write the fixture rows as JSONL and a sources config that also lists small packaged sources."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    with open(data / "fixture.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    config = [
        "sources:",
        "  - name: fixture",
        "    kind: jsonl",
        "    path: data/fixture.jsonl",
    ]
    for source in packaged:
        config += [f"  - name: {source['name']}", "    kind: packaged"]
        config += [f"    {key}: {value}" for key, value in source.items() if key != "name"]
    path = tmp_path / "sources.yaml"
    path.write_text("\n".join(config) + "\n")
    return path


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(path=str(tmp_path / "warehouse.duckdb"), lock_timeout_s=120)


@pytest.fixture
def definitions(warehouse, nli_model_dir, tmp_path):
    return build_definitions(
        max_rounds=3,
        warehouse=warehouse,
        nli_model=NliModel(model=str(nli_model_dir)),
        causal_lm=CausalLM(model="tiny", cache_dir=str(tmp_path / "models")),
    )


def curation_run_config(sources_path) -> dict:
    source_config = {"config": {"sources_path": str(sources_path)}}
    return {"ops": {"raw_samples": source_config, "evaluation_sets": source_config}}
