"""Map one parsed record (a JSON object or a Parquet row) onto the sample columns.

Record shapes (``SourceConfig.shape``; ``auto`` tries them in this order):

- ``messages``: a ``messages`` list of ``{role, content}`` turns, or a ShareGPT ``conversations``
  list of ``{from, value}`` turns. The response is the last assistant turn, and the prompt is
  rendered from the turns before it by ``render_chat_prompt``. The original turns are kept as
  JSON in ``messages``.
- ``alpaca``: ``instruction`` plus optional ``input`` (or ``context``), joined with a blank line,
  is the prompt; ``output`` (or ``response``) is the response.
- ``prompt_response``: the first non-null of ``PROMPT_FIELDS`` and of ``RESPONSE_FIELDS``.

An optional ``system`` field goes in front of the prompt. ``field_map`` replaces the field names
looked up for any of our columns. Every field not used goes into ``meta`` as JSON; null values
are left out of ``meta``.
"""

import json
import re
from typing import TYPE_CHECKING, Any

from filters.lang import detect_lang

if TYPE_CHECKING:  # filters.sources imports filters.packaged, which imports filters.ingest and this module
    from filters.sources import SourceConfig

# Reasons of a record that cannot become a sample; filters.ingest quarantines it with this reason.
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"

PROMPT_FIELDS = ("prompt", "question", "query", "problem", "input")
RESPONSE_FIELDS = ("response", "completion", "answer", "solution", "output")
MESSAGES_FIELDS = ("messages", "conversations")
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "system": ("system", "system_prompt"),
    "instruction": ("instruction",),
    "input": ("input", "context"),
    "origin_id": ("id", "_id", "uid"),
    "task": ("task",),
    "lang": ("lang", "language"),
    "reference": ("reference",),
    "tests": ("tests", "test"),
    "entry_point": ("entry_point",),
}
ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
}

# Language detection reads only this many characters of prompt + response: the script counts
# settle long before that, and detection is a per-character Python loop.
LANG_DETECT_CHARS = 2000


_TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def normalize_task(task: str | None) -> str | None:
    """Lowercase a record's task label and join words with underscores ("Code Review" -> "code_review").

    Raises ``RecordError`` (``invalid_field``) for a label that is still not a snake_case name, because
    every distinct label becomes its own mixture task and "Math" must not bypass the math checks.
    """
    if task is None or not task.strip():
        return None
    name = re.sub(r"[\s\-]+", "_", task.strip().lower())
    if not _TASK_NAME.match(name):
        raise RecordError(
            INVALID_FIELD, f"task {task!r} is not a task name; use lowercase letters, digits and underscores, e.g. math"
        )
    return name


