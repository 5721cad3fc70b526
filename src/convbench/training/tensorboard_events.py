"""TensorBoard event files for every (model, seed): live per-epoch scalars, then HParams and test accuracy.

    convbench run --data ../shared/datasets/cifar10-jpeg
    tensorboard --logdir runs/latest/tensorboard

Layout (Keras' TensorBoard callback convention, so the Scalars tab overlays train and validation
curves, and the HParams tab shows one session per model and seed):

    tensorboard/<model>_seed<k>/train/        epoch_loss, epoch_accuracy, epoch_learning_rate, epoch_images_per_second
    tensorboard/<model>_seed<k>/validation/   epoch_loss, epoch_accuracy
    tensorboard/<model>_seed<k>/              the recipe as HParams, test_accuracy at the last epoch

Scalars are written as each epoch ends, so a run can be watched while it trains. When the model
finishes (or diverges), its folder is rewritten from the complete history: a resumed model then
shows each epoch once, whichever process trained it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable

from convbench import rundir

TENSORBOARD_DIR = rundir.TENSORBOARD_DIR


def session_dir(out_dir: Path, key: str) -> Path:
    """The TensorBoard folder of one (model, seed), `key` as `rundir.run_key` forms it."""
    return Path(out_dir) / TENSORBOARD_DIR / key


def flat_hparams(recipe: dict, prefix: str = "") -> dict[str, Any]:
    """A nested recipe dict as HParams values: dotted keys, scalars kept, lists and None as text."""
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class EpochWriter:
    """Writes one (model, seed)'s epoch records to TensorBoard as they come.

    Args:
        folder: the session folder (`session_dir`).
        fresh: True when the model starts from scratch: an earlier attempt's events are removed.
    """

    def __init__(self, folder: Path, fresh: bool):
        self.folder = Path(folder)
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)
        self._writers: dict[str, Any] = {}

    def _writer(self, split: str):
        import tensorflow as tf

        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(str(self.folder / split) if split else str(self.folder))
        return self._writers[split]

    def write_epoch(self, record) -> None:
        """Write one `train.EpochRecord`'s scalars at step = its epoch number."""
        import tensorflow as tf

        scalars = {
            "train": {"epoch_loss": record.train_loss, "epoch_accuracy": record.train_accuracy,
                      "epoch_learning_rate": record.lr, "epoch_images_per_second": record.images_per_s},
            "validation": {"epoch_loss": record.val_loss, "epoch_accuracy": record.val_accuracy},
        }
        for split, values in scalars.items():
            writer = self._writer(split)
            with writer.as_default():
                for tag, value in values.items():
                    tf.summary.scalar(tag, float(value), step=int(record.epoch))
            writer.flush()

    def finish(self, history: Iterable, hparams: dict[str, Any], test_accuracy: float | None) -> None:
        """Rewrite the folder from the complete history, then add the HParams and the test accuracy.

        Args:
            history: every EpochRecord of the model, resumed epochs included.
            hparams: `flat_hparams` of the recipe plus model, seed, kind and precision.
            test_accuracy: the final test accuracy (None for a diverged model).
        """
        from tensorboard.plugins.hparams import api as hp

        import tensorflow as tf

        self.close()
        if self.folder.exists():
            shutil.rmtree(self.folder)
        history = list(history)
        for record in history:
            self.write_epoch(record)
        writer = self._writer("")
        with writer.as_default():
            hp.hparams(hparams, trial_id=self.folder.name)
            if test_accuracy is not None:
                tf.summary.scalar("test_accuracy", float(test_accuracy), step=int(history[-1].epoch) if history else 0)
        self.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.flush()
            writer.close()
        self._writers = {}
