"""Role and task implementations, by short name or import path.

A config picks an implementation with ``impl = "hf"`` (a registered name) or
with an import path ``"package.module:Class"``, so a user swaps a role without
touching the project. Nothing is imported until a role process resolves its
own implementation.

Names come from entry points, for the built-in implementations and for
plugins alike: the groups ``constellation.<role>s`` (``constellation.verifiers``,
``constellation.generators``, ``constellation.critics``, ``constellation.trainers``;
value ``"package.module:Class"``) and ``constellation.tasks`` (value
``"package.module"``). The built-in ones are declared in this project's
pyproject.toml; a built-in name wins over a plugin's of the same name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

WORKER_ROLES = ("generator", "verifier", "critic", "trainer")
ALL_ROLES = ("coordinator", *WORKER_ROLES)
KINDS = (*WORKER_ROLES, "task")
PROJECT = "constellation"  # the distribution whose entry points are the built-ins


NO_CRITIC = "none"  # critic.impl that runs no critic: selection and pairs go without scores


def worker_roles(cfg: Any) -> tuple[str, ...]:
    """The worker roles a run has: all of them, less the critic when
    ``critic.impl = "none"``."""
    return tuple(r for r in WORKER_ROLES if r != "critic" or cfg.critic.impl != NO_CRITIC)


def roles_of(cfg: Any) -> tuple[str, ...]:
    """The processes a run starts: the coordinator and its worker roles."""
    return ("coordinator", *worker_roles(cfg))


class RegistryError(LookupError):
    pass


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # "package.module:Class" (roles) or "package.module" (tasks)
    source: str  # "built-in" or "plugin <distribution> <version>"

    @property
    def builtin(self) -> bool:
        return self.source == "built-in"


def plugin_group(kind: str) -> str:
    """The entry-point group of a role kind ("verifier" -> "constellation.verifiers") or of tasks."""
    return "constellation.tasks" if kind == "task" else f"constellation.{kind}s"


def entries(kind: str) -> dict[str, Entry]:
    """Every registered implementation of a role kind (or "task"), built-ins first."""
    if kind not in KINDS:
        raise RegistryError(f"unknown role {kind!r}; roles: {', '.join(KINDS)}")
    builtin, plugin = {}, {}
    for ep in entry_points(group=plugin_group(kind)):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.name == PROJECT:
            builtin[ep.name] = Entry(ep.name, ep.value, "built-in")
        else:
            source = f"plugin {dist.name} {dist.version}" if dist is not None else "plugin"
            plugin.setdefault(ep.name, Entry(ep.name, ep.value, source))
    if not builtin:
        raise RegistryError(f"no built-in {kind} implementations are registered: constellation is not "
                            f"installed (pip install -e . from the repository)")
    return {**builtin, **{n: e for n, e in plugin.items() if n not in builtin}}


def shadowed_plugins(kind: str) -> list[Entry]:
    """Plugins whose name a built-in takes (listed by `constellation roles`)."""
    builtin = {n for n, e in entries(kind).items() if e.builtin}
    return [Entry(ep.name, ep.value, f"plugin {ep.dist.name} {ep.dist.version}")
            for ep in entry_points(group=plugin_group(kind))
            if ep.name in builtin and getattr(ep, "dist", None) is not None and ep.dist.name != PROJECT]


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
    known = entries(role)
    if impl in known:
        return known[impl].path
    raise RegistryError(f"unknown {role} impl {impl!r}; known: {', '.join(known)} "
                        f"(or 'package.module:Class', or a plugin in entry-point group {plugin_group(role)!r})")


def resolve_role(role: str, impl: str) -> type:
    return import_path(role_path(role, impl))


def describe(path: str) -> str:
    """The first line of an implementation's docstring (imports it)."""
    try:
        obj = import_path(path) if ":" in path else importlib.import_module(path)
    except (RegistryError, ImportError) as e:
        return f"(cannot import: {e})"
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


def resolve_task(impl: str) -> Any:
    """The task module: it provides make_split(cfg.task, seed) and
    critic_text(problem, candidate_text, heldout_outputs)."""
    known = entries("task")
    if impl in known:
        path = known[impl].path.partition(":")[0]
    elif "." in impl:
        path = impl
    else:
        raise RegistryError(f"unknown task {impl!r}; known: {', '.join(known)} (or 'package.module', "
                            f"or a plugin in entry-point group 'constellation.tasks')")
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        raise RegistryError(f"cannot import task module {path!r}: {e}") from e
    for fn in ("make_split", "critic_text"):
        if not callable(getattr(module, fn, None)):
            raise RegistryError(f"task module {path!r} lacks a {fn}() function")
    return module
