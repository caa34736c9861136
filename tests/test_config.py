"""One source of defaults: the configuration dataclasses; the shipped YAML says the same, key for key."""

from __future__ import annotations

from pathlib import Path

import yaml

from pathoseg.config import DEFAULT_CONFIG, Config, as_dict, load_config

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_yaml_equals_the_dataclass_defaults():
    assert yaml.safe_load(DEFAULT_CONFIG.read_text()) == as_dict(Config())
    assert (REPO / "configs" / "default.yaml").resolve() == DEFAULT_CONFIG.resolve()
    assert load_config() == Config()
