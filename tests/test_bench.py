"""`convbench bench` and `cnn_airbench`: behaviour only, never timings.

    .venv/bin/pytest tests/test_bench.py -q     # about a minute on 2 cores

- The MFU arithmetic on layers whose FLOPs are computed here by hand, with a made-up peak.
- The bench command on a tiny run writes a well-formed bench.json (required keys, targets) and bench.md.
- The time-to-accuracy part runs end to end on a tiny subset and records its targets.
- cnn_airbench's whitening layer whitens, its convs start as identities, its scaled bias trains
  at 64x the learning rate, and its FLOPs match the hand count.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from convbench.bench import benchmark as bench
from convbench.cli.commands import main
from convbench.errors import ConvbenchError


def _dense_model(d_in=8, d_out=4):
    import keras

    inputs = keras.Input((d_in,))
    return keras.Model(inputs, keras.layers.Dense(d_out)(inputs))


def _conv_model():
    import keras

    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))


def test_mfu_of_a_dense_layer_by_hand():
    model = _dense_model(8, 4)
    # Forward: 8 x 4 multiply-accumulates = 64 FLOPs; training = 3 x forward = 192.
    assert bench.training_flops_per_image(model) == 192
    # 1e9 images/s x 192 FLOPs = 192 GFLOP/s against a made-up 384 GFLOP/s peak: half of it.
    assert bench.achieved_flops_per_s(192, 1e9) == pytest.approx(192e9)
    assert bench.mfu(192, 1e9, 384e9) == pytest.approx(0.5)


def test_mfu_of_a_conv_net_and_a_frozen_prefix():
    model = _conv_model()
    conv = 2 * 3 * 3 * 3 * 5 * 6 * 6  # 2 x k x k x cin x cout x H x W = 9,720
    fc = 2 * (6 * 6 * 5) * 2  # 720
    assert bench.training_flops_per_image(model) == 3 * (conv + fc)
    assert bench.mfu(3 * (conv + fc), 1000.0, 3 * (conv + fc) * 4000.0) == pytest.approx(0.25)
    # Frozen conv: gradients stop at the dense layer, so training = forward + 2 x the dense part.
    model.get_layer("conv").trainable = False
    assert bench.training_flops_per_image(model) == conv + fc + 2 * fc


def test_mfu_rejects_a_non_positive_peak_and_ratio_handles_missing_values():
    with pytest.raises(ValueError, match="positive"):
        bench.mfu(1, 1, 0)
    assert bench.ratio(6.0, 2.0) == 3.0
    assert bench.ratio(None, 2.0) is None and bench.ratio(1.0, 0.0) is None


def test_peak_matmul_counts_two_n_cubed():
    peak = bench.peak_matmul_flops("float32", n=128, repeats=2)
    assert peak["n"] == 128 and len(peak["seconds"]) == 2
    assert peak["flops_per_s"] == pytest.approx(2 * 128**3 / min(peak["seconds"]))
    assert peak["flops_per_s"] >= peak["median_flops_per_s"] > 0


def test_targets_are_stated_met_or_not():
    models = [
        {"name": "a", "kind": "custom", "train_images_per_s": 100.0, "mfu": 0.6, "fit_ratio": 1.1},
        {"name": "b", "kind": "custom", "train_images_per_s": 200.0, "mfu": 0.4, "fit_ratio": 0.9},
        {"name": "t", "kind": "transfer", "train_images_per_s": 50.0, "mfu": 0.1, "fit_ratio": 1.0},
    ]
    tta = {"runs": [{"target": 0.90, "reached": True, "minutes": 12.0}, {"target": 0.93, "reached": False, "minutes": None}]}
    targets = bench.evaluate_targets(models, pipeline_ips=700.0, time_to_accuracy=tta)
    pipeline = next(t for t in targets if t["target"].startswith("input pipeline"))
    assert pipeline["measured"] == pytest.approx(3.5) and pipeline["met"] is True  # 700 / fastest (200)
    mfu_target = next(t for t in targets if "MFU" in t["target"])
    assert mfu_target["measured"] == {"a": 0.6, "b": 0.4} and mfu_target["met"] is False  # transfer not counted
    # bf16 models are held to 35 % of the bf16 peak; the speed-up target counts only models in a mixed policy.
    bf16 = [dict(m, peak_dtype="bfloat16", precision="mixed_bfloat16", precision_speedup=s) for m, s in zip(models, (3.0, 2.0, 1.0))]
    bf16_targets = bench.evaluate_targets(bf16, 700.0, None)
    assert next(t for t in bf16_targets if "MFU" in t["target"])["met"] is True  # MFU 0.6 and 0.4 >= 0.35
    speedup = next(t for t in bf16_targets if "float32 images/s" in t["target"])
    assert speedup["measured"] == {"a": 3.0, "b": 2.0} and speedup["met"] is False
    assert next(t for t in targets if "float32 images/s" in t["target"])["met"] is None  # all float32: not measured
    fit = next(t for t in targets if "model.fit" in t["target"])
    assert fit["met"] is False
    acc = [t for t in targets if "validation accuracy" in t["target"]]
    assert [t["met"] for t in acc] == [True, False]
    untimed = bench.evaluate_targets(models, 700.0, None)
    assert [t["met"] for t in untimed if "validation accuracy" in t["target"]] == [None, None]


def test_bench_command_writes_well_formed_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", "--models", "cnn_vgg,efficientnet_lite0", "--steps", "2", "--warmup", "1", "--rounds", "1",
                 "--batch-size", "16", "--steps-per-execution", "2", "--transfer-resolution", "32", "--peak-size", "256",
                 "--peak-repeats", "2", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "bench.json").read_text())
    for key in ("environment", "load_average", "peak", "models", "targets", "batch_size", "steps"):
        assert key in result
    assert result["batch_size"] == 16 and result["steps"] == 2
    assert result["environment"]["versions"]["tensorflow"]
    assert [p["when"] for p in result["peak"]["runs"]][:1] == ["start"] and result["peak"]["flops_per_s"] > 0
    assert [m["name"] for m in result["models"]] == ["cnn_vgg", "efficientnet_lite0"]
    for m in result["models"]:
        for key in bench.REQUIRED_MODEL_KEYS:
            assert m[key] is not None, key
        assert m["train_images_per_s"] > 0 and m["fit_images_per_s"] > 0
        peak = result["peak"]["by_dtype"][m["peak_dtype"]]
        assert m["peak_dtype"] == {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(m["precision"], "float32")
        assert peak == max(p["flops_per_s"] for p in result["peak"]["runs"] if p["dtype"] == m["peak_dtype"])
        assert m["mfu"] == pytest.approx(m["train_flops_per_image"] * m["train_images_per_s"] / peak)
        assert m["precision_speedup"] == pytest.approx(m["train_images_per_s"] / m["fp32_train_images_per_s"])
        assert m["precision_reason"] and m["fp32_train_images_per_s"] > 0
        if m["precision"] == "float32":  # one measurement serves both
            assert m["fp32_train_images_per_s_rounds"] == m["train_images_per_s_rounds"]
        assert m["pipeline_ratio"] == pytest.approx(m["pipeline_images_per_s"] / m["train_images_per_s"])
        assert m["fit_ratio"] == pytest.approx(m["train_images_per_s"] / m["fit_images_per_s"])
        assert m["fit_ratio_same_input"] == pytest.approx(m["same_input_images_per_s"] / m["fit_images_per_s"])
    vgg, lite = result["models"]
    assert vgg["train_flops_per_image"] == 3 * vgg["flops_per_image"]
    # Fine-tuning trains only the top of the backbone: less than 3 x forward.
    assert lite["flops_per_image"] < lite["train_flops_per_image"] < 3 * lite["flops_per_image"]
    assert set(vgg["variants"]) == {"xla", "one_step_per_call"} and "variants" not in lite
    for variant in vgg["variants"].values():
        assert "error" not in variant and variant["train_images_per_s"] > 0, variant
    assert {t["met"] for t in result["targets"]} <= {True, False, None}
    assert len(result["targets"]) == 6
    assert {(p["dtype"], p["kind"]) for p in result["peak"]["runs"]} >= {("float32", "matmul"), ("float32", "conv3x3"),
                                                                      ("bfloat16", "matmul"), ("bfloat16", "conv3x3")}
    md = (out / "bench.md").read_text()
    assert "| cnn_vgg | custom |" in md and "## Targets" in md and "convbench bench --models cnn_vgg" in md
    assert "## PyTorch peer" in md  # measured where torch is installed, else skipped with the reason
    assert ("skipped" in result["torch_peer"]) != ("torch_peer" in vgg)


def test_bench_bad_input_is_one_clear_error(tmp_path, capsys):
    assert main(["bench", "--models", "nope", "--out", str(tmp_path / "b")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["bench", "--steps", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--time-to-accuracy", "--out", str(tmp_path / "b")]) == 2
    assert "--time-to-accuracy needs real images" in capsys.readouterr().err
    with pytest.raises(ConvbenchError, match="ACCURACY:EPOCHS"):
        bench._parse_targets("ninety")
    assert bench._parse_targets("90:6,0.93:12") == ((0.9, 6), (0.93, 12))


def _two_class_data(labels_random: bool = False):
    from convbench.data.datasets import Dataset

    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 160).astype(np.int32)
    # Dark versus bright images: trivially separable, so one short epoch learns them.
    x = np.where(y[:, None, None, None] == 1, 200, 40).astype(np.uint8) + rng.integers(0, 30, (len(y), 32, 32, 3), dtype=np.uint8)
    if labels_random:
        y = rng.integers(0, 2, len(y)).astype(np.int32)
    return Dataset(x[:256], y[:256], x[256:288], y[256:288], x[288:], y[288:], ["dark", "bright"], "synthetic")


def test_time_to_accuracy_records_the_time_and_test_accuracy_of_each_target():
    result = bench.time_to_accuracy(_two_class_data(), targets=((0.90, 2),), batch_size=64, max_minutes=5.0)
    assert result["model"] == "cnn_airbench" and result["train_images"] == 256 and result["test_images"] == 32
    (run,) = result["runs"]
    assert run["target"] == 0.90 and run["epochs_planned"] == 2 and run["reached"]
    assert 0 < run["minutes"] <= run["minutes_run"]
    assert run["val_accuracy_tta"] >= 0.90 and run["test_accuracy_tta"] >= 0.90 and 0 <= run["test_accuracy"] <= 1
    # The run stops at the epoch its last target is reached.
    assert len(result["histories"]["2"]) == run["epoch"]


def test_time_to_accuracy_reports_an_unreached_target():
    # Random labels cannot be learned to 99 % validation accuracy in one epoch.
    result = bench.time_to_accuracy(_two_class_data(labels_random=True), targets=((0.99, 1),), batch_size=64, max_minutes=5.0)
    (run,) = result["runs"]
    assert run["reached"] is False and run["minutes"] is None and run["minutes_run"] > 0
    # What it got to instead: the best validation accuracy (flip TTA), its epoch and time.
    assert 0 <= run["best"]["val_accuracy_tta"] < 0.99 and run["best"]["epoch"] == 1
    assert 0 < run["best"]["minutes"] <= run["minutes_run"]
    targets = bench.evaluate_targets([], 0.0, {"runs": [{**run, "target": 0.90}]})
    assert next(t for t in targets if "90%" in t["target"])["met"] is False
    with pytest.raises(ConvbenchError, match="max-minutes"):
        bench.time_to_accuracy(_two_class_data(), max_minutes=0)


# ---------------------------------------------------------------------------------------------
# cnn_airbench


def test_airbench_whitening_initialises_from_data_before_training():
    import tensorflow as tf

    from convbench.models import create_model, initialize_from_data

    model = create_model("cnn_airbench", num_classes=10)
    whiten = model.get_layer("whiten")
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3)).astype("float32")
    assert float(whiten.ready.numpy()[0]) == 0.0
    # A training step alone does not initialise it: that is done once, outside any replica context.
    model(x, training=True)
    assert float(whiten.ready.numpy()[0]) == 0.0
    assert initialize_from_data(model, x) == ["whiten"]
    assert float(whiten.ready.numpy()[0]) == 1.0
    # The filters whiten 2x2 patches: each output channel has unit second moment on that batch.
    normalized = tf.cast(model.get_layer("normalize")(x), tf.float32)
    out = tf.nn.conv2d(normalized, tf.convert_to_tensor(whiten.kernel), 1, "VALID").numpy().reshape(-1, whiten.filters)
    second_moment = np.diag(out.T @ out / len(out))
    np.testing.assert_allclose(second_moment, 1.0, rtol=0.02)
    # Frozen: only the bias trains.
    assert [v.name for v in whiten.trainable_weights] == ["bias"]
    # Neither training nor a second call re-initialises it; a model without such a layer is left alone.
    kernel = whiten.kernel.numpy().copy()
    model(x[::-1] * 0.5, training=True)
    assert initialize_from_data(model, x[::-1] * 0.5) == []
    np.testing.assert_array_equal(whiten.kernel.numpy(), kernel)
    assert initialize_from_data(create_model("cnn_vgg", num_classes=10), x) == []


def test_airbench_convs_start_as_identity_and_flops_match_the_hand_count():
    from convbench.models.flops import count_flops
    from convbench.models import create_model

    model = create_model("cnn_airbench", num_classes=10, widths=(16, 32, 32))
    k = model.get_layer("group2a_conv").kernel.numpy()  # 16 -> 32 channels
    np.testing.assert_array_equal(k[1, 1, :, :16], np.eye(16))
    assert np.count_nonzero(k[:, :, :, :16]) == 16
    assert np.count_nonzero(k[:, :, :, 16:]) > 0.9 * k[:, :, :, 16:].size
    # Spatial sizes: 32 -> 31 (2x2 valid whitening) -> 15 -> 7 -> 3.
    hand = (2 * 2 * 2 * 3 * 24 * 31 * 31
            + 2 * 9 * 24 * 16 * 31 * 31 + 2 * 9 * 16 * 16 * 15 * 15
            + 2 * 9 * 16 * 32 * 15 * 15 + 2 * 9 * 32 * 32 * 7 * 7
            + 2 * 9 * 32 * 32 * 7 * 7 + 2 * 9 * 32 * 32 * 3 * 3
            + 2 * 32 * 10)
    assert count_flops(model) == hand


def test_scaled_bias_trains_at_64x_the_learning_rate():
    import keras

    from convbench.models.fast import BIAS_LR_SCALE, _layer

    layer = _layer("ScaledBias")()
    x = np.zeros((4, 3), "float32")
    layer(x)
    opt = keras.optimizers.SGD(learning_rate=0.01)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))  # d loss / d effective bias = 4 per channel
    opt.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights))
    effective = layer.bias.numpy() * layer.scale
    # Plain SGD on the effective bias would move it by -0.01 x 4; the reparametrisation moves it 64x as far.
    np.testing.assert_allclose(effective, -0.01 * 4 * BIAS_LR_SCALE, rtol=1e-5)
    assert math.isclose(layer.scale**2, BIAS_LR_SCALE)


def test_airbench_recipe_translates_the_hyperparameters():
    recipe = bench.airbench_recipe(10, batch_size=512)
    assert recipe.train.learning_rate() == pytest.approx(1.5 * 512 / 1024, rel=1e-3)
    assert recipe.train.momentum == 0.85 and recipe.regularization.label_smoothing == 0.2
    assert recipe.augment.crop_padding == 2 and recipe.augment.flip and recipe.augment.alternate_flip
    assert recipe.train.lookahead_every == 5 and recipe.train.lookahead_decay == pytest.approx(0.95**5)


def test_gpu_check_without_a_gpu_is_one_clear_line_and_writes_nothing(tmp_path, capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible here: gpu-check would run for real (make gpu-check)")
    out = tmp_path / "gpu"
    assert main(["gpu-check", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convbench: error: no GPU is visible to TensorFlow") and "make gpu-check" in err[0]
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# The PyTorch peer (optional: torch is the `peer` extra)


@pytest.mark.parametrize("name", ["cnn_vgg", "cnn_resnet"])
def test_torch_twin_has_the_keras_models_trainable_parameters(name):
    from convbench.bench import torch_peer
    from convbench.models import create_model

    if torch_peer.torch_missing():
        pytest.skip(torch_peer.torch_missing())
    twin = torch_peer.build_torch_twin(name)
    keras_model = create_model(name, num_classes=10)
    keras_trainable = sum(int(np.prod(v.shape)) for v in keras_model.trainable_variables)
    assert sum(p.numel() for p in twin.parameters()) == keras_trainable
    import torch

    assert tuple(twin(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)
    for bf16 in (True, False):
        assert torch_peer.torch_images_per_s(name, batch_size=8, steps=2, warmup=1, bf16=bf16) > 0
    # The twin follows the recipe's dropout as the Keras builder does: rate 0 leaves no dropout layer.
    dropouts = lambda m: [layer.p for layer in m.modules() if isinstance(layer, torch.nn.Dropout)]  # noqa: E731
    expected = [layer.rate for layer in keras_model.layers if layer.__class__.__name__ == "Dropout"]
    assert dropouts(twin) == expected
    assert dropouts(torch_peer.build_torch_twin(name, dropout=0.0)) == []


def test_torch_peer_without_torch_says_why():
    from convbench.bench import torch_peer

    reason = torch_peer.torch_missing()
    try:
        import torch  # noqa: F401

        assert reason is None
    except ImportError:
        assert reason and "peer" in reason
    with pytest.raises(ConvbenchError, match="no PyTorch twin"):
        torch_peer.build_torch_twin("cnn_airbench")
