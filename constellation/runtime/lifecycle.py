"""Launch tokens: a Ready counts only when it comes from a process the supervisor started.

    new_secret()                -> a per-run secret the supervisor keeps in memory
    launch_token(secret, role)  -> the token handed to that role's processes (env CONSTELLATION_LAUNCH_TOKEN)
    own_token()                 -> this process's token ("" when it was not started by a supervisor)
    ready_check()               -> in the coordinator: accepts a Ready iff its token is its role's (None: no secret)

The supervisor gives each role process its token in the environment, and the
coordinator the secret, never on disk: a peer that stole a role's CURVE key
from the run directory still cannot announce a Ready that counts (one with a
fake pid would look like a restart, steal the role's route and have its
in-flight requests re-sent). A restarted role (or a Ray actor Ray restarted)
gets the same token again: a Ready with a valid token and a new pid is a
restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import Any, Callable

TOKEN_ENV = "CONSTELLATION_LAUNCH_TOKEN"
SECRET_ENV = "CONSTELLATION_LAUNCH_SECRET"


def new_secret() -> str:
    return secrets.token_hex(16)


def launch_token(secret: str, role: str) -> str:
    return hmac.new(secret.encode(), f"ready/{role}".encode(), hashlib.sha256).hexdigest()[:32]


def own_token() -> str:
    return os.environ.get(TOKEN_ENV, "")


def genuine(secret: str, msg: Any) -> bool:
    """Does this Ready carry the token of the role it names?"""
    return hmac.compare_digest(str(getattr(msg, "launch", "")), launch_token(secret, str(msg.role)))


def ready_check() -> Callable[[Any], bool] | None:
    secret = os.environ.get(SECRET_ENV, "")
    return (lambda msg: genuine(secret, msg)) if secret else None
