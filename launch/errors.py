"""One line for a user's error, shared by the CLI and the processes it starts.

``launch.prepare`` runs as its own process and prints ``ERROR <line>``, which
the supervisor shows as it is; the CLI prints the same line for the run
directory. Both word an ``OSError`` here, below either of them.
"""

from __future__ import annotations


def os_error_line(e: OSError, where: object = None) -> str:
    """``<path>: <cause>`` for a failed file operation, e.g. "runs/x/config.toml: No space left on device";
    ``where`` names the place when the error carries no file name (a failed write)."""
    path = e.filename if e.filename is not None else where
    return f"{path}: {e.strerror}" if path is not None and e.strerror else str(e)
