"""Every registered model builds, maps (N, 32, 32, 3) pixels to (N, classes) finite logits, and has
the pinned parameter count (a changed count means a changed architecture: update it knowingly)."""

import numpy as np
import pytest

from convbench.errors import ConvbenchError
from convbench.models import create_model, list_models, model_info, register_model

# 10 classes; transfer models at their default 96 px with the gap_dense128 head.
PINNED_PARAMS = {
    "cnn_airbench": 570_297,
    "cnn_resnet": 1_648_352,
    "cnn_vgg": 648_730,
    "efficientnet_b0": 4_214_829,
    "efficientnet_lite0": 3_578_282,
    "efficientnet_lite1": 4_354_602,
    "efficientnet_lite2": 5_034_426,
    "mobilenet_v2": 2_423_242,
    "resnet50": 23_851_274,
}


def _build(name, **kwargs):
    if model_info(name).kind == "transfer":
        kwargs.setdefault("weights", None)  # random init: shape tests need no download
    return create_model(name, num_classes=10, **kwargs)


@pytest.mark.parametrize("name", list_models())
def test_model_builds_with_finite_logits(name):
    model = _build(name)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    logits = np.asarray(model(x, training=False))
    assert logits.shape == (2, 10)
    assert np.isfinite(logits).all()
    assert model.count_params() == PINNED_PARAMS[name]


def test_registry_lists_every_model_pinned():
    assert sorted(PINNED_PARAMS) == list_models()
    assert set(list_models("custom")) == {"cnn_vgg", "cnn_resnet", "cnn_airbench"}
    assert "efficientnet_lite0" in list_models("transfer")


def test_unknown_model_names_the_choices():
    with pytest.raises(ConvbenchError, match="unknown model 'vgg99'; choose from .*cnn_resnet"):
        create_model("vgg99")


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn_vgg", kind="custom")(lambda **kw: None)


@pytest.mark.parametrize("head", ["gap_dense128", "flatten_mlp", "gap_bn_dropout"])
def test_transfer_heads_follow_the_notebook(head):
    model = create_model("efficientnet_lite0", num_classes=5, weights=None, resolution=64, head=head)
    layers = [l.name for l in model.get_layer("head").layers]
    expected = {
        "gap_dense128": ["gap", "dense_128", "logits"],
        "flatten_mlp": ["flatten", "dense_512", "dropout_30", "dense_256", "logits"],
        "gap_bn_dropout": ["gap", "bn", "dense_256", "dropout_50", "dense_64", "logits"],
    }[head]
    assert [n for n in layers if n != "feature_map"] == expected
    assert model.output.shape[-1] == 5
    # The features sub-model ends at the backbone's feature map (64 px / 32 = 2x2 for Lite0).
    assert model.get_layer("features").output.shape[1:3] == (2, 2)


def test_dropout_override_reaches_every_dropout_layer():
    import keras

    model = create_model("cnn_vgg", num_classes=10, dropout=0.05)
    rates = [l.rate for l in model.layers if isinstance(l, keras.layers.Dropout)]
    assert rates and all(r == 0.05 for r in rates)


def test_custom_width_changes_size():
    assert create_model("cnn_resnet", width=16).count_params() < PINNED_PARAMS["cnn_resnet"]


def test_a_cpu_machine_sees_no_tensorflow_startup_noise(tmp_path):
    """Issue 17: `convbench models` in a fresh process shows its table, without TensorFlow's oneDNN,
    cudart and cuInit start-up lines (written by C++ before TF_CPP_MIN_LOG_LEVEL applies)."""
    import os
    import subprocess
    import sys

    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: CUDA lines are real information there")
    env = {**os.environ, "CONVBENCH_CACHE": str(tmp_path / "cache"), "KERAS_HOME": str(tmp_path / "keras"),
           "MPLCONFIGDIR": str(tmp_path / "mpl")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "convbench.cli", "models", "--names"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == list_models()
    for noise in ("cuInit", "CUDA error", "oneDNN custom operations", "absl::InitializeLog", "cuda drivers"):
        assert noise not in proc.stderr + proc.stdout, proc.stderr


def test_startup_filter_keeps_real_errors():
    from convbench.env import without_startup_noise

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: UNKNOWN ERROR (303)\n"
            "E0000 00:00:1.0 1 some_op.cc:9] Out of memory while allocating 4 GiB\n\n")
    assert without_startup_noise(text) == "E0000 00:00:1.0 1 some_op.cc:9] Out of memory while allocating 4 GiB\n"


@pytest.mark.parametrize("name", list_models())
def test_descriptions_state_no_second_parameter_count(name):
    """Issue 17: `convbench models` shows one parameter count, measured on the built model; a
    description quoting another (the ImageNet head's) contradicted it."""
    import re

    assert not re.search(r"\d+(\.\d+)?\s?M\b", model_info(name).description), model_info(name).description
