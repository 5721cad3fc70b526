"""The custom loop: schedules, learning on a separable problem, checkpoint resume, flops arithmetic."""

import dataclasses

import numpy as np
import pytest

from convbench.config import AugmentConfig, RegularizationConfig, TrainConfig
from convbench.training.loop import load_checkpoint, make_schedule


@pytest.mark.parametrize("kind", ["onecycle", "cosine", "constant"])
def test_schedules_warm_up_peak_and_decay(kind):
    cfg = TrainConfig(global_batch_size=1024, lr_per_1024=1.0, schedule=kind, warmup_epochs=1)
    sched = make_schedule(cfg, steps_per_epoch=10, epochs=5)
    lrs = np.array([float(sched(s)) for s in range(50)])
    assert lrs.max() == pytest.approx(1.0, rel=1e-5)
    if kind == "constant":
        assert np.allclose(lrs, 1.0)
    else:
        assert lrs[0] == pytest.approx(0.1, rel=1e-5)
        assert np.all(np.diff(lrs[:10]) > 0)
        assert np.all(np.diff(lrs[10:]) <= 1e-7)
        assert lrs[-1] < 0.05


def _separable(n=512, seed=0):
    """Two classes a CNN separates within an epoch or two: dark vs bright images."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int32)
    x = np.where(y[:, None, None, None] == 1, 180, 60) + rng.integers(-40, 40, (n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def _dataset(n=512):
    from convbench.data.datasets import Dataset

    x, y = _separable(n)
    xv, yv = _separable(128, seed=1)
    return Dataset(x, y, xv, yv, xv, yv, ["dark", "bright"], "synthetic")


def test_training_learns_and_restores_best(tmp_path):
    from convbench.config import preset
    from convbench.training.recipes import fit_model

    recipe = dataclasses.replace(
        preset("quick").recipe("cnn_vgg"),
        train=TrainConfig(epochs=2, global_batch_size=64, lr_per_1024=0.8),
        augment=AugmentConfig(crop_padding=2),
    )
    model, result = fit_model("cnn_vgg", _dataset(), recipe, checkpoint_dir=tmp_path)
    assert result.epochs_run == 2
    assert result.history[-1].train_loss < result.history[0].train_loss or result.best_val_accuracy > 0.9
    assert result.best_val_accuracy > 0.8
    state, weights, opt, best = load_checkpoint(tmp_path / "checkpoint.npz")
    assert len(state["history"]) == 2 and best is not None and opt


@pytest.mark.parametrize("lookahead_every", [0, 2])
def test_resume_continues_where_it_stopped(tmp_path, lookahead_every, logged):
    """A run that crashes after epoch 2 and is restarted gives the same 3-epoch history as one that never
    stopped, with lookahead too (its slow weights equal the model's at every epoch end)."""
    from convbench.config import preset
    from convbench.training.recipes import fit_model

    base = preset("quick").recipe("cnn_vgg")
    train = TrainConfig(epochs=3, global_batch_size=64, lr_per_1024=0.4, lookahead_every=lookahead_every, lookahead_from_epoch=1)
    recipe = dataclasses.replace(base, train=train, augment=AugmentConfig(crop_padding=2))
    data = _dataset(256)
    _, straight = fit_model("cnn_vgg", data, recipe, checkpoint_dir=tmp_path / "a")

    class Crash(Exception):
        pass

    def crash_after_two(record):
        if record.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        fit_model("cnn_vgg", data, recipe, checkpoint_dir=tmp_path / "b", on_epoch_end=crash_after_two)
    _, resumed = fit_model("cnn_vgg", data, recipe, checkpoint_dir=tmp_path / "b")
    logs = logged()
    assert any("resuming" in line and "2 epochs already done" in line for line in logs)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    # Same seed, same batches, same optimizer state: the resumed epoch 3 matches the uninterrupted one.
    assert resumed.history[2].train_loss == pytest.approx(straight.history[2].train_loss, rel=1e-4)
    assert resumed.history[2].val_accuracy == pytest.approx(straight.history[2].val_accuracy, abs=1e-6)


def test_flops_of_a_known_network():
    import keras

    from convbench.models.flops import count_flops

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 2*3*3*3*4*8*8 = 13,824
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 2*3*3*4*8*8 = 4,608
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)  # 2*4*10 = 80
    assert count_flops(keras.Model(inputs, outputs)) == 13_824 + 4_608 + 80


