"""The run manifest: what produced a run, written when it starts.

  {"git": {"commit": "3f2a...", "dirty": false},       (null when the code is not a git checkout)
   "versions": {"python": "3.11.9", "constellation": "0.1.0", "torch": "2.13.0",
                "transformers": ..., "peft": ..., "vllm": null, "bitsandbytes": null},   (null = not installed)
   "hardware": {"cpu_count": 2, "gpus": [{"name": "NVIDIA L4", "memory_mib": 23034}]},
   "config": {...the resolved config...}, "config_hash": "sha256 of config.toml's text",
   "created": 1733300000.0}

It goes to RUN_DIR/manifest.json and into the run_start event (run.sqlite and
metrics.jsonl). Nothing here imports torch: versions come from package
metadata, GPUs from ``nvidia-smi`` when it exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from constellation.protocol.config import Config, to_toml

PACKAGES = ("constellation", "torch", "transformers", "peft", "vllm", "bitsandbytes")
MANIFEST_FILE = "manifest.json"
SOURCE = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding the code


def _run(args: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(where: Path = SOURCE) -> dict[str, Any] | None:
    """{commit, dirty} of the code's checkout; None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    commit = _run(["git", "rev-parse", "HEAD"], where)
    if commit is None:
        return None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], where)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def gpus() -> list[dict[str, Any]]:
    """[{name, memory_mib}] of the NVIDIA GPUs nvidia-smi lists ([] without it)."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    rows = [line.rsplit(",", 1) for line in (out or "").splitlines() if "," in line]
    return [{"name": name.strip(), "memory_mib": int(mem) if mem.strip().isdigit() else None} for name, mem in rows]


def build_manifest(cfg: Config) -> dict[str, Any]:
    text = to_toml(cfg)
    return {"git": git_state(), "versions": versions(),
            "hardware": {"cpu_count": os.cpu_count(), "gpus": gpus()},
            "config": msgspec.to_builtins(cfg), "config_hash": hashlib.sha256(text.encode()).hexdigest(),
            "created": round(time.time(), 3)}


def write_manifest(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Build the manifest and save it as RUN_DIR/manifest.json -> the manifest."""
    manifest = build_manifest(cfg)
    tmp = Path(run_dir) / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(Path(run_dir) / MANIFEST_FILE)
    return manifest


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """The manifest in a few lines (the table command, the study report)."""
    if not manifest:
        return ["manifest: none recorded (a run of an older version)"]
    git = manifest.get("git") or {}
    code = (f"{git.get('commit', '')[:12]}{' (dirty)' if git.get('dirty') else ''}" if git else "not a git checkout")
    vers = manifest.get("versions") or {}
    hw = manifest.get("hardware") or {}
    gpu = ", ".join(f"{g.get('name')} ({g.get('memory_mib')} MiB)" for g in hw.get("gpus") or []) or "none"
    return [f"code: {code}",
            "versions: " + ", ".join(f"{k} {v if v is not None else '-'}" for k, v in vers.items()),
            f"hardware: {hw.get('cpu_count')} CPUs; GPUs: {gpu}",
            f"config sha256: {str(manifest.get('config_hash', ''))[:16]}"]


def grouped_lines(per_seed: dict[int, dict[str, Any]]) -> list[str]:
    """Markdown lines for several runs' manifests (a study's seeds): one block
    per distinct code/versions/hardware summary, naming the seeds it covers
    (the config hashes differ by seed, so they are left out of the comparison)."""
    summaries = {seed: tuple(summary_lines(manifest)[:3]) for seed, manifest in per_seed.items()}
    out: list[str] = []
    for lines in dict.fromkeys(summaries.values()):
        seeds = [s for s, other in summaries.items() if other == lines]
        out += [f"Seeds {', '.join(map(str, seeds))}:", "", *(f"- {line}" for line in lines), ""]
    return out
