"""`cnn_airbench`: the fast custom CNN for the time-to-accuracy targets (after airbench93/94).

    python -c "from convbench.models import create_model; create_model('cnn_airbench').summary()"
    .venv/bin/pytest tests/test_bench.py -q -k airbench

Everything that makes it fast lives *inside the model*, so it trains the same way in every
convbench path (`convbench run`, Ray workers, `convbench bench --time-to-accuracy`) with the
standard loop: the patch-whitening first layer is set from the first training batch by
`initialize_from_data` (which every training path calls before its first step), the identity
(dirac) initialisation is a Keras initializer, and the 64x BatchNorm-bias learning rate is a
reparametrisation. The rest of the recipe (label smoothing, Nesterov SGD with a one-cycle
schedule, translate-by-2 and flip augmentation, large batches) is a training recipe:
`convbench.bench.benchmark.airbench_recipe`.
"""

from __future__ import annotations

import math

import numpy as np

from convbench.i18n import N_
from convbench.models.activations import activation as fused_activation
from convbench.models.batchnorm import batch_norm
from convbench.models.conv import conv2d
from convbench.models.custom import _normalize
from convbench.models.registry import register_model

# airbench scales the learning rate of BatchNorm biases by 64. For SGD (with momentum and
# decoupled weight decay) a bias used as `scale * b` trains exactly like `b` with its learning rate
# multiplied by scale**2, so a scale of 8 gives the 64x without per-variable learning rates.
BIAS_LR_SCALE = 64.0


def _keras():
    import keras

    return keras


def _register(cls):
    return _keras().saving.register_keras_serializable(package="convbench")(cls)


