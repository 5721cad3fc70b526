"""The two CNN architectures designed here, trained from scratch on 32x32 images.

    python -c "from convbench.models import create_model; create_model('cnn_resnet').summary()"
"""

from __future__ import annotations

from convbench.i18n import N_
from convbench.models.activations import activation
from convbench.models.batchnorm import batch_norm
from convbench.models.conv import conv2d
from convbench.models.registry import register_model

# Per-channel mean and std of the CIFAR-10 training pixels (0-255 scale). Baked into the model so
# every input pipeline feeds raw pixels and no statistics need to be fitted per run.
CIFAR_MEAN = (125.3, 123.0, 113.9)
CIFAR_STD = (63.0, 62.1, 66.7)


def _normalize(x):
    import keras

    scale = [1.0 / s for s in CIFAR_STD]
    offset = [-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)]
    return keras.layers.Rescaling(scale=scale, offset=offset, name="normalize")(x)


def _conv_bn(x, filters: int, name: str, weight_init="he_normal", pool: str = ""):
    """conv3x3-BN-ReLU, then a 2x2 max-pool named `pool` if given.

    Max-pooling commutes with ReLU (both are monotone), so the pooled block applies ReLU after the
    pool: the same function and gradients, with ReLU and its gradient on a quarter of the values.
    In bf16 on a CPU the ReLU gradient is an unfused element-wise op that cost as much as a
    convolution (docs/precision-and-performance.md).
    """
    import keras

    x = conv2d(filters, 3, padding="same", use_bias=False, kernel_initializer=weight_init, name=f"{name}_conv")(x)
    # momentum 0.9: running statistics settle within a short training, unlike Keras' default 0.99.
    x = batch_norm(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    if pool:
        x = keras.layers.MaxPooling2D(name=pool)(x)
    return activation("relu", name=f"{name}_relu")(x)


@register_model("cnn_vgg", kind="custom",
                description=N_("VGG-style CNN: three stages of two 3x3 conv+BN+ReLU, max-pool and dropout; GAP head."))
def cnn_vgg(num_classes: int, input_shape=(32, 32, 3), width: int = 48, dropout: float | None = None):
    """VGG-style CNN: three stages of two 3x3 conv+BN+ReLU, max-pool and dropout; GAP head.

    Rationale: the simplest design that trains reliably from scratch on CIFAR. Stacked 3x3
    convolutions (Simonyan & Zisserman 2015) give a 5x5 receptive field per stage with fewer
    parameters than one 5x5; BatchNorm (Ioffe & Szegedy 2015) lets a high learning rate work;
    dropout after every stage, rising with depth, and global average pooling instead of Flatten
    + large Dense keep the parameter count (and overfitting) small. Widths double as resolution
    halves (w, 2w, 4w) so every stage costs about the same FLOPs.

    Args:
        num_classes: output logits.
        input_shape: input image shape.
        width: channels of the first stage (48 → 0.65 M parameters; 32 → 0.29 M). bf16 on a CPU with
            AMX made width cheap: in a bare training step on 2 AMX cores, bf16 ran 2.42x as fast as
            float32 at width 32 and 2.78x at 48 (1,393 against 2,344 img/s in bf16: 2.2x the FLOPs for
            1.7x the time), and the quick preset's test accuracy rose from 82.96 % to 84.50 %
            (docs/precision-and-performance.md).
        dropout: one rate for every dropout layer; None = 0.1, 0.2, 0.3 by stage and 0.3 before the head.
    """
    import keras

    rates = [0.1, 0.2, 0.3, 0.3] if dropout is None else [dropout] * 4
    inputs = keras.Input(shape=input_shape, name="image")
    x = _normalize(inputs)
    for stage, mult in enumerate((1, 2, 4)):
        x = _conv_bn(x, width * mult, f"stage{stage + 1}a")
        x = _conv_bn(x, width * mult, f"stage{stage + 1}b", pool=f"stage{stage + 1}_pool")
        x = keras.layers.Dropout(rates[stage], name=f"stage{stage + 1}_dropout")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(rates[3], name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn_vgg")


@register_model("cnn_resnet", kind="custom",
                description=N_("Residual CNN after ResNet-9 and airbench: conv-pool stages with two identity-skip blocks."))
def cnn_resnet(num_classes: int, input_shape=(32, 32, 3), width: int = 32, dropout: float | None = None):
    """Residual CNN after ResNet-9 and airbench: conv-pool stages with two identity-skip blocks.

    Rationale, and what was taken from whom:
    - Myrtle.ai's ResNet-9 ("How to train your ResNet", Page 2018): prep conv, then
      conv-BN-ReLU-maxpool stages (w, 2w, 4w, 8w) with a residual pair of convs after the first
      and last downsampling; pooling instead of strided convs; global *max* pooling; logits scaled
      by 0.125 so the softmax starts soft and a high learning rate is stable.
    - airbench (Jordan 2024) / hlb-CIFAR10: BatchNorm with a short momentum, label smoothing and
      a one-cycle schedule with Nesterov SGD (set in the training recipe), flip augmentation.
    The skip connections keep gradients healthy, so the net trains fast in few epochs, which is
    what a CPU budget needs.

    Args:
        num_classes: output logits.
        input_shape: input image shape.
        width: channels of the prep conv (32 → 1.65 M parameters; Myrtle's ResNet-9 uses 64). 32 and
            its multiples fill the bf16 tiles of Intel AMX (and GPU tensor cores want multiples of
            8): at 24 (24/48/96/192 channels, 0.93 M parameters) a bare bf16 training step ran
            2.15x as fast as float32 on a 2-core AMX CPU, at 32 2.69x, so the wider net costs 1.8x
            the FLOPs for about 1.3x the bf16 time there (docs/precision-and-performance.md).
        dropout: rate before the classifier; None = 0 (the residual net relies on BN, augmentation
            and label smoothing).
    """
    import keras

    def residual(x, filters, name):
        y = _conv_bn(x, filters, f"{name}a")
        y = _conv_bn(y, filters, f"{name}b")
        return keras.layers.Add(name=f"{name}_add")([x, y])

    inputs = keras.Input(shape=input_shape, name="image")
    x = _normalize(inputs)
    x = _conv_bn(x, width, "prep")
    x = _conv_bn(x, width * 2, "layer1", pool="layer1_pool")
    x = residual(x, width * 2, "res1")
    x = _conv_bn(x, width * 4, "layer2", pool="layer2_pool")
    x = _conv_bn(x, width * 8, "layer3", pool="layer3_pool")
    x = residual(x, width * 8, "res3")
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, dtype="float32", name="fc")(x)
    outputs = keras.layers.Rescaling(0.125, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn_resnet")
