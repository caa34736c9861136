"""One source of defaults: the configuration dataclasses; the shipped YAML says the same, key for key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pathoseg.config import DEFAULT_CONFIG, Config, as_dict, load_config

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_yaml_equals_the_dataclass_defaults():
    assert yaml.safe_load(DEFAULT_CONFIG.read_text()) == as_dict(Config())
    assert (REPO / "configs" / "default.yaml").resolve() == DEFAULT_CONFIG.resolve()
    assert load_config() == Config()


def test_training_configs_refuse_unknown_and_missing_settings_by_name(tmp_path):
    """Training configs go through the run configuration's checks: a misspelt key names the file and the key (it was a
    TypeError traceback), also inside a dataset entry and through ``base``."""
    from pathoseg.config import ConfigError
    from pathoseg.train.loop import TrainConfig

    base = tmp_path / "base.yaml"
    base.write_text("name: m\noutput: runs/m\ndatasets: [{path: data/a, weight: 1}]\n")
    variant = tmp_path / "variant.yaml"
    variant.write_text("base: base.yaml\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"variant.yaml: unknown setting 'learning_rate'"):
        TrainConfig.from_yaml(variant)
    variant.write_text("base: base.yaml\ndatasets: [{path: data/a, wieght: 1}]\n")
    with pytest.raises(ConfigError, match=r"datasets\[0\]: unknown setting 'wieght'"):
        TrainConfig.from_yaml(variant)
    variant.write_text("datasets: []\noutput: runs/m\n")
    with pytest.raises(ConfigError, match="missing setting.*name"):
        TrainConfig.from_yaml(variant)
    variant.write_text("base: base.yaml\nsubpixel: 2\n")
    assert TrainConfig.from_yaml(variant).subpixel == 2


def test_the_train_command_refuses_a_bad_config_in_one_line(tmp_path):
    from click.testing import CliRunner

    from pathoseg.cli import main

    config = tmp_path / "train.yaml"
    config.write_text("name: m\noutput: runs/m\ndatasets: []\nsteps: 5\nbatchsize: 4\n")
    result = CliRunner().invoke(main, ["train", "-c", str(config)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}: unknown setting 'batchsize'"), result.output
    assert "Traceback" not in result.output
