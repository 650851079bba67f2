"""A cached model folder is published whole or not at all.

Both caches of built models (the tiny base, ``base_model.py``, and a converted
GGUF, ``gguf_source.py``) write a folder under a temporary name, mark it
finished with ``MARKER`` last and rename it into place, so a half-written
folder is never reused:

    if is_finished(final): return final
    publish(final, lambda tmp: model.save_pretrained(tmp))

Two processes building the same folder at once both succeed: the second
rename fails and the first one's folder is used.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

MARKER = "COMPLETE"  # written last: a folder without it is unfinished or damaged


def is_finished(folder: Path) -> bool:
    return (folder / MARKER).exists()


def publish(final: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` fills a temporary folder beside ``final``, which is then
    marked finished and renamed to ``final`` (an unfinished ``final`` is
    replaced) -> final. On any error the temporary folder is removed."""
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        (tmp / MARKER).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
        if final.exists() and not is_finished(final):
            shutil.rmtree(final)  # unfinished or its marker gone: never reused, replaced
        os.rename(tmp, final)
    except OSError:  # another process finished the same folder first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_finished(final):
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
