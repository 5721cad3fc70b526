"""Transfer learning's two phases (issue 14): the head trains on cached features for a number of
optimizer steps, whatever the data size, with its own schedule and early stopping on validation
loss; `--epochs` counts the fine-tuning epochs that follow; a pooling head gets features pooled
once, with the same outputs as the full model.

    .venv/bin/python -m pytest tests/test_transfer.py -q
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import two_classes  # noqa: E402

from convbench import config as c
from convbench.errors import ConvbenchError
from convbench.training.recipes import HEAD_EVALUATIONS, compute_features, head_schedule, fit_model
from convbench.models import create_model, list_models, model_info
from convbench.models.transfer import POOLING_HEADS

TRANSFER_MODELS = [n for n in list_models() if model_info(n).kind == "transfer"]


@pytest.mark.parametrize("head_steps, steps_per_epoch, expected", [
    (1500, 7, (75, 20)),     # 2,000 images at batch 256: many passes per evaluation
    (1500, 175, (175, 9)),   # 45,000 images: one pass per evaluation, the steps kept
    (40, 4, (4, 10)),
    (0, 7, (7, 0)),          # no head phase
])
def test_the_head_phase_is_counted_in_steps_whatever_the_data_size(head_steps, steps_per_epoch, expected):
    per_round, rounds = head_schedule(head_steps, steps_per_epoch)
    assert (per_round, rounds) == expected
    assert rounds <= HEAD_EVALUATIONS and per_round >= steps_per_epoch
    assert rounds == 0 or (rounds - 1) * per_round < head_steps <= rounds * per_round


def test_epochs_sets_the_fine_tuning_epochs_and_leaves_the_head_steps():
    from convbench.config import with_epochs

    quick = c.preset("quick")
    cfg = with_epochs(quick, 3)
    for name in quick.models:
        recipe = cfg.recipe(name)
        if model_info(name).kind == "transfer":
            assert recipe.transfer.finetune_epochs == 3
            assert recipe.transfer.head_steps == quick.recipe(name).transfer.head_steps
        else:
            assert recipe.train.epochs == 3
        assert c.training_epochs(model_info(name).kind, dataclasses.asdict(recipe)) == 3


def test_a_config_with_the_old_frozen_epochs_key_names_its_replacement(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("transfer: {frozen_epochs: 6, finetune_epochs: 1}\n")
    with pytest.raises(ConvbenchError, match="'frozen_epochs' was replaced by head_steps") as err:
        c.load_yaml(path)
    assert "\n" not in str(err.value)


def test_epoch_counts_of_recipes_saved_before_head_steps_are_what_they_ran():
    old = {"train": {"epochs": 5}, "transfer": {"frozen_epochs": 6, "finetune_epochs": 1}}
    assert c.training_epochs("transfer", old) == 7
    assert c.training_epochs("custom", old) == 5


@pytest.mark.parametrize("name", TRANSFER_MODELS)
@pytest.mark.parametrize("head", POOLING_HEADS)
def test_pooled_cached_features_give_the_full_models_outputs(name, head):
    model = create_model(name, num_classes=10, resolution=64, head=head, weights=None)
    x = two_classes(8)[0]
    pooled = compute_features(model.get_layer("features"), x, 4, pool=True)
    assert pooled.shape[1:3] == (1, 1)
    from_cache = model.get_layer("head")(pooled.astype(np.float32), training=False).numpy()
    whole = model(x.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(from_cache, whole, rtol=2e-2, atol=2e-2)  # the cache is float16


def _data(flip_val: bool):
    from convbench.data.datasets import Dataset

    x, y = two_classes(64)
    xv, yv = two_classes(32, seed=1)
    if flip_val:
        yv = 1 - yv  # validation loss rises as the head learns the training labels
    return Dataset(x, y, xv, yv, xv, yv, ["dark", "bright"], "synthetic")


def _recipe(name: str, **transfer):
    base = c.preset("quick").recipe(name)
    return dataclasses.replace(base, train=c.TrainConfig(epochs=1, global_batch_size=16, eval_batch_size=32),
                               transfer=dataclasses.replace(base.transfer, resolution=32, **transfer))


@pytest.mark.parametrize("name", TRANSFER_MODELS)
def test_the_head_trains_all_its_steps_on_its_own_schedule(name, logged):
    """64 images at batch 16 are 4 steps per epoch; 40 head steps are 10 rounds of one pass, and the
    head's cosine schedule ends at 0 on its last step, independent of the fine-tuning epochs."""
    recipe = _recipe(name, head_steps=40, head_patience=0, finetune_epochs=1)
    _, result = fit_model(name, _data(flip_val=False), recipe, weights=None)
    lines = logged()
    head = [r for r in result.history if r.phase == "head"]
    tune = [r for r in result.history if r.phase == "finetune"]
    assert len(head) == 10 and all(r.images_per_s > 0 for r in head)
    assert head[-1].lr == pytest.approx(0.0, abs=1e-9)
    assert head[0].lr > 0
    assert len(tune) == 1 and tune[0].epoch == 11
    assert any("round 10/10 head:" in line for line in lines)
    assert not any("early stop" in line for line in lines)


