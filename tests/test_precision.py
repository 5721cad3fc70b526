"""Precision: which dtype policy `auto` picks, the fused batch norm, and every model under every policy.

    .venv/bin/pytest tests/test_precision.py -q

- `choose_precision` decides from the CPU's flags (never its model name) and says why.
- `FusedBatchNorm` computes what Keras' BatchNormalization computes (outputs, gradients, moving
  statistics; training and inference), and weights saved in one precision load in the other.
- `SmallMapConv2D` computes what Keras' Conv2D computes in bf16 (outputs and both gradients) on
  the paths it changes: an RGB input padded to 4 channels, and the weight gradient of a small map
  as a forward convolution; the custom CNNs build every 3x3 conv with it.
- `FusedActivation` (XLA-fused ReLU gradient and GELU in bf16 on CPUs) matches Keras'
  activations within bf16 rounding, and are Keras' own in float32.
- Every registered model trains a short epoch under float32, mixed_bfloat16 and mixed_float16.
- A bf16 convolution runs on oneDNN's bf16 kernel for this CPU (AMX where the CPU has it),
  read from oneDNN's own verbose log in a subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import two_classes  # noqa: E402

from convbench.env import cpu_flags
from convbench.models import list_models
from convbench.training.loop import choose_precision


# ---------------------------------------------------------------------------------------------
# The policy auto picks


@pytest.mark.parametrize("flags, onednn, expected, reason", [
    ({"avx512f", "amx_bf16", "amx_tile", "avx512_bf16"}, True, "mixed_bfloat16", "AMX bf16 present"),
    ({"avx512f", "avx512_bf16"}, True, "mixed_bfloat16", "AVX512-BF16 present"),
    ({"avx2", "avx512f"}, True, "float32", "CPU without AMX or AVX512-BF16"),
    (set(), True, "float32", "CPU without AMX or AVX512-BF16"),
    ({"amx_bf16", "avx512_bf16"}, False, "float32", "AMX bf16 present but oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0)"),
])
def test_auto_precision_on_a_cpu_follows_its_flags(flags, onednn, expected, reason):
    assert choose_precision("auto", gpus=[], flags=flags, onednn=onednn) == (expected, reason)


def test_auto_keeps_depthwise_models_in_float32_on_every_cpu():
    avx = {"avx512f", "avx512_bf16"}
    policy, reason = choose_precision("auto", gpus=[], flags=avx, onednn=True, depthwise=True)
    assert policy == "float32" and "depthwise" in reason
    policy, reason = choose_precision("auto", gpus=[], flags=avx | {"amx_bf16"}, onednn=True, depthwise=True)
    assert policy == "float32" and "AMX bf16" in reason and "depthwise" in reason
    assert choose_precision("mixed_bfloat16", gpus=[], flags=avx, onednn=True, depthwise=True)[0] == "mixed_bfloat16"


@pytest.mark.parametrize("name", list_models())
def test_every_model_gets_a_policy_and_a_reason(name):
    from convbench.config import preset
    from convbench.training.recipes import model_precision
    from convbench.models import model_info

    policy, reason = model_precision(name, preset("quick").recipe(name))
    assert policy in ("float32", "mixed_bfloat16", "mixed_float16") and reason
    assert model_info(name).depthwise == (name.startswith("efficientnet_") or name == "mobilenet_v2")


def test_explicit_precision_settings_win_over_the_hardware():
    amx = {"amx_bf16", "avx512_bf16"}
    assert choose_precision("off", gpus=[], flags=amx, onednn=True) == ("float32", "mixed_precision: off")
    assert choose_precision("mixed_float16", gpus=[], flags=amx, onednn=True)[0] == "mixed_float16"
    assert choose_precision("mixed_bfloat16", gpus=[], flags=set(), onednn=False)[0] == "mixed_bfloat16"


def test_auto_on_this_machine_matches_its_cpu_flags():
    policy, reason = choose_precision("auto")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: auto follows its compute capability, not the CPU")
    bf16 = bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    assert (policy == "mixed_bfloat16") == (bf16 and "oneDNN is off" not in reason), reason


# ---------------------------------------------------------------------------------------------
# FusedBatchNorm against Keras' BatchNormalization


def _pair(channels: int, center: bool, scale: bool, seed: int = 0):
    import keras

    from convbench.models.batchnorm import fused_batch_norm_class

    kwargs = dict(momentum=0.9, epsilon=1e-5, center=center, scale=scale)
    ref, fused = keras.layers.BatchNormalization(**kwargs), fused_batch_norm_class()(**kwargs)
    shape = (8, 6, 6, channels)
    ref.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(seed)
    for a, b in zip(ref.weights, fused.weights):
        value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    return ref, fused


@pytest.mark.parametrize("channels", [16, 24])  # 24: the float32 fallback for channel counts bf16 kernels do not block
@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
def test_fused_batch_norm_matches_keras_in_float32(channels, center, scale):
    import tensorflow as tf

    ref, fused = _pair(channels, center, scale)
    assert [w.name for w in ref.weights] == [w.name for w in fused.weights]
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (8, 6, 6, channels)).astype("float32"))
    for step in range(3):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ref, y_fused = ref(x, training=True), fused(x, training=True)
            loss_ref, loss_fused = tf.reduce_sum(y_ref**3), tf.reduce_sum(y_fused**3)
        np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
        np.testing.assert_allclose(tape.gradient(loss_fused, x), tape.gradient(loss_ref, x), rtol=1e-4, atol=1e-4)
        for a, b in zip(ref.trainable_weights, fused.trainable_weights):
            np.testing.assert_allclose(tape.gradient(loss_fused, b), tape.gradient(loss_ref, a), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-5)
        x = x * 0.5 + float(step)
    np.testing.assert_allclose(fused(x, training=False), ref(x, training=False), atol=1e-5)


@pytest.mark.parametrize("channels", [16, 24])
def test_fused_batch_norm_in_bfloat16_keeps_float32_statistics(channels):
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    ref, fused = _pair(channels, True, True)
    keras.mixed_precision.set_dtype_policy("float32")
    x = np.random.default_rng(2).normal(0.0, 2.0, (8, 6, 6, channels)).astype("float32")
    y_ref = ref(tf.constant(x), training=True)
    y = fused(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    assert {w.dtype for w in fused.weights} == {"float32"}
    # bf16 keeps 8 significant bits: outputs agree to about 1 %, the float32 statistics closer.
    np.testing.assert_allclose(tf.cast(y, tf.float32), y_ref, atol=0.05)
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), atol=0.01)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=0.02)


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_pads_a_channel_count_bf16_kernels_do_not_block(training):
    """24 channels in bf16 run the fused kernel on 32 (zero channels added, then dropped): the same
    outputs, input gradient and moving statistics as Keras' layer in float32, to bf16 rounding."""
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    ref, fused = _pair(24, True, True)
    keras.mixed_precision.set_dtype_policy("float32")
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, (8, 6, 6, 24)).astype("float32"))
    xb = tf.cast(x, tf.bfloat16)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, xb])
        y_ref, y = ref(x, training=training), fused(xb, training=training)
        loss_ref, loss = tf.reduce_sum(y_ref**2), tf.reduce_sum(tf.cast(y, tf.float32)**2)
    assert y.shape == y_ref.shape and y.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float32), y_ref, atol=0.05)
    grad, grad_ref = tf.cast(tape.gradient(loss, xb), tf.float32), tape.gradient(loss_ref, x)
    np.testing.assert_allclose(grad, grad_ref, atol=0.05 * float(tf.reduce_max(tf.abs(grad_ref))))
    for a, b in zip(ref.trainable_weights, fused.trainable_weights):
        g_ref = tape.gradient(loss_ref, a)
        np.testing.assert_allclose(tape.gradient(loss, b), g_ref, atol=0.05 * float(tf.reduce_max(tf.abs(g_ref))))
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), atol=0.01)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=0.02)
    assert fused.moving_mean.shape == (24,)


