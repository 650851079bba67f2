"""Rules between config fields, checked before any work starts.

A single field's type, choices and bounds are declared on the field itself
(constellation/protocol/config.py, checked when the config is loaded). What
one field cannot say alone is here: one ``Rule`` per relation, each a
function of the whole config -> an error line or None. ``constellation
config``, ``constellation up`` and ``constellation study`` run them all before
the base model is built, so a mismatch fails in a second, not after a warm
start of minutes.

Implementations declare what they fit with; nothing here branches on a
built-in name: a task module may define ``problem_tasks(task_cfg) -> tuple of
Problem.task values it makes``, a verifier class names the ``task`` it
accepts, a trainer class the data it ``wants``. The registry resolves them
(task and verifier modules import without torch).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import msgspec

from constellation.protocol.config import PATH_KINDS, Config, ConfigError
from constellation.runtime.registry import KINDS, NO_CRITIC, RegistryError, entries, resolve_role, resolve_task

CRITIC_POLICIES = ("critic", "critic_vote")  # selection policies that read critic scores


@dataclass(frozen=True)
class Rule:
    fields: tuple[str, ...]  # the fields the rule reads, for the reference in docs/configuration.md
    check: Callable[[Config], str | None]  # -> one error line naming fields, values and what is allowed


def _impls_are_known(cfg: Config) -> str | None:
    for kind in KINDS:
        impl = cfg.task.impl if kind == "task" else getattr(cfg, kind).impl
        if kind == "critic" and impl == NO_CRITIC:
            continue
        free_form = "." in impl if kind == "task" else ":" in impl  # an import path: the user's own class
        known = entries(kind)
        if impl not in known and not free_form:
            extra = ' or "package.module"' if kind == "task" else (
                ' or "package.module:Class"' + (f' or "{NO_CRITIC}"' if kind == "critic" else ""))
            return f'{kind}.impl = "{impl}": no such {kind}; allowed: {_quoted(known)}{extra}'
    return None


def _verifier_fits_task(cfg: Config) -> str | None:
    try:
        task = resolve_task(cfg.task.impl)
        verifier = resolve_role("verifier", cfg.verifier.impl)
    except RegistryError as e:
        return str(e)
    makes = getattr(task, "problem_tasks", None)
    accepts = getattr(verifier, "task", None)
    if makes is None or accepts is None:  # an implementation that declares nothing is not checked
        return None
    made = tuple(makes(cfg.task))
    if accepts in made:
        return None
    fitting = [name for name in entries("verifier") if getattr(_class_or_none(name), "task", None) in made]
    return (f'verifier.impl = "{cfg.verifier.impl}" verifies "{accepts}" problems, but task.impl = '
            f'"{cfg.task.impl}" makes {_quoted(made)} problems; allowed verifier.impl: '
            + (_quoted(fitting) or "a verifier of those problems"))


def _quoted(names) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _class_or_none(verifier: str) -> type | None:
    try:
        return resolve_role("verifier", verifier)
    except RegistryError:
        return None


def _selection_has_critic(cfg: Config) -> str | None:
    if cfg.coordinator.selection in CRITIC_POLICIES and cfg.critic.impl == NO_CRITIC:
        return (f'coordinator.selection = "{cfg.coordinator.selection}" ranks by critic scores, but critic.impl = '
                f'"{NO_CRITIC}"; allowed: a critic.impl other than "{NO_CRITIC}", or a selection without a critic '
                f'("best_of_k", "majority")')
    return None


def _pairs_have_critic(cfg: Config) -> str | None:
    if cfg.pairs.source != "critic" or cfg.critic.impl != NO_CRITIC:
        return None
    try:
        wants = getattr(resolve_role("trainer", cfg.trainer.impl), "wants", None)
    except RegistryError as e:
        return str(e)
    if wants != "pairs":  # this trainer builds no pairs: pairs.source is not read
        return None
    return (f'pairs.source = "critic" ranks by critic scores, but critic.impl = "{NO_CRITIC}"; allowed: '
            f'pairs.source = "verifier" or "self_judge", or a critic')


def _quantization_is_installed(cfg: Config) -> str | None:
    if cfg.model.quantization == "none" or importlib.util.find_spec("bitsandbytes") is not None:
        return None
    return (f'model.quantization = "{cfg.model.quantization}" needs bitsandbytes, which is not installed '
            f'(pip install -e ".[qlora]"); allowed without it: "none"')


def _eval_ks_fit_samples(cfg: Config) -> str | None:
    too_big = [k for k in cfg.eval.ks if k > cfg.eval.n_samples]
    if too_big:
        return (f"eval.ks = {cfg.eval.ks} has k = {too_big} above eval.n_samples = {cfg.eval.n_samples} "
                f"(pass@k needs n >= k samples); allowed: each k <= eval.n_samples")
    return None


def _zpd_is_a_range(cfg: Config) -> str | None:
    if cfg.eval.zpd_low > cfg.eval.zpd_high:
        return (f"eval.zpd_low = {cfg.eval.zpd_low} is above eval.zpd_high = {cfg.eval.zpd_high}; "
                f"allowed: zpd_low <= zpd_high")
    return None


def _validation_leaves_training(cfg: Config) -> str | None:
    g, n_train = cfg.guard, cfg.task.n_train
    if g.enabled and g.val_problems >= n_train:
        return (f"guard.val_problems = {g.val_problems} takes the whole training pool (task.n_train = {n_train}); "
                f"allowed: guard.val_problems < task.n_train, or guard.enabled = false")
    return None


def _trainer_budget_fits_a_step(cfg: Config) -> str | None:
    seconds = cfg.trainer.max_seconds
    if 0 < seconds < 1:
        return (f"trainer.max_seconds = {seconds} is shorter than loading the base model; "
                f"allowed: 0 (no time budget) or >= 1")
    return None


def declared_paths() -> list[tuple[str, str, tuple[str, ...]]]:
    """(section.key, kind, words) of every field declared ``path=<kind>`` in the config schema."""
    out = []
    for section in msgspec.inspect.type_info(Config).fields:
        for f in section.type.fields:
            extra = getattr(f.type, "extra", None) or {}
            if "path" in extra:
                out.append((f"{section.name}.{f.name}", extra["path"], tuple(extra["words"])))
    return out


def path_fields(cfg: Config) -> Iterator[tuple[str, str, str, tuple[str, ...]]]:
    """(section.key, value, kind, words) of every set path field (not "" and not one of its words)."""
    for key, kind, words in declared_paths():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value and value not in words:
            yield key, value, kind, words


def _kind_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` is not of ``kind`` -> words, None when it is (or may become it)."""
    if not path.exists():
        if kind == "folder":  # made when missing: the nearest thing above it must be a folder we may write in
            above = next((p for p in path.absolute().parents if p.exists()), None)
            why = None if above is None else _kind_problem(above, kind)
            return None if why is None else f"{above} is {why}"
        return None if kind == "model" else "no such file or folder"
    if kind == "model" and path.is_file() and path.suffix.lower() != ".gguf":
        return "a file, not a model folder or a .gguf file"
    if kind == "folder" and not path.is_dir():
        return "a file, not a folder"
    if kind == "folder" and not os.access(path, os.W_OK | os.X_OK):
        return "not writable"
    if kind in ("file", "executable") and not path.is_file():
        return "a folder, not a file"
    if kind == "executable" and not os.access(path, os.X_OK):
        return "not executable"
    if not os.access(path, os.R_OK):
        return "not readable"
    return None