@pytest.mark.parametrize("name", TRANSFER_MODELS)
def test_the_head_stops_early_on_validation_loss_and_fine_tuning_still_runs(name, logged):
    """With validation labels the opposite of the training rule, validation loss rises from the first
    rounds: the head stops after `head_patience` rounds without a lower one, keeps its best round's
    weights, and fine-tuning then runs its epochs."""
    recipe = _recipe(name, head_steps=200, head_patience=2, finetune_epochs=1, head_lr_per_1024=0.05)
    _, result = fit_model(name, _data(flip_val=True), recipe, weights=None)
    lines = logged()
    head = [r for r in result.history if r.phase == "head"]
    per_round, rounds = head_schedule(200, 4)
    assert len(head) < rounds
    best_loss = min(range(len(head)), key=lambda i: head[i].val_loss)
    assert len(head) == best_loss + 1 + 2  # stopped exactly `head_patience` rounds after the lowest loss
    assert any("early stop: validation loss has not improved for 2 rounds" in line for line in lines)
    assert any("head phase stopped early after" in n for n in result.notes)
    assert [r.phase for r in result.history].count("finetune") == 1


@pytest.mark.parametrize("name", TRANSFER_MODELS)
def test_fine_tuning_gives_lower_blocks_lower_learning_rates(name):
    """Discriminative groups cover exactly the trainable variables once each: the head at 1, the top
    unfrozen block (with the layers after it) at the decay, the block below at its square."""
    from convbench.training.recipes import discriminative_groups, unfreeze_top_blocks

    model = create_model(name, num_classes=10, resolution=32, weights=None)
    unfrozen = unfreeze_top_blocks(model.get_layer("features"), 2)
    groups = discriminative_groups(model, unfrozen, 0.5)
    assert [f for f, _ in groups] == [1.0, 0.5, 0.25]
    grouped = [v.path for _, vs in groups for v in vs]
    assert sorted(grouped) == sorted(v.path for v in model.trainable_variables)
    assert {v.path for v in groups[0][1]} == {v.path for v in model.get_layer("head").trainable_variables}
    assert all(v.path.startswith(unfrozen[0]) for v in groups[2][1])
    assert any(v.path.startswith(unfrozen[1]) for v in groups[1][1])


def test_each_learning_rate_group_moves_its_weights_by_its_own_rate():
    """Adam's first step moves every weight by about the learning rate, whatever its gradient, so
    the step of each group, divided by the head's, is its factor."""
    import keras
    import tensorflow as tf

    from convbench.training.loop import Trainer

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="top")(keras.layers.Dense(8, name="low")(inputs)))
    low, top = model.get_layer("low").trainable_variables, model.get_layer("top").trainable_variables
    cfg = c.TrainConfig(optimizer="adamw", lr_per_1024=1e-2, global_batch_size=8, warmup_epochs=0, schedule="constant")
    trainer = Trainer(model, cfg, c.RegularizationConfig(label_smoothing=0.0, weight_decay=0.0), tf.distribute.get_strategy(),
                      1, 1, lr_groups=[(1.0, top), (0.25, low)])
    before = [v.numpy().copy() for v in low + top]
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    trainer._train(tf.constant(x), tf.constant(y))
    moved = [np.abs(v.numpy() - b).max() for v, b in zip(low + top, before)]
    low_step, top_step = max(moved[: len(low)]), max(moved[len(low):])
    assert top_step == pytest.approx(cfg.learning_rate(), rel=0.05)
    assert low_step / top_step == pytest.approx(0.25, rel=0.05)
