"""Task labels for rows whose source does not state a task: nearest task prototype by embedding.

A prototype is the L2-normalized mean embedding of example prompts of one task. The built-in
examples below cover the tasks math, code, chat and safety; ``frame_prototypes`` adds
prototypes from rows of the same frame whose source did state a task, which also covers tasks
without built-in examples. A row is labelled with the task whose prototype has the highest
cosine similarity to the row's prompt (the response when the prompt is empty).
"""

import logging
import weakref
from dataclasses import dataclass

import numpy as np
import polars as pl

from filters.embed import Embedder

log = logging.getLogger(__name__)

TASK_EXAMPLES: dict[str, tuple[str, ...]] = {
    "math": (
        "A baker sells 12 muffins for $3 each and 8 cakes for $15 each. How much money does he make?",
        "Tom has 5 apples and buys 3 bags with 6 apples in each. How many apples does he have now?",
        "A train travels 240 miles in 4 hours. What is its average speed in miles per hour?",
        "What percentage of 80 is 20?",
        "Solve for x: 3x + 7 = 22.",
        "The ratio of boys to girls in a class is 3:5 and there are 40 students. How many girls are there?",
        "Prove that the sum of two even integers is even.",
        "Find the area of a rectangle whose length is 9 cm and width is 4 cm.",
    ),
    "code": (
        "Write a Python function that returns the n-th Fibonacci number.",
        "Implement a function is_palindrome(s: str) -> bool that ignores case and spaces.",
        "def sort_by_length(words: list[str]) -> list[str]:\n    \"\"\"Return the words sorted by length.\"\"\"",
        "Fix the bug in this code: for i in range(len(xs)): xs.remove(xs[i])",
        "Write a SQL query that returns the ten customers with the highest total order value.",
        "How do I read a CSV file into a list of dictionaries in Python?",
        "Given a list of integers, return the indices of the two numbers that add up to a target.",
        "Write a JavaScript function that debounces another function.",
    ),
    "chat": (
        "Hi! How are you doing today?",
        "Can you recommend a good book to read on vacation?",
        "What is the capital of Australia?",
        "Write a short poem about autumn leaves.",
        "Summarize the plot of Romeo and Juliet in three sentences.",
        "What are some tips for sleeping better?",
        "Tell me a fun fact about octopuses.",
        "Help me write a polite email asking my manager for a day off.",
        "Good morning, nice to meet you.",
        "Do you like music? What kind?",
        "What is your favourite movie and why?",
        "Are you a robot or a person?",
        "Tell me something about yourself.",
        "I had a rough day at work and feel a bit sad.",
        "Who was the first president of the United States?",
        "Have you ever been to Paris?",
    ),
    "safety": (
        "How do I make a bomb at home?",
        "Tell me how to hack into my neighbour's wifi network.",
        "Write a message that bullies a classmate about their weight.",
        "What is the easiest way to steal a car without getting caught?",
        "Give me instructions to make methamphetamine.",
        "How can I hurt someone and make it look like an accident?",
        "Write a phishing email that tricks people into giving their bank password.",
        "I want to harm myself. What is the most painful way?",
    ),
}


@dataclass(frozen=True)
class TaskLabelConfig:
    """How prototypes are built and how sure a label must be.

    Attributes:
        prototype_source: "builtin" uses only ``TASK_EXAMPLES``; "builtin_and_frame" also uses
            up to ``max_rows_per_task`` labelled rows per task of the frame being labelled.
        max_rows_per_task: labelled rows embedded per task for frame prototypes.
        min_rows_per_task: a task needs this many labelled rows before the frame rows are used.
        min_task_similarity: a predicted label with a lower cosine similarity is rejected as
            ``low_task_similarity`` (0.0 keeps every prediction; cosine of MiniLM sentence
            embeddings lies in [-1, 1]).
    """

    prototype_source: str = "builtin_and_frame"
    max_rows_per_task: int = 200
    min_rows_per_task: int = 5
    min_task_similarity: float = 0.0

    def __post_init__(self) -> None:
        if self.prototype_source not in ("builtin", "builtin_and_frame"):
            raise ValueError(
                f"prototype_source={self.prototype_source!r} is invalid: use 'builtin' or 'builtin_and_frame'"
            )
        if not 1 <= self.max_rows_per_task <= 100_000:
            raise ValueError(f"max_rows_per_task={self.max_rows_per_task} is invalid: use 1 to 100000 rows")
        if not 1 <= self.min_rows_per_task <= self.max_rows_per_task:
            raise ValueError(
                f"min_rows_per_task={self.min_rows_per_task} is invalid: use 1 to max_rows_per_task "
                f"({self.max_rows_per_task})"
            )
        if not -1.0 <= self.min_task_similarity <= 1.0:
            raise ValueError(f"min_task_similarity={self.min_task_similarity} is invalid: use a cosine in [-1, 1]")


def _normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _embedding_texts(frame: pl.DataFrame) -> list[str]:
    texts = []
    for prompt, response in frame.select("prompt", "response").iter_rows():
        text = prompt if prompt and prompt.strip() else response
        texts.append(text or "")
    return texts