class RecordError(ValueError):
    """A record cannot become a sample; ``reason`` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def normalize_turns(raw_turns: object) -> list[dict[str, str]]:
    """Turn ``{role, content}`` or ``{from, value}`` turns into ``{role, content}`` with our role names.

    Raises ``RecordError`` (``invalid_field``) for a turn that is not an object, an unknown role or
    a content that is not a string. A null content (an assistant turn that only called a tool)
    becomes an empty string.
    """
    if not isinstance(raw_turns, list):
        raise RecordError(INVALID_FIELD, f"messages is {type(raw_turns).__name__}, expected a list of turns")
    turns = []
    for index, turn in enumerate(raw_turns):
        if not isinstance(turn, dict):
            raise RecordError(INVALID_FIELD, f"messages[{index}] is {type(turn).__name__}, expected an object")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value", turn.get("text")))
        if not isinstance(role, str) or role.lower() not in ROLE_NAMES:
            raise RecordError(
                INVALID_FIELD, f"messages[{index}] has role {role!r}; known roles: {', '.join(sorted(ROLE_NAMES))}"
            )
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RecordError(
                INVALID_FIELD, f"messages[{index}].content is {type(content).__name__}, expected a string"
            )
        turns.append({"role": ROLE_NAMES[role.lower()], "content": content})
    return turns


def render_chat_prompt(turns: list[dict[str, str]]) -> str:
    """Render chat turns as one prompt string.

    A single user turn (after any system turns) stays as it is, with the system text and a blank
    line in front. Anything longer becomes one ``role: content`` line per turn, so the speaker of
    every turn stays visible.
    """
    system = [turn["content"] for turn in turns if turn["role"] == "system"]
    others = [turn for turn in turns if turn["role"] != "system"]
    if len(others) == 1 and others[0]["role"] == "user":
        return "\n\n".join([*system, others[0]["content"]])
    return "\n".join(f"{turn['role']}: {turn['content']}" for turn in turns)


def split_chat(turns: list[dict[str, str]]) -> tuple[str, str]:
    """Return (prompt, response) for chat turns: the last assistant turn and the turns before it."""
    last_assistant = max((i for i, turn in enumerate(turns) if turn["role"] == "assistant"), default=None)
    if last_assistant is None:
        raise RecordError(MISSING_FIELD, "response: messages has no assistant turn")
    before = turns[:last_assistant]
    if not any(turn["role"] != "system" for turn in before):
        raise RecordError(MISSING_FIELD, "prompt: messages has no user turn before the last assistant turn")
    return render_chat_prompt(before), turns[last_assistant]["content"]


class _RecordView:
    """Look up fields of one record by our column name, remembering which keys were used."""

    def __init__(self, record: dict[str, Any], field_map: dict[str, str]):
        self.record = record
        self.field_map = field_map
        self.used: set[str] = set()

    def take(self, ours: str, aliases: tuple[str, ...]) -> tuple[str | None, Any]:
        """Return (key, value) of the first non-null field among ``ours``'s names, or (None, None).

        Only the returned key counts as used; other aliases that are present stay in ``meta``.
        """
        names = (self.field_map[ours],) if ours in self.field_map else aliases
        for name in names:
            if self.record.get(name) is not None:
                self.used.add(name)
                return name, self.record[name]
        return None, None

    def take_text(self, ours: str, aliases: tuple[str, ...]) -> str | None:
        key, value = self.take(ours, aliases)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecordError(INVALID_FIELD, f"{ours} (field {key!r}) is {type(value).__name__}, expected a string")

    def require_text(self, ours: str, aliases: tuple[str, ...]) -> str:
        value = self.take_text(ours, aliases)
        if value is None:
            names = (self.field_map[ours],) if ours in self.field_map else aliases
            raise RecordError(MISSING_FIELD, f"{ours}: none of the fields {', '.join(names)} is present")
        return value

    def has(self, ours: str, aliases: tuple[str, ...]) -> bool:
        names = (self.field_map[ours],) if ours in self.field_map else aliases
        return any(self.record.get(name) is not None for name in names)


def detect_shape(view: _RecordView) -> str:
    """Pick the shape of one record for ``shape: auto``."""
    if "prompt" not in view.field_map and view.has("messages", MESSAGES_FIELDS):
        return "messages"
    if "prompt" not in view.field_map and view.has("instruction", FIELD_ALIASES["instruction"]):
        return "alpaca"
    return "prompt_response"


def map_record(record: dict[str, Any], source: "SourceConfig") -> dict[str, Any]:
    """Map one parsed record onto the sample columns (without ``sample_id`` and ``source``).

    Raises ``RecordError`` with reason ``missing_field`` or ``invalid_field``. ``meta`` is returned
    as a dict of every unused, non-null field.
    """
    view = _RecordView(record, dict(source.field_map))
    shape = detect_shape(view) if source.shape == "auto" else source.shape
    system = view.take_text("system", FIELD_ALIASES["system"])
    messages_json = None

    if shape == "messages":
        _, raw_turns = view.take("messages", MESSAGES_FIELDS)
        if raw_turns is None:
            raise RecordError(
                MISSING_FIELD, f"messages: none of the fields {', '.join(MESSAGES_FIELDS)} is present"
            )
        if isinstance(raw_turns, str):  # some exports store the turns as a JSON string
            try:
                raw_turns = json.loads(raw_turns)
            except ValueError as error:
                raise RecordError(INVALID_FIELD, f"messages is a string that is not JSON: {error}") from None
        turns = normalize_turns(raw_turns)
        if system:
            turns = [{"role": "system", "content": system}, *turns]
        prompt, response = split_chat(turns)
        messages_json = json.dumps(raw_turns, ensure_ascii=False)
    elif shape == "alpaca":
        instruction = view.require_text("instruction", FIELD_ALIASES["instruction"])
        extra_input = view.take_text("input", FIELD_ALIASES["input"])
        prompt = f"{instruction}\n\n{extra_input}" if extra_input else instruction
        response = view.require_text("response", ("output", "response"))
    else:
        prompt = view.require_text("prompt", PROMPT_FIELDS)
        response = view.require_text("response", RESPONSE_FIELDS)
    if system and shape != "messages":
        prompt = f"{system}\n\n{prompt}"

    row = {
        "origin_id": view.take_text("origin_id", FIELD_ALIASES["origin_id"]),
        "task": normalize_task(view.take_text("task", FIELD_ALIASES["task"])) or source.task,
        "lang": view.take_text("lang", FIELD_ALIASES["lang"]) or source.lang,
        "prompt": prompt,
        "response": response,
        "messages": messages_json,
        "reference": view.take_text("reference", FIELD_ALIASES["reference"]),
        "tests": view.take_text("tests", FIELD_ALIASES["tests"]),
        "entry_point": view.take_text("entry_point", FIELD_ALIASES["entry_point"]),
    }
    if row["lang"] is None:
        row["lang"] = detect_lang(f"{prompt}\n{response}"[:LANG_DETECT_CHARS])
    row["meta"] = {key: value for key, value in record.items() if key not in view.used and value is not None}
    return row