# ---------------------------------------------------------------------------------------------
# SmallMapConv2D against Keras' Conv2D


@pytest.mark.parametrize("side, channels_in, channels_out, path", [
    (4, 32, 48, "weight gradient as a forward conv"),  # a small map: 4x4 = 16 pixels
    (2, 16, 16, "weight gradient as a forward conv"),
    (8, 3, 32, "RGB input padded to 4 channels"),
    (8, 16, 32, "Keras' own"),  # 64 pixels: the native kernel is faster there
])
def test_small_map_conv_matches_keras_conv_in_bfloat16(side, channels_in, channels_out, path):
    """Outputs, input gradient and kernel gradient against Conv2D, both in bf16 and against float32."""
    import keras
    import tensorflow as tf

    from convbench.models.conv import small_map_conv_class

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        ref = keras.layers.Conv2D(channels_out, 3, padding="same", use_bias=True)
        conv = small_map_conv_class()(channels_out, 3, padding="same", use_bias=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    exact = keras.layers.Conv2D(channels_out, 3, padding="same", use_bias=True)
    shape = (8, side, side, channels_in)
    for layer in (ref, conv, exact):
        layer.build(shape)
    rng = np.random.default_rng(5)
    for values in zip(ref.weights, conv.weights, exact.weights):
        value = rng.normal(0.0, 0.2, values[0].shape).astype("float32")
        for v in values:
            v.assign(value)
    assert [w.shape for w in conv.weights] == [w.shape for w in ref.weights]
    x = tf.constant(rng.normal(0.0, 1.0, shape).astype("float32"))
    xb = tf.cast(x, tf.bfloat16)
    results = {}
    for name, layer, inputs in (("ref", ref, xb), ("conv", conv, xb), ("exact", exact, x)):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        dx, dk, db = tape.gradient(loss, [inputs, layer.kernel, layer.bias])
        results[name] = [np.asarray(tf.cast(t, tf.float32)) for t in (y, dx, dk, db)]
        if name == "conv":
            assert y.dtype == tf.bfloat16
    for what, got, want, exact_value in zip(("y", "dx", "dkernel", "dbias"), results["conv"], results["ref"], results["exact"]):
        scale = float(np.max(np.abs(exact_value)))
        # bf16 keeps 8 significant bits; the two bf16 paths differ only in summation order.
        np.testing.assert_allclose(got, want, atol=0.03 * scale, err_msg=what)
        if what != "dbias":  # Keras' own bias gradient sums in bf16 (both bf16 layers alike)
            np.testing.assert_allclose(got, exact_value, atol=0.03 * scale, err_msg=what)


def test_small_map_conv_takes_the_forward_conv_weight_gradient_only_on_small_maps():
    """The traced gradient of a 4x4 map has no native weight-gradient op; an 8x8 map's has one."""
    import keras
    import tensorflow as tf

    from convbench.models.conv import small_map_conv_class

    def gradient_ops(side):
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
        try:
            conv = small_map_conv_class()(16, 3, padding="same", use_bias=False)
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
        conv.build((4, side, side, 16))

        @tf.function
        def grads(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.cast(conv(x), tf.float32))
            return tape.gradient(loss, conv.kernel)

        graph = grads.get_concrete_function(tf.TensorSpec((4, side, side, 16), tf.bfloat16)).graph
        types = set()
        for op in graph.get_operations():
            types.add(op.type)
            for f in graph._functions.values():  # the custom gradient's body is a nested function
                types.update(o.type for o in getattr(f, "graph", graph).get_operations())
        return types

    assert "Conv2DBackpropFilter" not in gradient_ops(4)
    assert "Conv2DBackpropFilter" in gradient_ops(8)


# ---------------------------------------------------------------------------------------------
# FusedActivation against Keras' activations


def _activation_layers(kind: str, policy: str):
    import keras

    from convbench.models.activations import fused_activation_class

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        fused, ref = fused_activation_class()(kind), keras.layers.Activation(kind)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return fused, ref


def _value_and_gradient(layer, x):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.linspace(-1.0, 1.0, int(x.shape[-1])))
    return y, tape.gradient(loss, x)


