"""Config: presets, YAML round trip, unknown keys and wrong types are errors, per-model overrides."""

import dataclasses

import pytest

from convbench import config as c
from convbench.errors import ConvbenchError


def test_presets_validate_and_differ():
    quick, full = c.preset("quick").validate(), c.preset("full").validate()
    assert quick.models == ("cnn_vgg", "cnn_resnet", "efficientnet_lite0")
    assert quick.transfer.resolution < full.transfer.resolution
    assert quick.train.epochs < full.train.epochs
    with pytest.raises(ConvbenchError, match="unknown preset"):
        c.preset("medium")


def test_yaml_round_trip(tmp_path):
    cfg = dataclasses.replace(c.preset("quick"), seeds=2, overrides={"cnn_vgg": c.ModelOverride(train={"epochs": 3})})
    path = tmp_path / "config.yaml"
    c.save_yaml(cfg, path)
    again = c.load_yaml(path)
    assert again == cfg
    assert again.recipe("cnn_vgg").train.epochs == 3
    assert again.recipe("cnn_resnet").train.epochs == cfg.train.epochs


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConvbenchError, match="unknown key 'learning_rate'.*lr_per_1024"):
        c.load_yaml(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochs: three\n", "train.epochs must be an integer"),
        ("train: [1, 2]\n", "train must be a mapping"),
        ("augment:\n  flip: 1\n", "augment.flip must be true or false"),
        ("models: 5\n", "models must be a list of names"),
        ("train:\n  epochs: 3\n bad indent: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "must hold a mapping"),
        ("overrides:\n  cnn_vgg:\n    training: {epochs: 2}\n", "unknown key 'training'"),
    ],
)
def test_bad_yaml_gives_one_clear_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConvbenchError, match=message) as err:
        c.load_yaml(path)
    assert "\n" not in str(err.value)


def test_override_values_are_type_checked():
    cfg = dataclasses.replace(c.preset("quick"), overrides={"cnn_vgg": c.ModelOverride(train={"epochs": "x"})})
    with pytest.raises(ConvbenchError, match="overrides.cnn_vgg.train.epochs must be an integer"):
        cfg.validate()


@pytest.mark.parametrize("field, value", [("epochs", 0), ("epochs", -1), ("global_batch_size", 0), ("lr_per_1024", -0.1),
                                          ("lookahead_every", -1), ("lookahead_decay", 1.0), ("lookahead_from_epoch", -0.5)])
def test_ranges_are_checked(field, value):
    cfg = c.preset("quick")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **{field: value}))
    with pytest.raises(ConvbenchError, match=field):
        cfg.validate()


def test_alternating_flip_needs_flip():
    cfg = c.preset("quick")
    cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, flip=False, alternate_flip=True))
    with pytest.raises(ConvbenchError, match="alternate_flip needs augment.flip"):
        cfg.validate()


def test_learning_rate_scales_linearly_with_batch():
    t = c.TrainConfig(global_batch_size=512, lr_per_1024=0.8)
    assert t.learning_rate() == pytest.approx(0.4)


def test_configs_are_frozen():
    cfg = c.preset("quick")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seeds = 3


def test_describe_augment_names_what_is_on():
    base = {"crop_padding": 2, "flip": True, "cutout": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.5}
    assert c.describe_augment({**base, "alternate_flip": True}) == ["crop±2px", "alternating flip", "cutmix α=0.5"]
    assert c.describe_augment(base) == ["crop±2px", "flip", "cutmix α=0.5"]  # results saved before alternate_flip existed
    assert c.describe_augment({**base, "flip": False, "crop_padding": 0, "cutmix_alpha": 0.0}) == []


def test_run_help_names_the_quick_presets_defaults(capsys):
    """Issue 17: `convbench run --help` says what runs when an option is left out."""
    from convbench.cli.commands import main
    from convbench.config import preset

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    quick = preset("quick")
    assert "quick (the default; CPU)" in text
    assert f"default {quick.data.source}" in text and f"default {','.join(quick.models)}" in text
    assert f"default {quick.seeds})" in text and f"default {quick.train.global_batch_size})" in text
    assert f"{quick.models[0]} {quick.recipe(quick.models[0]).train.epochs}" in text


def test_the_readme_config_example_loads(tmp_path):
    """The YAML example in README.md is a valid config (unknown keys or wrong types would fail here)."""
    import re
    from pathlib import Path

    from convbench.config import load_yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [example] = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    (tmp_path / "example.yaml").write_text(example)
    cfg = load_yaml(tmp_path / "example.yaml")
    assert cfg.seeds == 3 and cfg.recipe("cnn_resnet").train.epochs == 6 and cfg.recipe("cnn_vgg").train.epochs == 10
    assert cfg.budget.value == 2.0e15  # PyYAML reads "2.0e15" as text: config accepts it as the number meant
