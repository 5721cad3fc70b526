"""Fuzzing the config loader and the image reader with hypothesis, for a bounded number of examples.

Run: .venv/bin/pytest tests/test_fuzz.py -q --durations=0
(set HYPOTHESIS_PROFILE=long for 10x the examples)

Contract under test: whatever the input, `convbench.config.from_dict`/`load_yaml` (+ validate) give
a RunConfig or raise ConvbenchError, and `convbench.data.datasets.read_image` returns a 32x32x3 uint8 image
or an error string, never any other exception. Everything is written under pytest's tmp dirs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import class_image, jpeg_bytes, png_bytes  # noqa: E402

from convbench import config as c  # noqa: E402
from convbench.data.datasets import read_image  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402

settings.register_profile("default", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
FUZZ = settings.get_profile(PROFILE)

# What YAML can hold: scalars, lists and mappings, nested.
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["quick", "full", "cnn_vgg", "sgd", "cosine", "", "1e3", "-1"]))
yaml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), inner, max_size=4)),
    max_leaves=12,
)


def _field_names(cls) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)]


SECTIONS = {name: cls for name, cls in (("data", c.DataConfig), ("train", c.TrainConfig), ("augment", c.AugmentConfig),
                                        ("regularization", c.RegularizationConfig), ("transfer", c.TransferConfig))}
# Real keys with arbitrary values reach the type checks and range checks, not only "unknown key".
section_dicts = st.one_of(*[
    st.tuples(st.just(name), st.dictionaries(st.sampled_from(_field_names(cls)), yaml_values, max_size=4))
    for name, cls in SECTIONS.items()
])
configs = st.one_of(
    yaml_values,
    st.builds(lambda parts, top: {**dict(parts), **top},
              st.lists(section_dicts, max_size=3),
              st.dictionaries(st.sampled_from(_field_names(c.RunConfig)), yaml_values, max_size=3)),
    st.builds(lambda model, section, body: {"models": ["cnn_vgg", "cnn_resnet"], "overrides": {model: {section: body}}},
              st.sampled_from(["cnn_vgg", "cnn_resnet", "other"]), st.sampled_from(["train", "augment", "transfer", "x"]),
              yaml_values),
)


def _accepts(build) -> None:
    try:
        cfg = build()
        assert isinstance(cfg, c.RunConfig)
        cfg.validate()
    except ConvbenchError as exc:
        assert str(exc) and "\n" not in str(exc), repr(exc)


@FUZZ
@given(data=configs)
def test_from_dict_gives_a_config_or_a_convbench_error(data):
    _accepts(lambda: c.from_dict(data))


@FUZZ
@given(text=st.one_of(st.text(max_size=200),
                      st.builds(lambda a, b: a + b, st.sampled_from(["train:\n  ", "models: [", "augment: {", "- ", "? ",
                                                                     "a: &x [*x]\n", "!!python/name:os.system\n"]),
                                st.text(max_size=80))))
def test_load_yaml_gives_a_config_or_a_convbench_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _accepts(lambda: c.load_yaml(path))


@FUZZ
@given(raw=st.binary(max_size=300))
def test_load_yaml_of_random_bytes(tmp_path, raw):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    _accepts(lambda: c.load_yaml(path))


_rng = np.random.default_rng(0)
SEEDS = {
    "png": png_bytes(class_image(1, _rng)),
    "png-gray": png_bytes(class_image(2, _rng)[..., 0]),
    "png-16": png_bytes(class_image(3, _rng)[..., 0].astype(np.uint16) * 200),
    "png-rgba": png_bytes(np.dstack([class_image(4, _rng), np.full((32, 32), 9, np.uint8)])),
    "jpeg": jpeg_bytes(class_image(5, _rng)),
}


def _check_read(path: Path) -> None:
    image, flags, error = read_image(path)
    if error is None:
        assert image is not None and image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert flags <= {"converted", "resized"}
    else:
        assert image is None and isinstance(error, str) and error and "\n" not in error


@st.composite
def mutated_images(draw):
    """A valid PNG/JPEG with bytes flipped, cut off, or spliced: the inputs decoders really choke on."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), mutated_images()), suffix=st.sampled_from([".png", ".jpg"]))
def test_read_image_never_raises(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    _check_read(path)


def test_read_image_of_a_vanished_file(tmp_path):
    """A file deleted between listing and decoding (or a dangling link) is an error string too."""
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    _check_read(link)


@pytest.mark.parametrize("value", [{"preset": ["quick"]}, {1: 2, "a": 3}, {"overrides": {None: {}}}, ["models"], "text", None, 5])
def test_from_dict_odd_shapes(value):
    _accepts(lambda: c.from_dict(value))