@pytest.mark.parametrize("kind", ["gelu", "relu"])
def test_fused_activation_matches_keras_in_bfloat16_and_is_keras_in_float32(kind):
    """bf16: value and gradient within bf16 rounding of float32 Keras (and at least as close as
    Keras' own bf16 layer); float32: Keras' own result, to the bit."""
    import tensorflow as tf

    x32 = tf.constant(np.random.default_rng(6).normal(0.0, 2.0, (4, 5, 5, 16)).astype("float32"))
    _, exact = _activation_layers(kind, "float32")
    y_exact, g_exact = _value_and_gradient(exact, x32)
    fused, ref = _activation_layers(kind, "mixed_bfloat16")
    xb = tf.cast(x32, tf.bfloat16)
    (y, g), (y_ref, g_ref) = _value_and_gradient(fused, xb), _value_and_gradient(ref, xb)
    assert y.dtype == tf.bfloat16 and g.dtype == tf.bfloat16
    for got, keras_bf16, want in ((y, y_ref, y_exact), (g, g_ref, g_exact)):
        err = np.max(np.abs(tf.cast(got, tf.float32) - want))
        err_keras = np.max(np.abs(tf.cast(keras_bf16, tf.float32) - want))
        assert err <= max(err_keras, 0.02 * float(np.max(np.abs(want)))), (err, err_keras)
    fused32, _ = _activation_layers(kind, "float32")
    y32, g32 = _value_and_gradient(fused32, x32)
    np.testing.assert_array_equal(y32, y_exact)
    np.testing.assert_array_equal(g32, g_exact)


