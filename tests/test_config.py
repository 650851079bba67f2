from pathlib import Path

import pytest

from constellation.protocol import config
from launch.cli import config_reference_markdown

CONFIG_DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_field_has_a_default_and_help():
    rows = config.describe()
    assert len(rows) > 50
    assert [key for key, _, help_text in rows if not help_text] == []


def test_presets_load_and_round_trip_through_toml(tmp_path):
    for preset in ("tiny", "smoke"):
        cfg = config.load(preset)
        path = tmp_path / f"{preset}.toml"
        path.write_text(config.to_toml(cfg))
        assert config.load_file(path) == cfg


def test_overrides_are_typed_by_toml():
    cfg = config.load("tiny", ["trainer.lr=1e-4", "task.depths=[1, 2]", "run.name=abc", "coordinator.k=4"])
    assert cfg.trainer.lr == 1e-4 and cfg.task.depths == [1, 2] and cfg.run.name == "abc" and cfg.coordinator.k == 4


@pytest.mark.parametrize("override, message", [
    ("nosection.x=1", "unknown section 'nosection'"),
    ("trainer.nofield=1", "unknown field `nofield`"),
    ("coordinator.k=eight", "Expected `int`"),
    ("novalue", "section.key=value"),
])
def test_bad_overrides_have_clear_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load("tiny", [override])


def test_unknown_preset_lists_known_ones():
    with pytest.raises(config.ConfigError, match="known presets: .*smoke.*tiny"):
        config.load("nope")


def test_docs_config_reference_is_current():
    text = CONFIG_DOC.read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    current = text[text.index(start) + len(start):text.index(end)].strip()
    assert current == config_reference_markdown(), "run: python -m launch.cli config --reference --markdown"