def _partial_dirac_class():
    keras = _keras()

    @_register
    class PartialDirac(keras.initializers.Initializer):
        """3x3 conv kernel whose first `cin` filters are the identity, the rest PyTorch's default init.

        airbench's `torch.nn.init.dirac_(w[:w.size(1)])`: the convolution starts as an implicit
        residual connection (it passes its input through), which trains in fewer epochs. The other
        filters are uniform(+-1/sqrt(fan_in)), PyTorch's Conv2d default.
        """

        def __init__(self, seed=None):
            self.seed = seed
            self._base = keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed)

        def __call__(self, shape, dtype=None):
            kh, kw, cin, cout = shape
            k = min(cin, cout)
            keep = np.ones(shape, np.float32)
            keep[..., :k] = 0.0
            dirac = np.zeros(shape, np.float32)
            dirac[kh // 2, kw // 2, np.arange(k), np.arange(k)] = 1.0
            base = self._base(shape, dtype="float32")
            return keras.ops.cast(base * keep + dirac, dtype or "float32")

        def get_config(self):
            return {"seed": self.seed}

    return PartialDirac


def _scaled_bias_class():
    keras = _keras()

    @_register
    class ScaledBias(keras.layers.Layer):
        """Adds `scale * bias` per channel: a bias whose SGD learning rate is scale**2 times the base."""

        def __init__(self, scale: float = math.sqrt(BIAS_LR_SCALE), **kwargs):
            super().__init__(**kwargs)
            self.scale = float(scale)

        def build(self, input_shape):
            self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

        def call(self, x):
            return x + keras.ops.cast(self.bias * self.scale, x.dtype)

        def get_config(self):
            return {**super().get_config(), "scale": self.scale}

    return ScaledBias


def _whitening_class():
    keras = _keras()

    @_register
    class PatchWhitening(keras.layers.Conv2D):
        """A frozen `k`x`k` "valid" conv whose filters whiten image patches, plus a trainable bias.

        The 2 * C * k * k filters are the eigenvectors of the (uncentred) patch covariance scaled by
        1/sqrt(eigenvalue + eps), and their negatives (airbench's `init_whitening_conv`; patch
        whitening first appeared in Myrtle's ResNet-9 "bag of tricks"). The covariance comes from
        training images before the first step: `initialize_from_data(model, images)`, which every
        convbench training path calls with the first training batch, outside any replica context,
        so every replica and every worker starts from the same filters under any tf.distribute
        strategy. Until initialised the layer outputs its bias only. A Conv2D subclass, so FLOP
        counting and summaries treat it as the convolution it is.
        """

        def __init__(self, filters: int = 24, kernel_size=2, eps: float = 5e-4, **kwargs):
            for fixed in ("strides", "padding", "dilation_rate", "groups", "use_bias", "activation"):
                kwargs.pop(fixed, None)
            super().__init__(filters=filters, kernel_size=kernel_size, padding="valid", use_bias=True, **kwargs)
            self.eps = float(eps)

        def build(self, input_shape):
            kh, kw = self.kernel_size
            c = int(input_shape[-1])
            if self.filters != 2 * c * kh * kw:
                raise ValueError(f"PatchWhitening needs filters = 2 x channels x kh x kw = {2 * c * kh * kw}, got {self.filters}")
            # Assigned once, in the cross-replica context (initialize_from_data); only_first_replica
            # keeps a stray replica-context assignment from averaging different filters.
            self._kernel = self.add_weight(shape=(kh, kw, c, self.filters), initializer="zeros", trainable=False,
                                           aggregation="only_first_replica", name="kernel")
            self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
            self.ready = self.add_weight(shape=(1,), initializer="zeros", trainable=False,
                                         aggregation="only_first_replica", name="ready")
            self.built = True

        def whitening_kernel(self, x):
            """The whitening filters for images `x` (N, H, W, C) as a (kh, kw, C, 2 kh kw C) float32 tensor."""
            import tensorflow as tf

            kh, kw = self.kernel_size
            c = int(x.shape[-1])
            x = tf.cast(x, tf.float32)
            patches = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="VALID")
            flat = tf.reshape(patches, [-1, kh * kw * c])  # (kh, kw, c) order = the conv kernel's layout
            cov = tf.matmul(flat, flat, transpose_a=True) / tf.cast(tf.shape(flat)[0], tf.float32)
            values, vectors = tf.linalg.eigh(cov)
            values, vectors = tf.reverse(values, [0]), tf.reverse(vectors, [1])  # largest first
            scaled = vectors / tf.sqrt(tf.maximum(values, 0.0) + self.eps)[None, :]
            kernel = tf.reshape(scaled, [kh, kw, c, kh * kw * c])
            return tf.concat([kernel, -kernel], axis=-1)

        def is_initialized(self) -> bool:
            return bool(self.ready.numpy()[0] > 0.5)

        def initialize_from_data(self, x) -> None:
            """Set the filters from this layer's input `x` (N, H, W, C); call outside `strategy.run`."""
            self._kernel.assign(self.whitening_kernel(x))
            self.ready.assign(np.ones((1,), np.float32))

        def call(self, x, training=None):
            import tensorflow as tf

            y = tf.nn.conv2d(x, tf.cast(self._kernel, x.dtype), strides=1, padding="VALID")
            return y + tf.cast(self.bias, x.dtype)

        # Conv2D saves kernel and bias only; the "initialised" flag must survive a save too, or a
        # reloaded model would re-whiten on its next training batch.
        def save_own_variables(self, store):
            if self.built:
                for i, variable in enumerate((self._kernel, self.bias, self.ready)):
                    store[str(i)] = variable

        def load_own_variables(self, store):
            if not self.built:
                return
            if len(store.keys()) != 3:
                raise ValueError(f"layer {self.name!r} expects 3 saved variables (kernel, bias, ready), got {len(store.keys())}")
            for i, variable in enumerate((self._kernel, self.bias, self.ready)):
                variable.assign(store[str(i)])

        def get_config(self):
            return {**super().get_config(), "eps": self.eps}

    return PatchWhitening


_CLASSES: dict = {}


def _layer(name: str):
    # Built lazily so importing the registry does not import TensorFlow.
    if name not in _CLASSES:
        _CLASSES.update(PartialDirac=_partial_dirac_class(), ScaledBias=_scaled_bias_class(), PatchWhitening=_whitening_class())
    return _CLASSES[name]


def initialize_from_data(model, images: np.ndarray) -> list[str]:
    """Run the data-dependent initialisation of every layer of `model` that has one.

    Today that is `cnn_airbench`'s patch whitening; a model without such a layer is left as it is.
    Layers already initialised (a reloaded or resumed model) are skipped. Call it after building
    the model (under its strategy's scope) and before the first training step, in the cross-replica
    context: the variables are assigned once, for every replica.

    Args:
        model: a built keras.Model.
        images: (N, H, W, C) training images as the model takes them (pixels in [0, 255]); the
            training paths pass the first training batch of epoch 1.

    Returns:
        The names of the layers initialised.
    """
    import keras
    import tensorflow as tf

    done = []
    for layer in model.layers:
        if hasattr(layer, "initialize_from_data") and not layer.is_initialized():
            upstream = keras.Model(model.inputs, layer.input)
            layer.initialize_from_data(upstream(tf.cast(images, tf.float32), training=False))
            done.append(layer.name)
    return done