def test_fused_activation_compiles_its_loops_only_in_bfloat16():
    """The traced bf16 gradient holds XLA-compiled functions (_XlaMustCompile); float32's holds none."""
    import tensorflow as tf

    def compiled_functions(policy):
        layer, _ = _activation_layers("gelu", policy)
        dtype = tf.bfloat16 if policy == "mixed_bfloat16" else tf.float32

        @tf.function
        def grad(x):
            return _value_and_gradient(layer, x)[1]

        graph = grad.get_concrete_function(tf.TensorSpec((2, 3, 3, 4), dtype)).graph
        library = graph.as_graph_def().library.function
        return [f.signature.name for f in library if f.attr.get("_XlaMustCompile") and f.attr["_XlaMustCompile"].b]

    assert len(compiled_functions("mixed_bfloat16")) >= 2  # forward and backward
    assert compiled_functions("float32") == []


def test_custom_cnns_build_every_3x3_conv_as_a_small_map_conv():
    import keras

    from convbench.models import create_model
    from convbench.models.conv import small_map_conv_class
    from convbench.training.recipes import leaf_layers

    for name in list_models("custom"):
        convs = [layer for layer in leaf_layers(create_model(name)) if type(layer) is keras.layers.Conv2D or
                 isinstance(layer, small_map_conv_class())]
        threes = [layer for layer in convs if tuple(layer.kernel_size) == (3, 3)]
        assert threes and all(isinstance(layer, small_map_conv_class()) for layer in threes), name


def _reload(model, policy: str, path):
    """`model`'s weights saved to `path` and loaded into a new cnn_resnet built under `policy`: bit-identical."""
    import keras

    from convbench.models import create_model

    model.save_weights(path)
    keras.mixed_precision.set_dtype_policy(policy)
    again = create_model("cnn_resnet", num_classes=10)
    again.load_weights(path)
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    return again


