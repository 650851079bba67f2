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
from dataclasses import dataclass
from typing import Callable

from constellation.protocol.config import Config, ConfigError
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
