"""task.impl = "hf": local datasets sources, a field map, answer formats,
separate train/eval sources, bad records named and refused or skipped; the
extraction rules; the GSM8K test split of ../shared/data/gsm8k as real input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from constellation.protocol.config import TaskConfig
from constellation.tasks import hf
from verifiers.completion import check_rule, extract

GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg(**kw) -> TaskConfig:
    return TaskConfig(impl="hf", **{"n_eval": 3, "n_train": 4, "n_labeled": 2, **kw})


def qa(n: int, prefix: str = "q") -> list[dict]:
    return [{"problem": f"{prefix} {i}?", "sol": f"{i}+0=<<{i}+0={i}>>{i}\n#### {i:,}"} for i in range(n)]


def test_field_map_and_gsm8k_answers_become_math_problems(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", qa(10))
    split = hf.make_split(cfg(eval_source=str(src), fields={"prompt": "problem", "answer": "sol"},
                              extract="last_boxed", prompt_format="Solve: {prompt}"), 0)
    assert (len(split.eval), len(split.train), len(split.labeled)) == (3, 4, 2)
    p = split.eval[0]
    i = int(p.id.split("-")[1])
    assert p.task == "math" and p.reference == str(i) and p.prompt == f"Solve: q {i}?"
    assert p.data["extract"] == "last_boxed"
    assert "<<" not in p.data["solution"] and extract("last_boxed", p.data["solution"]) == str(i)
    ids = [x.id for x in split.eval + split.train + split.labeled]
    assert len(set(ids)) == len(ids)  # disjoint


def test_separate_train_source_and_eval_prompts_never_trained(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", qa(6, "t") + qa(2, "e"))  # 2 records repeat eval prompts
    ev = write_jsonl(tmp_path / "test.jsonl", qa(2, "e"))
    split = hf.make_split(cfg(train_source=str(train), eval_source=str(ev), n_train=20,
                              fields={"prompt": "problem", "answer": "sol"}), 1)
    assert all(p.id.startswith("train-") for p in split.train)
    assert len(split.train) == 6 and not {p.prompt for p in split.train} & {p.prompt for p in split.eval}


def test_parquet_arrow_and_save_to_disk_sources(tmp_path):
    import datasets

    rows = qa(5)
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(3))}).save_to_disk(str(tmp_path / "dd"))
    fields = {"prompt": "problem", "answer": "sol"}
    assert len(hf.make_split(cfg(eval_source=str(tmp_path / "d.parquet"), fields=fields), 0).eval) == 3
    split = hf.make_split(cfg(eval_source=str(tmp_path / "dd"), eval_split="test", train_source=str(tmp_path / "dd"),
                              fields=fields, n_train=10), 0)
    assert len(split.eval) == 3 and len(split.train) == 2  # 5 train records minus the 3 eval prompts
    arrow = next((tmp_path / "dd" / "train").glob("*.arrow"))
    assert len(hf.make_split(cfg(eval_source=str(arrow), fields=fields), 0).eval) == 3
    with pytest.raises(hf.HfTaskError, match="no split 'dev'"):
        hf.make_split(cfg(eval_source=str(tmp_path / "dd"), eval_split="dev", fields=fields), 0)


def test_bad_records_are_named_and_refused_or_skipped(tmp_path, caplog):
    rows = qa(4)
    rows[2] = {"problem": "", "sol": "#### 1"}
    rows.insert(1, {"problem": "x?", "sol": "no final line"})
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    fields = {"prompt": "problem", "answer": "sol"}
    with pytest.raises(hf.HfTaskError, match=r"d\.jsonl:2 \(test\) record 1: .*####"):
        hf.make_split(cfg(eval_source=str(src), fields=fields, answer_format="gsm8k"), 0)
    with caplog.at_level(logging.WARNING, logger="task.hf"):
        split = hf.make_split(cfg(eval_source=str(src), fields=fields, answer_format="gsm8k",
                                  bad_records="skip", n_eval=10), 0)
    assert len(split.eval) == 3
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2 and any("record 1" in m for m in skipped) and any("record 3" in m for m in skipped)


def test_config_errors_name_the_setting(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", qa(3))
    for kw, word in [({"fields": {"prompt": "problem"}}, "lacks answer"), ({"answer_format": "latex"}, "answer_format"),
                     ({"extract": "first_word"}, "task.extract"), ({"prompt_format": "Q:"}, "prompt_format")]:
        with pytest.raises(ValueError, match=word):
            hf.make_split(cfg(eval_source=str(src), **kw), 0)
    with pytest.raises(hf.HfTaskError, match="no such file"):
        hf.make_split(cfg(eval_source=str(tmp_path / "missing.jsonl")), 0)


def test_extraction_rules():
    text = "First 1,200 apples.\nSo \\boxed{\\frac{1}{2}} then\n#### 1,234\n"
    assert extract("last_boxed", text) == "\\frac{1}{2}"
    assert extract("last_line", text) == "#### 1,234"
    assert extract("last_number", text) == "1234"
    assert extract("after:####", text) == "1,234"
    assert extract("full", "  a b ") == "a b"
    assert extract("last_boxed", "none") is None and extract("after:####", "none") is None
    assert extract("last_boxed", "\\boxed{" * 50_000) is None  # unbalanced and deep: no answer, no error
    check_rule("after:The answer is")
    with pytest.raises(ValueError, match="after:MARKER"):
        check_rule("after:")


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="../shared/data/gsm8k is not on this machine")
def test_gsm8k_test_split_loads_with_the_default_field_map():
    split = hf.make_split(cfg(eval_source=str(GSM8K_TEST), n_eval=200, n_train=1000, n_labeled=119), 0)
    assert (len(split.eval), len(split.train), len(split.labeled)) == (200, 1000, 119)
    assert all(p.reference and "," not in p.reference and "####" not in p.reference for p in split.eval)
    janet = hf.to_problem(json.loads(GSM8K_TEST.read_text().splitlines()[0]), "eval-0", cfg())
    assert janet.reference == "18"
