"""The run manifest: written at run_start into RUN_DIR/manifest.json and the
run_start event, printed by `constellation table`."""

from __future__ import annotations

import json

from constellation.protocol import events as ev
from constellation.runtime.manifest import PACKAGES, build_manifest
from constellation.protocol import config
from launch import cli
from test_coordinator import run, workers


def test_a_manifest_names_code_versions_hardware_and_config():
    manifest = build_manifest(config.load("smoke"))
    assert set(manifest["versions"]) == {"python", *PACKAGES}
    assert manifest["hardware"]["cpu_count"] >= 1 and isinstance(manifest["hardware"]["gpus"], list)
    assert manifest["config"]["coordinator"]["k"] == config.load("smoke").coordinator.k
    assert len(manifest["config_hash"]) == 64
    assert manifest["git"] is None or set(manifest["git"]) == {"commit", "dirty"}


def test_the_hash_follows_the_config():
    a, b = build_manifest(config.load("smoke")), build_manifest(config.load("smoke", ["run.seed=1"]))
    assert a["config_hash"] != b["config_hash"]


def test_a_run_records_its_manifest_and_table_prints_it(tmp_path, capsys):
    run_dir, events = run(tmp_path, workers(tmp_path), "tracking.tensorboard=false")
    saved = json.loads((run_dir / "manifest.json").read_text())
    (start,) = [e for e in events if isinstance(e, ev.RunStart)]
    assert start.manifest == saved
    assert cli.main(["table", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "versions: python" in out and "config sha256: " + saved["config_hash"][:16] in out
