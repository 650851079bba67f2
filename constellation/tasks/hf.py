"""The "hf" task: question/answer records from local Hugging Face ``datasets`` sources.

Sources (``task.train_source``, ``task.eval_source``; nothing is downloaded):
    *.json, *.jsonl     datasets' "json" builder
    *.parquet           datasets' "parquet" builder
    *.arrow             Dataset.from_file
    a folder            load_from_disk; a DatasetDict folder gives the split
                        ``task.train_split`` / ``task.eval_split``

A record becomes a Problem (task "math": the "math" and "math_verify"
verifiers and a "reward" function all read it) through the field map
``task.fields``:
    prompt    required: the question; the prompt is ``task.prompt_format``
              with "{prompt}" replaced by it
    answer    required: str or number; the gold answer is read as
              ``task.answer_format`` says: "gsm8k" (after the last "####",
              thousands commas dropped), "boxed" (the last \\boxed{}),
              "plain" (the text), "auto" (the first of these that applies)
    solution  optional: a worked solution (warm start, rationalization)
    difficulty optional: a non-negative int level (the probe reports pass@1 per level)
  A GSM8K/MATH answer gives its worked solution as well; the warm-start
  target is that solution followed by the answer in the form ``task.extract``
  reads (e.g. "\\boxed{72}" for last_boxed), so what the model learns to write
  is what the verifier reads.

Problem ids: "train-<index>" and "eval-<index>", the index of the record in
its source, so a log line names the record. Problem.data: {"answer": gold,
"extract": task.extract, "solution": ... when there is one}.

Splits: eval = the first ``n_eval`` records of the eval source after a
seeded shuffle; train and labeled = the first ``n_train`` and the next
``n_labeled`` records of the train source (shuffled alike), or, without a
train source, the eval source's records after the eval set. A train record
whose prompt is also an eval prompt is left out (counted in the log), so
eval problems are never trained on.

Bad records (a missing or empty field, a wrong type, no gold answer) are
named by source and index: ``task.bad_records = "refuse"`` stops with that
line; "skip" logs one warning per record and goes on. None is dropped silently.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Iterator

from constellation.protocol.config import TaskConfig
from constellation.protocol.messages import Problem, Split
from constellation.tasks.jsonl import (CALCULATOR_NOTE, THOUSANDS, critic_text, hint_prompt,  # noqa: F401
                                      json_objects)
from verifiers.completion import check_rule
from verifiers.math.extract import last_boxed

log = logging.getLogger("task.hf")
ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "plain")
BAD_RECORDS = ("refuse", "skip")
FIELD_PARTS = ("prompt", "answer", "solution", "difficulty")


class HfTaskError(ValueError):
    """A source or a record of an "hf" task that cannot become problems."""


def open_source(source: str, split: str):
    """A local datasets source -> a ``datasets.Dataset`` (see the module docstring)."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # a local file never needs the hub
    import datasets

    path = Path(source).expanduser()
    if not path.exists():
        raise HfTaskError(f"task source {source!r}: no such file or folder (sources are local)")
    if path.is_dir():
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise HfTaskError(f"task source {source!r}: no split {split!r} (splits: {', '.join(data)})")
            data = data[split]
        return data
    builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(path.suffix)
    if path.suffix == ".arrow":
        return datasets.Dataset.from_file(str(path))
    if builder is None:
        raise HfTaskError(f"task source {source!r}: unknown kind {path.suffix!r} "
                          f"(.json, .jsonl, .parquet, .arrow or a save_to_disk folder)")
    if path.suffix == ".jsonl":  # every line an object: a bad one is named by file:line, not by a datasets error
        for _ in json_objects(path):
            pass
    datasets.disable_progress_bars()  # a start prints one error line or its config, not a bar per file
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # datasets wraps the cause (pyarrow, json) in errors of its own: name the innermost
        clash = _type_clash(path) if path.suffix == ".jsonl" else None
        if clash:
            raise HfTaskError(clash) from None
        cause: BaseException = e
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        raise HfTaskError(f"task source {source!r}: not a readable {builder} file ({type(cause).__name__}: "
                          f"{str(cause)[:200]})") from None