def path_problems(cfg: Config, must_exist: bool = True) -> list[str]:
    """One line per path field whose value is not of its declared kind.
    ``must_exist=False``: only a thing of the wrong kind counts, not a missing
    one (a preset may name a file the user has yet to provide)."""
    found = []
    for key, value, kind, words in path_fields(cfg):
        why = _kind_problem(Path(value).expanduser(), kind)
        if why is not None and (must_exist or why != "no such file or folder"):
            allowed = "".join(f'"{w}", ' for w in words) + PATH_KINDS[kind]
            found.append(f"{key} = {json.dumps(value)}: {why}; allowed: {allowed}")
    return found


def _paths_are_of_their_kind(cfg: Config) -> str | None:
    found = path_problems(cfg, must_exist=False)
    return found[0] if found else None


def _launcher_is_installed(cfg: Config) -> str | None:
    if cfg.launch.launcher != "ray" or importlib.util.find_spec("ray") is not None:
        return None
    return ('launch.launcher = "ray" needs ray, which is not installed (pip install -e \'.[ray]\'); '
            'allowed without it: "local"')


def _ray_reaches_hosts(cfg: Config) -> str | None:
    if cfg.launch.launcher != "ray" or cfg.run.transport == "tcp":
        return None
    return (f'run.transport = "{cfg.run.transport}" cannot reach other hosts: launch.launcher = "ray" needs '
            f'run.transport = "tcp"; allowed with "ipc": launch.launcher = "local"')


RULES: tuple[Rule, ...] = (
    Rule(("generator.impl", "verifier.impl", "critic.impl", "trainer.impl", "task.impl"), _impls_are_known),
    Rule(("task.impl", "verifier.impl"), _verifier_fits_task),
    Rule(("coordinator.selection", "critic.impl"), _selection_has_critic),
    Rule(("pairs.source", "critic.impl", "trainer.impl"), _pairs_have_critic),
    Rule(("model.quantization",), _quantization_is_installed),
    Rule(("eval.ks", "eval.n_samples"), _eval_ks_fit_samples),
    Rule(("eval.zpd_low", "eval.zpd_high"), _zpd_is_a_range),
    Rule(("guard.val_problems", "task.n_train", "guard.enabled"), _validation_leaves_training),
    Rule(("trainer.max_seconds",), _trainer_budget_fits_a_step),
    Rule(tuple(key for key, _, _ in declared_paths()), _paths_are_of_their_kind),
    Rule(("launch.launcher",), _launcher_is_installed),
    Rule(("launch.launcher", "run.transport"), _ray_reaches_hosts),
)


def problems(cfg: Config) -> list[str]:
    """Every rule's error line for this config (empty: it is consistent). The
    first rule (known implementations) runs alone when it fails: the others
    would only repeat its error."""
    first = RULES[0].check(cfg)
    if first is not None:
        return [first]
    return [error for rule in RULES[1:] if (error := rule.check(cfg)) is not None]


def check_config(cfg: Config) -> Config:
    """-> cfg, or ConfigError with the first inconsistency (and how many more)."""
    found = problems(cfg)
    if found:
        more = f" (and {len(found) - 1} more: constellation config lists them)" if len(found) > 1 else ""
        raise ConfigError(found[0] + more)
    return cfg
