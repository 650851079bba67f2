"""Role and task implementations, by short name, plugin name or import path.

A config picks an implementation with ``impl = "hf"`` (a name below) or with
an import path ``"package.module:Class"``, so a user swaps a role without
touching the project. Names map to import paths; nothing is imported until a
role process resolves its own implementation.

Plugins: an installed distribution registers more names through the
entry-point groups ``constellation.<role>s`` (``constellation.verifiers``,
``constellation.generators``, ...; value ``"package.module:Class"``) and
``constellation.tasks`` (value ``"package.module"``). A built-in name wins
over a plugin of the same name.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

ROLES: dict[str, dict[str, tuple[str, str]]] = {
    "generator": {
        "hf": ("roles.generator_hf:HfGenerator", "transformers sampling on CPU/GPU; hot-loads peft adapters"),
        "vllm": ("roles.generator_vllm:VllmGenerator", "one vLLM engine; each adapter version hot-swapped as a LoRARequest"),
    },
    "verifier": {
        "dsl": ("roles.verifier_dsl:DslVerifier", "exact verifier of the string DSL (own safe interpreter)"),
        "code": ("roles.verifier_code:CodeVerifier", "Python code against tests in a sandboxed child (rlimits, deadline)"),
        "arithmetic": ("roles.verifier_arithmetic:ArithmeticVerifier", "the arithmetic task: the last answer line against the true result"),
        "math": ("roles.verifier_math:MathVerifier", "final math answers against Problem.reference (sympy, isolated workers)"),
    },
    "critic": {
        "small": ("roles.critic_learned:SmallCritic", "own tiny byte-level transformer + scalar head, trained online on verifier labels"),
        "learned": ("roles.critic_learned:SmallCritic", "the same as small (its earlier name)"),
        "policy_head": ("roles.critic_policy_head:PolicyHeadCritic", "LoRA + scalar head on the policy's frozen base weights, trained online"),
    },
    "trainer": {
        "star": ("roles.trainer_star:StarTrainer", "STaR/RFT: LoRA SFT on selected candidates (completion-only loss)"),
        "dpo": ("roles.trainer_dpo:DpoTrainer", "iterative DPO/IPO with LoRA on preference pairs (constellation.pairs)"),
    },
}

TASKS: dict[str, tuple[str, str]] = {  # module with make_split() and critic_text()
    "dsl": ("verifiers.dsl_tasks", "FlashFill-style string programs with held-out inputs"),
    "arithmetic": ("verifiers.arithmetic", "multi-digit + and * with a scratchpad, graded on the answer (STaR)"),
    "jsonl": ("verifiers.jsonl_tasks", "a local JSONL task set (task.path): math questions or code against tests"),
}

WORKER_ROLES = ("generator", "verifier", "critic", "trainer")
ALL_ROLES = ("coordinator", *WORKER_ROLES)


class RegistryError(LookupError):
    pass


def import_path(path: str) -> Any:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise RegistryError(f"import path must look like 'package.module:Name', got {path!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise RegistryError(f"cannot import {path!r}: {e}") from e


def plugin_group(role: str) -> str:
    """The entry-point group of a role ("verifier" -> "constellation.verifiers") or of tasks."""
    return "constellation.tasks" if role == "task" else f"constellation.{role}s"


def plugins(role: str) -> dict[str, tuple[str, str]]:
    """Installed plugins of a role (or "task"): name -> (import path, source),
    source = "plugin <distribution> <version>"."""
    out = {}
    for ep in entry_points(group=plugin_group(role)):
        dist = getattr(ep, "dist", None)
        source = f"plugin {dist.name} {dist.version}" if dist is not None else "plugin"
        out.setdefault(ep.name, (ep.value, source))
    return out


def role_path(role: str, impl: str) -> str:
    if ":" in impl:
        return impl
    known = ROLES.get(role)
    if known is None:
        raise RegistryError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if impl in known:
        return known[impl][0]
    found = plugins(role)
    if impl in found:
        return found[impl][0]
    raise RegistryError(f"unknown {role} impl {impl!r}; known: {', '.join([*known, *found])} "
                        f"(or 'package.module:Class', or a plugin in entry-point group {plugin_group(role)!r})")


def resolve_role(role: str, impl: str) -> type:
    return import_path(role_path(role, impl))


def resolve_task(impl: str) -> Any:
    """The task module: it provides make_split(cfg.task, seed) and
    critic_text(problem, candidate_text, heldout_outputs)."""
    found = {} if impl in TASKS else plugins("task")
    path = TASKS[impl][0] if impl in TASKS else found[impl][0].partition(":")[0] if impl in found else impl
    if "." not in path and impl not in TASKS and impl not in found:
        raise RegistryError(f"unknown task {impl!r}; known: {', '.join([*TASKS, *found])} (or 'package.module', "
                            f"or a plugin in entry-point group 'constellation.tasks')")
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        raise RegistryError(f"cannot import task module {path!r}: {e}") from e
    for fn in ("make_split", "critic_text"):
        if not callable(getattr(module, fn, None)):
            raise RegistryError(f"task module {path!r} lacks a {fn}() function")
    return module