def test_same_seed_reproduces_the_same_metrics():
    """Reproducibility as README states it: the same seed, machine, precision and worker count give
    the same history, every loss and accuracy identical to the last bit."""
    from convbench.config import preset
    from convbench.training.recipes import fit_model

    recipe = dataclasses.replace(preset("quick").recipe("cnn_vgg"), train=TrainConfig(epochs=2, global_batch_size=64, seed=3))
    data = _dataset(256)
    _, a = fit_model("cnn_vgg", data, recipe)
    _, b = fit_model("cnn_vgg", data, recipe)
    assert len(a.history) == len(b.history) == 2
    for ra, rb in zip(a.history, b.history):
        assert (ra.train_loss, ra.train_accuracy, ra.val_loss, ra.val_accuracy, ra.lr) == \
            (rb.train_loss, rb.train_accuracy, rb.val_loss, rb.val_accuracy, rb.lr)
    other = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=4))
    _, c = fit_model("cnn_vgg", data, other)
    assert c.history[0].train_loss != pytest.approx(a.history[0].train_loss, rel=1e-6)


def test_steps_per_execution_trains_the_same_as_one_step_per_call():
    """Several steps per compiled call (with a shorter last call: 4 steps in calls of 3 and 1) are the
    same optimisation as one step per call: same losses, same validation accuracy."""
    from convbench.config import preset
    from convbench.training.recipes import fit_model

    base = preset("quick").recipe("cnn_vgg")
    data = _dataset(256)
    histories = {}
    for per_call in (1, 3):
        train = TrainConfig(epochs=2, global_batch_size=64, seed=5, steps_per_execution=per_call)
        _, result = fit_model("cnn_vgg", data, dataclasses.replace(base, train=train))
        histories[per_call] = result.history
    for one, many in zip(histories[1], histories[3]):
        assert many.train_loss == pytest.approx(one.train_loss, rel=1e-3)
        assert many.train_accuracy == pytest.approx(one.train_accuracy, abs=1e-9)
        assert many.val_accuracy == pytest.approx(one.val_accuracy, abs=1e-9)


@pytest.mark.parametrize("advanced", [1, 3, 8])
def test_progress_reports_a_few_lines_per_epoch_whatever_the_call_size(advanced, logged):
    from convbench.training.loop import Progress

    progress = Progress("m", lines_per_epoch=4)
    steps = 40
    done = 0
    while done < steps:
        n = min(advanced, steps - done)
        done += n
        progress.step(1, 1, done, steps, 1.0, 0.5, 0.0, done * 8, advanced=n)
    lines = logged()
    assert len(lines) == min(4, -(-steps // advanced))
    assert "step 40/40" in lines[-1]


def _tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_lookahead_in_the_compiled_loop_follows_its_formula():
    """Lookahead inside the compiled loop (3 steps per call) gives the weights of the same training
    without it, averaged by hand between single steps: the slow copy starts as the weights at the first
    averaging step at or after `lookahead_from_epoch`, then every `lookahead_every` steps
    slow += (1 - rho)(w - slow) and w = slow, rho = decay * (step / total steps)**3; at each epoch end
    the weights are the slow copy."""
    import keras

    from convbench.data.augment import make_train_dataset
    from convbench.training.loop import Trainer, default_strategy

    x, y = _separable(64)
    steps, epochs, every, decay = 4, 2, 2, 0.9
    reg = RegularizationConfig(weight_decay=0.0)

    def dataset(epoch):
        return make_train_dataset(x, y, 2, 16, AugmentConfig(crop_padding=0, flip=False), 0, epoch)

    def trainer(**lookahead):
        cfg = TrainConfig(epochs=epochs, global_batch_size=16, lr_per_1024=20.0, schedule="constant", **lookahead)
        return Trainer(_tiny_model(), cfg, reg, default_strategy(), steps, epochs)

    compiled = trainer(lookahead_every=every, lookahead_from_epoch=0.5, lookahead_decay=decay, steps_per_execution=3)
    for e in range(epochs):
        compiled.train_epoch(dataset(e), e + 1, epochs, steps)

    by_hand = trainer(steps_per_execution=1)
    weights = [v for v in by_hand.model.variables if keras.backend.is_float_dtype(v.dtype)]
    slow = None
    for e in range(epochs):
        for xb, yb in by_hand._distribute(dataset(e)):
            by_hand._train(xb, yb)
            t = int(by_hand.optimizer.iterations.numpy())
            if t >= 2 and t % every == 0:  # ceil(0.5 epoch x 4 steps) = 2 is the first averaging step
                rho = 0.0 if slow is None else decay * (t / (steps * epochs)) ** 3
                now = [w.numpy() for w in weights]
                slow = now if slow is None else [s + (1 - rho) * (w - s) for s, w in zip(slow, now)]
                for w, s in zip(weights, slow):
                    w.assign(s)
        for w, s in zip(weights, slow):
            w.assign(s)

    plain = trainer(steps_per_execution=1)
    for e in range(epochs):
        plain.train_epoch(dataset(e), e + 1, epochs, steps)
    for a, b, c in zip(compiled.model.get_weights(), by_hand.model.get_weights(), plain.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a, c, atol=1e-4) for a, c in zip(compiled.model.get_weights(), plain.model.get_weights()))