def gold_answer(raw: Any, answer_format: str) -> tuple[str, str | None]:
    """An answer field -> (gold answer, worked solution or None). ValueError when there is no gold."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"answer must be a string or a number, got {type(raw).__name__}")
    text = str(raw)
    if answer_format in ("auto", "gsm8k") and "####" in text:
        body, _, gold = text.rpartition("####")
        return THOUSANDS.sub("", gold.strip()), CALCULATOR_NOTE.sub("", body).strip() or None
    if answer_format == "gsm8k":
        raise ValueError("answer has no '#### <answer>' line")
    box = last_boxed(text) if answer_format in ("auto", "boxed") else None
    if box is not None:
        return box.strip(), text.strip()
    if answer_format == "boxed":
        raise ValueError("answer has no \\boxed{...}")
    return text.strip(), None


def answer_line(gold: str, extract: str) -> str:
    """How a worked solution states its answer so that the ``extract`` rule reads it back."""
    if extract == "last_boxed":
        return f"The answer is \\boxed{{{gold}}}."
    if extract.startswith("after:"):
        return f"{extract[len('after:'):]} {gold}"
    return f"The answer is {gold}." if extract != "last_line" else gold


def to_problem(record: dict[str, Any], pid: str, cfg: TaskConfig) -> Problem:
    """One record -> a Problem; ValueError naming the field for a bad record."""
    fields = cfg.fields
    question = record.get(fields["prompt"])
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"field {fields['prompt']!r} (prompt) is missing, empty or not a string")
    raw = record.get(fields["answer"])
    if raw is None:
        raise ValueError(f"field {fields['answer']!r} (answer) is missing")
    gold, worked = gold_answer(raw, cfg.answer_format)
    if not gold:
        raise ValueError(f"field {fields['answer']!r} holds no final answer ({str(raw)[-40:]!r})")
    given = record.get(fields["solution"]) if "solution" in fields else None
    if given is not None and not isinstance(given, str):
        raise ValueError(f"field {fields['solution']!r} (solution) must be a string, got {type(given).__name__}")
    worked = given.strip() if given and given.strip() else worked
    data: dict[str, Any] = {"answer": gold, "extract": cfg.extract}
    if worked:
        data["solution"] = f"{worked}\n{answer_line(gold, cfg.extract)}"
    prompt = cfg.prompt_format.replace("{prompt}", question.strip())
    return Problem(id=pid, task="math", prompt=prompt, reference=gold, data=data,
                   difficulty=difficulty_of(record, fields))


def difficulty_of(record: dict[str, Any], fields: dict[str, str]) -> int:
    """The optional ``difficulty`` field (a non-negative int; 0 when the map has none):
    the probe and the results break pass@k down by it."""
    if "difficulty" not in fields:
        return 0
    level = record.get(fields["difficulty"])
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"field {fields['difficulty']!r} (difficulty) must be a non-negative integer, got {level!r}")
    return level


def problems_of(source: str, split: str, kind: str, cfg: TaskConfig) -> Iterator[Problem]:
    """Every good record of a source as a Problem, in source order; bad ones refused or skipped."""
    for index, record in enumerate(open_source(source, split)):
        try:
            yield to_problem(record, f"{kind}-{index}", cfg)
        except ValueError as e:
            where = f"{_line_of(source, index)} ({split}) record {index}"
            if cfg.bad_records == "refuse":
                raise HfTaskError(f"{where}: {e} (task.bad_records = \"skip\" skips such records)") from e
            log.warning("%s skipped: %s", where, e)


def _type_clash(path: Path) -> str | None:
    """The first ``file:line`` whose field has another JSON type than on an earlier line
    (pyarrow refuses such a file with a row number that skips blank lines) -> words, or None."""
    kinds = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    first: dict[str, tuple[str, int]] = {}
    for lineno, where, obj in json_objects(path):
        for key, value in obj.items():
            if value is None:
                continue
            kind = kinds.get(type(value), type(value).__name__)
            seen, at = first.setdefault(key, (kind, lineno))
            if seen != kind:
                return (f"{where}: field {key!r} is a {kind}, but a {seen} on line {at}; "
                        f"every line gives a field one type")
    return None


def _line_of(source: str, index: int) -> str:
    """``file:line`` of record ``index`` of a .jsonl source (datasets skips blank lines, as
    json_objects does), else the source: the place a user opens to fix a bad record."""
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        lines = [lineno for lineno, _, _ in json_objects(path)]
        if index < len(lines):
            return f"{source}:{lines[index]}"
    return source


def check_config(cfg: TaskConfig) -> None:
    if not cfg.eval_source:
        raise HfTaskError('task.impl = "hf" needs task.eval_source (a local datasets source)')
    missing = [k for k in ("prompt", "answer") if k not in cfg.fields]
    if missing:
        raise HfTaskError(f"task.fields = {dict(cfg.fields)} lacks {', '.join(missing)}")
    unknown = sorted(set(cfg.fields) - set(FIELD_PARTS))
    if unknown:
        raise HfTaskError(f"task.fields: unknown parts {unknown} (known: {', '.join(FIELD_PARTS)})")
    if cfg.answer_format not in ANSWER_FORMATS:
        raise HfTaskError(f"task.answer_format = {cfg.answer_format!r}: expected one of {ANSWER_FORMATS}")
    if cfg.bad_records not in BAD_RECORDS:
        raise HfTaskError(f"task.bad_records = {cfg.bad_records!r}: expected one of {BAD_RECORDS}")
    if "{prompt}" not in cfg.prompt_format:
        raise HfTaskError(f"task.prompt_format = {cfg.prompt_format!r} has no {{prompt}}")
    check_rule(cfg.extract)


def make_split(cfg: TaskConfig, seed: int) -> Split:
    check_config(cfg)
    rng = random.Random(f"hf/{seed}")
    ev_pool = list(problems_of(cfg.eval_source, cfg.eval_split, "eval", cfg))
    rng.shuffle(ev_pool)
    ev = ev_pool[:cfg.n_eval]
    if not ev:
        raise HfTaskError(f"{cfg.eval_source}: no usable evaluation record (task.n_eval = {cfg.n_eval})")
    if cfg.train_source:
        pool = list(problems_of(cfg.train_source, cfg.train_split, "train", cfg))
        rng.shuffle(pool)
    else:
        pool = ev_pool[cfg.n_eval:]
    eval_prompts = {p.prompt for p in ev}
    kept = [p for p in pool if p.prompt not in eval_prompts]
    if len(kept) < len(pool):
        log.warning("%d training records left out: their prompt is an evaluation prompt", len(pool) - len(kept))
    train = kept[:cfg.n_train]
    labeled = [p for p in kept[cfg.n_train:cfg.n_train + cfg.n_labeled] if "solution" in p.data]
    return Split(labeled=labeled, train=train, eval=ev)
