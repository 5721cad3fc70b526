"""A PyTorch twin of the custom CNNs, timed in `convbench bench` beside convbench's own loop.

    pip install -e ".[peer]"          # torch (CPU); without it the bench says the peer was skipped
    convbench bench --models cnn_resnet,cnn_vgg --rounds 1 --no-variants --out runs/bench

What a PyTorch user would get on the same CPU: the same layers (3x3 convs without bias, BatchNorm
with the same momentum and epsilon, ReLU, max-pooling, dropout, the same head), trained with SGD
Nesterov and label-smoothed cross-entropy, channels-last, in bf16 under
`torch.autocast("cpu", torch.bfloat16)` and in float32, on random un-augmented batches (so it
compares with the bench's "same input" figure of convbench's loop). The weights are not
convbench's: only speed is compared.
"""

from __future__ import annotations

import inspect
import os
import time

from convbench.errors import ConvbenchError
from convbench.models import model_info
from convbench.models.custom import CIFAR_MEAN, CIFAR_STD

TWINS = ("cnn_vgg", "cnn_resnet")


def torch_missing() -> str | None:
    """Why the peer cannot run here, or None when torch imports."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (pip install -e \".[peer]\")"
    return None


def _default_width(name: str) -> int:
    # The Keras builder's own default, so the twin follows the registered model when it is widened.
    return inspect.signature(model_info(name).builder).parameters["width"].default


def build_torch_twin(name: str, num_classes: int = 10, dropout: float | None = None):
    """The PyTorch twin of a registered custom CNN (cnn_vgg or cnn_resnet at the width its builder defaults to).

    Args:
        name: a name in TWINS.
        num_classes: output logits.
        dropout: one rate for every dropout layer, as the Keras builder's `dropout` (the recipe's
            `regularization.dropout`); None = the builder's default rates.

    Returns:
        A torch.nn.Module taking (N, 3, 32, 32) float images in [0, 255].
    """
    if name not in TWINS:
        raise ConvbenchError(f"no PyTorch twin of {name!r}; the peer covers {', '.join(TWINS)}")
    import torch
    from torch import nn

    def conv_bn(cin, cout):
        # Keras' momentum 0.9 is PyTorch's 0.1 (the weight of the new batch).
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1), nn.ReLU(inplace=True)]

    class Normalize(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))

        def forward(self, x):
            return (x - self.mean) / self.std

    if name == "cnn_vgg":
        w, layers, cin = _default_width("cnn_vgg"), [Normalize()], 3
        rates = [0.1, 0.2, 0.3, 0.3] if dropout is None else [dropout] * 4
        for stage, rate in zip((1, 2, 4), rates):
            layers += conv_bn(cin, w * stage) + conv_bn(w * stage, w * stage) + [nn.MaxPool2d(2)]
            layers += [nn.Dropout(rate)] if rate else []  # Keras' Dropout(0) does nothing either
            cin = w * stage
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()] + ([nn.Dropout(rates[3])] if rates[3] else [])
        layers += [nn.Linear(cin, num_classes)]
        return nn.Sequential(*layers)

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(c, c), *conv_bn(c, c))

        def forward(self, x):
            return x + self.body(x)

    class ResNet(nn.Module):
        def __init__(self, w=_default_width("cnn_resnet")):
            super().__init__()
            self.net = nn.Sequential(
                Normalize(), *conv_bn(3, w), *conv_bn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w),
                *conv_bn(2 * w, 4 * w), nn.MaxPool2d(2), *conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w),
                nn.AdaptiveMaxPool2d(1), nn.Flatten())
            self.fc = nn.Linear(8 * w, num_classes, bias=False)

        def forward(self, x):
            return self.fc(self.net(x)) * 0.125

    return ResNet()


def torch_images_per_s(name: str, batch_size: int, steps: int, warmup: int, bf16: bool, num_classes: int = 10,
                       label_smoothing: float = 0.1, seed: int = 0, dropout: float | None = None) -> float:
    """Training images/s of the PyTorch twin: `warmup` untimed steps, then `steps` timed ones.

    Args:
        name: a name in TWINS.
        batch_size: images per step.
        steps: timed steps.
        warmup: untimed steps first (at least 1).
        bf16: autocast to bfloat16 (else float32 throughout).
        num_classes: output logits.
        label_smoothing: of the cross-entropy, as convbench's recipe.
        seed: for the weights and the random batch.
        dropout: as `build_torch_twin`'s.

    Returns:
        Images per second over the timed steps.
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    model = build_torch_twin(name, num_classes, dropout).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    x = (torch.rand(batch_size, 3, 32, 32) * 255).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        optimizer.step()
        return float(loss)  # the same per-step read-back as convbench's progress

    for _ in range(max(warmup, 1)):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def torch_version() -> str:
    import torch

    return str(torch.__version__)