def test_weights_saved_in_one_precision_load_into_the_other(tmp_path):
    """A cnn_resnet trained a step in bf16 saves weights that a float32 build loads, and back."""
    import keras
    import tensorflow as tf

    from convbench.models import create_model

    x = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    bf16 = create_model("cnn_resnet", num_classes=10)
    bf16(x, training=True)  # moves the BatchNorm statistics away from their initial values
    fp32 = _reload(bf16, "float32", tmp_path / "bf16.weights.h5")
    # The same weights give the same logits up to bf16 rounding of the activations.
    out_fp32 = fp32(x, training=False).numpy()
    out_bf16 = tf.cast(bf16(x, training=False), tf.float32).numpy()
    np.testing.assert_allclose(out_bf16, out_fp32, atol=0.1)
    _reload(fp32, "mixed_bfloat16", tmp_path / "fp32.weights.h5")


def test_custom_cnns_use_the_fused_batch_norm():
    import keras

    from convbench.training.recipes import leaf_layers
    from convbench.models import create_model
    from convbench.models.batchnorm import fused_batch_norm_class

    for name in list_models("custom"):
        norms = [layer for layer in leaf_layers(create_model(name)) if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all(isinstance(layer, fused_batch_norm_class()) for layer in norms), name


# ---------------------------------------------------------------------------------------------
# Every model under every policy


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["off", "mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_under_every_precision_policy(name, policy):
    """A short training of each model in each policy: finite losses, float32 logits, the policy recorded."""
    from convbench.config import TrainConfig, preset
    from convbench.data.datasets import Dataset
    from convbench.training.recipes import fit_model
    from convbench.models import model_info

    x, y = two_classes(64)
    xv, yv = two_classes(32, seed=1)
    data = Dataset(x, y, xv, yv, xv, yv, ["dark", "bright"], "synthetic")
    base = preset("quick").recipe(name)
    recipe = dataclasses.replace(base, train=TrainConfig(epochs=1, global_batch_size=32, mixed_precision=policy, eval_batch_size=32),
                                 transfer=dataclasses.replace(base.transfer, resolution=32, head_steps=2, finetune_epochs=1,
                                                              finetune_blocks=1))
    model, result = fit_model(name, data, recipe, weights=None)
    expected = "float32" if policy == "off" else policy
    assert result.mixed_precision == expected
    assert result.precision_reason.startswith("mixed_precision:")
    assert model.compute_dtype == ("float32" if policy == "off" else policy.replace("mixed_", ""))
    assert all(np.isfinite(r.train_loss) and np.isfinite(r.val_loss) for r in result.history)
    assert len(result.history) == (2 if model_info(name).kind == "transfer" else 1)
    logits = model(x[:4].astype("float32"), training=False)
    assert logits.dtype.name == "float32" and np.all(np.isfinite(logits))


# ---------------------------------------------------------------------------------------------
# oneDNN's kernel


_CONV = """
import tensorflow as tf
x = tf.cast(tf.random.normal((64, 16, 16, 64)), tf.bfloat16)
k = tf.cast(tf.random.normal((3, 3, 64, 64)), tf.bfloat16)
tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))(x, k).numpy()
"""


def test_a_bf16_convolution_runs_on_onednn_bf16_kernels_for_this_cpu():
    flags = cpu_flags()
    if "amx_bf16" in flags:
        isa = "amx"
    elif "avx512_bf16" in flags:
        isa = "avx512_core_bf16"
    else:
        pytest.skip("this CPU has neither AMX nor AVX512-BF16 (no amx_bf16/avx512_bf16 in /proc/cpuinfo)")
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", _CONV], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    convs = [line for line in out.stdout.splitlines() if ",exec," in line and ",convolution," in line]
    assert convs, "oneDNN ran no convolution: is TensorFlow's oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)?"
    assert any(isa in line and "src:bf16" in line for line in convs), convs[:3]
