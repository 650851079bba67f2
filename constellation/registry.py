"""Role and task implementations, by short name or by import path.

A config picks an implementation with ``impl = "hf"`` (a name below) or with
an import path ``"package.module:Class"``, so a user swaps a role without
touching the project. Names map to import paths; nothing is imported until a
role process resolves its own implementation.
"""

from __future__ import annotations

import importlib
from typing import Any

ROLES: dict[str, dict[str, tuple[str, str]]] = {
    "generator": {
        "hf": ("roles.generator_hf:HfGenerator", "transformers sampling on CPU/GPU; hot-loads peft adapters"),
    },
    "verifier": {
        "dsl": ("roles.verifier_dsl:DslVerifier", "exact verifier of the string DSL (own safe interpreter)"),
        "math": ("roles.verifier_math:MathVerifier", "final math answers against Problem.reference (sympy, isolated workers)"),
    },
    "critic": {
        "learned": ("roles.critic_learned:LearnedCritic", "tiny transformer + scalar head, trained online on verifier labels"),
    },
    "trainer": {
        "star": ("roles.trainer_star:StarTrainer", "STaR/RFT: LoRA SFT on selected candidates (completion-only loss)"),
    },
}

TASKS: dict[str, tuple[str, str]] = {  # module with make_split() and critic_text()
    "dsl": ("verifiers.dsl_tasks", "FlashFill-style string programs with held-out inputs"),
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


def role_path(role: str, impl: str) -> str:
    if ":" in impl:
        return impl
    known = ROLES.get(role)
    if known is None:
        raise RegistryError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if impl not in known:
        raise RegistryError(f"unknown {role} impl {impl!r}; known: {', '.join(known)} (or 'package.module:Class')")
    return known[impl][0]


def resolve_role(role: str, impl: str) -> type:
    return import_path(role_path(role, impl))


def resolve_task(impl: str) -> Any:
    """The task module: it provides make_split(cfg.task, seed) and
    critic_text(problem, candidate_text, heldout_outputs)."""
    path = TASKS[impl][0] if impl in TASKS else impl
    if "." not in path and impl not in TASKS:
        raise RegistryError(f"unknown task {impl!r}; known: {', '.join(TASKS)} (or 'package.module')")
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        raise RegistryError(f"cannot import task module {path!r}: {e}") from e
    for fn in ("make_split", "critic_text"):
        if not callable(getattr(module, fn, None)):
            raise RegistryError(f"task module {path!r} lacks a {fn}() function")
    return module
