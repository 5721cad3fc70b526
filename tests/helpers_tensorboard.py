"""Read a convbench TensorBoard session back with TensorBoard's own reader (EventAccumulator)."""

from __future__ import annotations

from pathlib import Path


def _accumulator(folder: Path):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def read_scalars(session: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{"": {...}, "train": {...}, "validation": {...}}: tag -> [(step, value)] of each folder's TF2 scalars."""
    import tensorflow as tf

    out = {}
    for split in ("", "train", "validation"):
        acc = _accumulator(session / split)
        out[split] = {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
                      for tag in acc.Tags()["tensors"] if not tag.startswith("_hparams_/")}
    return out


def read_hparams(session: Path) -> dict:
    """The HParams a session recorded (its session_start_info), as plain Python values."""
    from tensorboard.plugins.hparams import metadata

    acc = _accumulator(session)
    info = metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
