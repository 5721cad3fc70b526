"""ImageNet-1k class indices grouped by the CIFAR-10 class they depict.

Used to check an ImageNet classifier on CIFAR images: an image of a CIFAR "cat" counts as a hit
when the classifier's top-5 contains one of `IMAGENET_GROUPS["cat"]`. The indices are the standard
ILSVRC-2012 order (0 = tench ... 999 = toilet tissue) used by Keras `imagenet_class_index.json`
and PyTorch/TF classifiers; each entry below names the ImageNet labels it covers.

The groups are disjoint, so "which group got the most probability" is a 9-way classification.
CIFAR "deer" is left out: ImageNet-1k has no deer class (the nearest, hartebeest 351, impala 352
and gazelle 353, are antelopes).

Test: .venv/bin/pytest tests/test_efficientnet_lite.py -q
"""

from __future__ import annotations

from math import comb


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


IMAGENET_GROUPS: dict[str, tuple[int, ...]] = {
    # 404 airliner, 895 warplane/military plane, 908 wing.
    "airplane": (404, 895, 908),
    # 436 beach wagon/station wagon, 468 cab/taxi, 479 car wheel, 511 convertible, 581 grille,
    # 609 jeep, 627 limousine, 656 minivan, 661 Model T, 751 racer/race car, 817 sports car.
    "automobile": (436, 468, 479, 511, 581, 609, 627, 656, 661, 751, 817),
    # 7 cock ... 24 great grey owl; 80 black grouse ... 100 black swan;
    # 127 white stork ... 146 albatross.
    "bird": _span(7, 24) + _span(80, 100) + _span(127, 146),
    # Domestic cats: 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat.
    "cat": _span(281, 285),
    # 151 Chihuahua ... 268 Mexican hairless (all 118 dog breeds).
    "dog": _span(151, 268),
    # 30 bullfrog, 31 tree frog, 32 tailed frog.
    "frog": _span(30, 32),
    # 339 sorrel (the only horse class), 603 horse cart.
    "horse": (339, 603),
    # 403 aircraft carrier, 472 canoe, 484 catamaran, 510 container ship, 554 fireboat,
    # 576 gondola, 625 lifeboat, 628 liner, 724 pirate ship, 780 schooner, 814 speedboat,
    # 833 submarine, 871 trimaran, 914 yawl.
    "ship": (403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914),
    # 407 ambulance, 555 fire engine, 569 garbage truck, 675 moving van, 717 pickup truck,
    # 734 police van, 757 recreational vehicle, 864 tow truck, 867 trailer truck.
    "truck": (407, 555, 569, 675, 717, 734, 757, 864, 867),
}


def topk_chance(group_size: int, k: int = 5, num_classes: int = 1000) -> float:
    """Probability that k distinct classes drawn at random include one of `group_size` classes.

    Args:
        group_size: Number of ImageNet classes in the group.
        k: How many top predictions are checked.
        num_classes: Size of the label space.

    Returns:
        1 - C(num_classes - group_size, k) / C(num_classes, k), about k * group_size / num_classes
        for small groups.
    """
    return 1.0 - comb(num_classes - group_size, k) / comb(num_classes, k)