@register_model("cnn_airbench", kind="custom",
                description=N_("Fast CNN after airbench93: patch whitening, identity-initialised conv groups, GELU; 93 % target."))
def cnn_airbench(num_classes: int, input_shape=(32, 32, 3), widths: tuple[int, int, int] = (64, 128, 128),
                 dropout: float | None = None, activation: str = "gelu"):
    """Fast CNN after airbench93: patch whitening, identity-initialised conv groups, GELU; 93 % target.

    Architecture (airbench93 by default; widths=(64, 256, 256) is airbench94):
    whitening 2x2 conv (24 filters, frozen, bias trained) + GELU, then three groups of
    conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU, global max pool, a bias-free linear
    layer and logits scaled by 1/9.

    What was taken from whom:
    - airbench (Keller Jordan 2024, github.com/KellerJordan/cifar10-airbench, airbench93/94):
      the network shape and widths, the patch-whitening first layer computed from the training
      data's 2x2 patch covariance (eps 5e-4, filters and their negatives), dirac (identity)
      initialisation of the first filters of every conv, BatchNorm without a scale, momentum 0.6,
      with 64x learning rate on its biases, GELU, 1/9 logit scaling; recipe values in
      `convbench.bench.benchmark.airbench_recipe` (label smoothing 0.2, Nesterov SGD momentum 0.85,
      translate-by-2 and flip augmentation, large batches, flip TTA at evaluation). Its ablation
      table shows whitening, dirac init and the bias scaler cut the epochs to 94 % from 35 to 13.5.
    - hlb-CIFAR10 (tysam-code 2023): the conv-pool-BN-GELU group layout airbench inherited, and the
      lookahead/EMA weight averaging airbench kept as lookahead every 5 steps from epoch 3
      (`TrainConfig.lookahead_every`), with airbench's alternating flip (`AugmentConfig.alternate_flip`).
    - Myrtle.ai ResNet-9, "How to train your ResNet" (David Page 2018): patch whitening, label
      smoothing, max pooling instead of strided convs, scaled-down logits, flip TTA, data resident
      as uint8 with augmentation on the device, one-cycle (piecewise linear) learning rate.
    Not taken: freezing the whitening bias after 3 epochs, whitening from 5,000 images (the first
    batch of 1,024 sets it), multi-crop TTA (airbench93's own recipe, re-run on the JPEG copy, gained
    0.04 points from it over flip TTA) and fp16 channels-last (a CPU runs fp32 NHWC).

    Args:
        num_classes: output logits.
        input_shape: input image shape (at least 18x18 so three poolings leave a feature map).
        widths: channels of the three conv groups; (64, 128, 128) is 0.57 M parameters and 108 forward
            MFLOPs per image, (64, 256, 256) 1.97 M and 236 MFLOPs.
        dropout: rate before the classifier; None = 0 (airbench uses none).
        activation: "gelu" (airbench's); "relu" trained 20-35 % more images/s on the 2-core CPU without
            XLA (the unfused GELU and its gradient cost that much there); its accuracy in this
            recipe is not measured.
    """
    keras = _keras()
    dirac = _layer("PartialDirac")
    scaled_bias = _layer("ScaledBias")

    def conv_bn_gelu(x, filters, name, pool):
        x = conv2d(filters, 3, padding="same", use_bias=False, kernel_initializer=dirac(), name=f"{name}_conv")(x)
        if pool:
            x = keras.layers.MaxPooling2D(name=f"{name}_pool")(x)
        x = batch_norm(momentum=0.6, epsilon=1e-5, center=False, scale=False, name=f"{name}_bn")(x)
        x = scaled_bias(name=f"{name}_bn_bias")(x)
        return fused_activation(activation, name=f"{name}_act")(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = _normalize(inputs)
    x = _layer("PatchWhitening")(filters=2 * int(input_shape[-1]) * 4, kernel_size=2, name="whiten")(x)
    x = fused_activation(activation, name="whiten_act")(x)
    for i, width in enumerate(widths, start=1):
        x = conv_bn_gelu(x, width, f"group{i}a", pool=True)
        x = conv_bn_gelu(x, width, f"group{i}b", pool=False)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, dtype="float32", name="fc")(x)
    outputs = keras.layers.Rescaling(1.0 / 9.0, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn_airbench")