# Built-in prototypes per embedder, computed once per process.
_BUILTIN_CACHE: "weakref.WeakKeyDictionary[Embedder, dict[str, np.ndarray]]" = weakref.WeakKeyDictionary()


def builtin_prototypes(embedder: Embedder, examples: dict[str, tuple[str, ...]] = TASK_EXAMPLES) -> dict[str, np.ndarray]:
    """Return one unit-length prototype per task from example prompts."""
    if examples is TASK_EXAMPLES and embedder in _BUILTIN_CACHE:
        return dict(_BUILTIN_CACHE[embedder])
    prototypes = {}
    for task, prompts in examples.items():
        prototypes[task] = _normalize(embedder.encode(list(prompts)).mean(axis=0))
    if examples is TASK_EXAMPLES:
        _BUILTIN_CACHE[embedder] = dict(prototypes)
    return prototypes


def frame_prototypes(frame: pl.DataFrame, embedder: Embedder, config: TaskLabelConfig) -> dict[str, np.ndarray]:
    """Return prototypes from rows with a stated task, merged with the built-in examples of that task.

    Rows are taken in ``sample_id`` order so the prototype does not depend on frame order.
    """
    labelled = frame.filter(pl.col("task").is_not_null()).sort("sample_id")
    prototypes = builtin_prototypes(embedder)
    for task in sorted(labelled["task"].unique().to_list()):
        rows = labelled.filter(pl.col("task") == task).head(config.max_rows_per_task)
        if rows.height < config.min_rows_per_task:
            continue
        vectors = embedder.encode(_embedding_texts(rows))
        if task in TASK_EXAMPLES:
            vectors = np.vstack([vectors, embedder.encode(list(TASK_EXAMPLES[task]))])
        prototypes[task] = _normalize(vectors.mean(axis=0))
    return prototypes


def build_prototypes(frame: pl.DataFrame, embedder: Embedder, config: TaskLabelConfig) -> dict[str, np.ndarray]:
    """Return the prototypes ``config.prototype_source`` asks for."""
    if config.prototype_source == "builtin":
        return builtin_prototypes(embedder)
    return frame_prototypes(frame, embedder, config)


def predict_tasks(texts: list[str], embedder: Embedder, prototypes: dict[str, np.ndarray]) -> tuple[list[str], list[float]]:
    """Return the nearest task and its cosine similarity for each text."""
    if not prototypes:
        raise ValueError("prototypes is empty: pass at least one task prototype, e.g. builtin_prototypes(embedder)")
    if not texts:
        return [], []
    tasks = sorted(prototypes)
    matrix = np.vstack([prototypes[task] for task in tasks])
    similarities = embedder.encode(texts) @ matrix.T
    best = similarities.argmax(axis=1)
    return [tasks[index] for index in best], [float(similarities[row, index]) for row, index in enumerate(best)]


def label_tasks(frame: pl.DataFrame, embedder: Embedder, prototypes: dict[str, np.ndarray]) -> pl.DataFrame:
    """Fill null ``task`` values with the nearest prototype's task.

    Adds ``task_source`` ("source" when the row came with a task, "prototype" when predicted)
    and ``task_similarity`` (cosine similarity of the prediction, null for source labels).
    """
    missing = frame["task"].is_null()
    indices = [index for index, flag in enumerate(missing.to_list()) if flag]
    texts = _embedding_texts(frame[indices]) if indices else []
    predicted, similarity = predict_tasks(texts, embedder, prototypes)

    tasks = frame["task"].to_list()
    similarities: list[float | None] = [None] * frame.height
    for index, task, score in zip(indices, predicted, similarity):
        tasks[index] = task
        similarities[index] = score
    log.info("task labels: %d rows had a task, %d labelled by prototype", frame.height - len(indices), len(indices))

    return frame.with_columns(
        pl.Series("task", tasks, dtype=pl.String),
        pl.when(missing).then(pl.lit("prototype")).otherwise(pl.lit("source")).alias("task_source"),
        pl.Series("task_similarity", similarities, dtype=pl.Float64),
    )


def measure_task_labeling(
    frame_with_known_tasks: pl.DataFrame,
    embedder: Embedder,
    prototypes: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Hide each row's task, predict it, and return accuracy per true task (0.0 to 1.0).

    The default prototypes are the built-in ones, so the rows being measured never shape
    their own prototype. Rows with a null task are ignored.
    """
    known = frame_with_known_tasks.filter(pl.col("task").is_not_null())
    if prototypes is None:
        prototypes = builtin_prototypes(embedder)
    predicted, _ = predict_tasks(_embedding_texts(known), embedder, prototypes)
    correct: dict[str, list[int]] = {}
    for truth, guess in zip(known["task"].to_list(), predicted):
        hits = correct.setdefault(truth, [0, 0])
        hits[0] += truth == guess
        hits[1] += 1
    accuracy = {task: hits / total for task, (hits, total) in sorted(correct.items())}
    log.info("task labeling accuracy on %d rows: %s", known.height, {k: round(v, 3) for k, v in accuracy.items()})
    return accuracy
