"""Bad input gets one clear line (`convbench: error: ...`, exit status 2) or documented handling.

Run: .venv/bin/pytest tests/test_bad_input.py -q -rP --durations=0   (-rP prints what the user sees)

Each refusal drives the real CLI in-process (`convbench.cli.commands.main`) on a tiny synthetic PNG dataset
and checks that stderr is exactly one line naming the problem; two cases run `python -m
convbench.cli.commands` in a subprocess to prove no traceback reaches a terminal. Inputs convbench accepts
(grayscale, RGBA, 16-bit, other sizes, non-image files, corrupt images without --strict) are
checked for the documented handling: converted / resized / ignored / skipped, and counted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import bad_files, class_image, jpeg_bytes, png_bytes, png_header_only, rgb16_png, write_dataset  # noqa: E402

from convbench.cli import commands as cli  # noqa: E402
from convbench.data.datasets import load_dataset, read_image  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# One epoch, small batches, no latency measurement: a run that gets past the checks stays short.
FAST = {"train": {"epochs": 1, "global_batch_size": 16, "eval_batch_size": 64}, "measure_latency": False,
        "transfer": {"resolution": 32, "head_steps": 2, "finetune_epochs": 0},
        "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0}}


@pytest.fixture()
def data(tmp_path) -> Path:
    """3 classes x (20 train + 5 test) PNGs."""
    return write_dataset(tmp_path / "data", classes=3, train=20, test=5)


def fast_config(tmp_path: Path, extra: dict | None = None, name: str = "fast.yaml") -> str:
    cfg = {**FAST, **(extra or {})}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def expect_one_line(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI, assert exit 2 and exactly one `convbench: error:` line holding every fragment."""
    rc, out, err = run_cli(capsys, argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit {rc}; stderr:\n{err}\nstdout:\n{out}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("convbench: error: "), lines[0]
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    print(f"USER SEES: {lines[0]}")  # shown with -rP; collected into the issue's closing note
    return lines[0]


def run_args(tmp_path: Path, data: Path | str, *extra: str, models: str = "cnn_vgg", config: str | None = None) -> list[str]:
    return ["run", "--data", str(data), "--models", models, "--out", str(tmp_path / "out"),
            "--config", config or fast_config(tmp_path), *extra]


# ---------------------------------------------------------------------------------------------
# Images: documented handling (skipped and counted, converted, resized, ignored)


def _drop(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (folder / name).write_bytes(content)


def test_broken_images_are_skipped_and_counted(data, tmp_path, logged):
    broken = bad_files()
    _drop(data / "train" / "class0", broken)
    ds = load_dataset(str(data), tmp_path / "cache")
    lines = logged()
    issues = ds.issues
    assert issues["skipped"] == len(broken)
    reasons = dict(s.rsplit(": ", 1) for s in issues["skipped_files"])
    by_name = {Path(k).name: v for k, v in reasons.items()}
    assert by_name["zero.jpg"] == by_name["zero.png"] == "empty file (0 bytes)"
    assert "truncated" in by_name["truncated.png"].lower() and "truncated" in by_name["truncated.jpg"].lower()
    assert by_name["notes.jpg"] == "not an image or unsupported format"
    # Every good image is kept: 3 classes x 20 train (split into train + val) and 3 x 5 test.
    assert len(ds.y_train) + len(ds.y_val) == 60 and len(ds.y_test) == 15
    assert any(line.startswith(f"warning: skipped {len(broken)} unreadable images") for line in lines)
    print("USER SEES:", next(line for line in lines if line.startswith("warning: skipped")))


def test_strict_makes_a_broken_image_an_error(data, tmp_path, capsys):
    (data / "train" / "class1" / "truncated.jpg").write_bytes(bad_files()["truncated.jpg"])
    expect_one_line(capsys, run_args(tmp_path, data, "--strict"), "cannot read image", "truncated.jpg", "drop --strict")


def test_decompression_bomb_is_skipped_not_decoded(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))  # 900 M pixels claimed in 60 bytes
    image, flags, error = read_image(bomb)
    assert image is None and "too large" in error


def test_grayscale_rgba_16bit_and_other_sizes_are_converted(data, tmp_path):
    rng = np.random.default_rng(3)
    folder = data / "train" / "class2"
    gray = class_image(2, rng)[..., 1]
    _drop(folder, {
        "gray.png": png_bytes(gray),
        "rgba.png": png_bytes(np.dstack([class_image(2, rng), np.full((32, 32), 255, np.uint8)])),
        "gray16.png": png_bytes(gray.astype(np.uint16) * 257),  # 16-bit grayscale: same picture, scaled
        "rgb16.png": rgb16_png(40000),
        "big.jpg": jpeg_bytes(np.full((96, 64, 3), 200, np.uint8)),
        "small.png": png_bytes(np.full((8, 8, 3), 90, np.uint8)),
    })
    ds = load_dataset(str(data), tmp_path / "cache", val_fraction=0.1)
    assert ds.issues["skipped"] == 0
    # gray, rgba and gray16 are converted; 16-bit RGB PIL already hands over as 8-bit RGB.
    assert ds.issues["converted"] == 3
    assert ds.issues["resized"] == 2
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.x_train.dtype == np.uint8
    g8, _, _ = read_image(folder / "gray.png")
    g16, _, _ = read_image(folder / "gray16.png")
    assert np.array_equal(g8, g16), "16-bit grayscale must be scaled to 8 bits, not clipped"
    assert np.array_equal(g8[..., 0], gray) and np.array_equal(g8[..., 0], g8[..., 2])
    rgb16, _, _ = read_image(folder / "rgb16.png")
    assert np.all(np.abs(rgb16.astype(int) - 40000 * 255 / 65535) <= 1)  # 155.6: PIL keeps the high byte, 156
    rgba, _, _ = read_image(folder / "rgba.png")
    assert rgba.shape == (32, 32, 3)


def test_non_image_files_are_ignored_and_counted(data, tmp_path, logged):
    (data / "train" / "class0" / "README.txt").write_text("notes")
    (data / "test" / "class1" / "labels.csv").write_text("a,b")
    (data / "train" / "class0" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden files: not even counted
    ds = load_dataset(str(data), tmp_path / "cache")
    lines = logged()
    assert ds.issues["ignored"] == 2 and ds.issues["skipped"] == 0
    assert any("ignored 2 non-image files" in line for line in lines)
    print("USER SEES:", next(line for line in lines if line.startswith("warning: ignored")))


def test_webp_bmp_and_images_in_subfolders_of_a_class_are_read(data, tmp_path, logged):
    """PIL reads WebP and BMP; images one or more levels below a class folder belong to that class
    (torchvision's ImageFolder convention), and a note says that they were included."""
    from PIL import Image

    before = load_dataset(str(data), tmp_path / "cache0")
    rng = np.random.default_rng(5)
    pixels = lambda: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # noqa: E731
    Image.fromarray(pixels()).save(data / "train" / "class0" / "extra.webp", lossless=True)
    Image.fromarray(pixels()).save(data / "train" / "class1" / "extra.bmp")
    deep = data / "train" / "class2" / "more" / "deeper"
    deep.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(pixels()).save(deep / f"n{i}.png")
    ds = load_dataset(str(data), tmp_path / "cache")
    lines = logged()
    total = lambda d: len(d.y_train) + len(d.y_val)  # noqa: E731
    assert total(ds) == total(before) + 5 and ds.issues["ignored"] == 0
    assert np.bincount(np.concatenate([ds.y_train, ds.y_val]))[2] == np.bincount(np.concatenate([before.y_train, before.y_val]))[2] + 3
    note = next(line for line in lines if "subfolders of class folders" in line)
    assert "3 images" in note and "more/deeper" in note
    print("USER SEES:", note)


def test_undecodable_file_name_is_reported_printably(data, tmp_path, logged):
    name = os.fsdecode(b"bad-\xff.png")
    (data / "train" / "class0" / name).write_bytes(b"not a png")
    ds = load_dataset(str(data), tmp_path / "cache")
    lines = logged()
    assert ds.issues["skipped"] == 1
    line = next(line for line in lines if line.startswith("warning: skipped"))
    print("USER SEES:", line)
    line.encode("utf-8")  # no lone surrogates: printable on any UTF-8 terminal and in JSON
    assert "bad-\\udcff.png" in line


def test_a_run_with_every_handled_issue_trains_and_reports_the_counts(data, tmp_path, capsys):
    """End to end: broken, converted, resized and non-image files in one folder; the run finishes."""
    import json

    rng = np.random.default_rng(5)
    _drop(data / "train" / "class0", bad_files())
    _drop(data / "train" / "class1", {"gray.png": png_bytes(class_image(1, rng)[..., 0]), "notes.txt": b"x",
                                      "big.png": png_bytes(np.full((40, 40, 3), 7, np.uint8))})
    rc, out, err = run_cli(capsys, run_args(tmp_path, data))
    assert rc == 0, err
    assert "warning: skipped 7 unreadable images" in out and "warning: converted 1" in out
    for line in out.splitlines():
        if " warning: " in line:
            print("USER SEES:", line.split(" ", 1)[1])
    issues = json.loads((tmp_path / "out" / "results.json").read_text())["data"]["issues"]
    assert (issues["skipped"], issues["ignored"], issues["converted"], issues["resized"]) == (7, 1, 1, 1)
    assert (tmp_path / "out" / "REPORT.md").is_file()


# ---------------------------------------------------------------------------------------------
# Dataset layout


def test_one_class(tmp_path, capsys):
    data = write_dataset(tmp_path / "one", classes=1)
    expect_one_line(capsys, run_args(tmp_path, data), "only one class", "at least two")


def test_class_missing_from_test(data, tmp_path, capsys):
    for f in (data / "test" / "class2").iterdir():
        f.unlink()
    (data / "test" / "class2").rmdir()
    expect_one_line(capsys, run_args(tmp_path, data), "train and test classes differ", "only in train: ['class2']")


def test_empty_data_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    expect_one_line(capsys, run_args(tmp_path, tmp_path / "empty"), "train is missing", "train/<class>/")


def test_empty_class_folder(data, tmp_path, capsys):
    (data / "train" / "class3").mkdir()
    (data / "test" / "class3").mkdir()
    expect_one_line(capsys, run_args(tmp_path, data), "class3 has no .jpg/.jpeg/.png/.webp/.bmp images (subfolders included)")


def test_empty_split_folder(data, tmp_path, capsys):
    for cls in (data / "test").iterdir():
        for f in cls.iterdir():
            f.unlink()
        cls.rmdir()
    expect_one_line(capsys, run_args(tmp_path, data), "test has no class subfolders")


def test_every_image_of_a_class_unreadable(data, tmp_path, capsys):
    for f in (data / "test" / "class1").iterdir():
        f.write_bytes(b"")
    expect_one_line(capsys, run_args(tmp_path, data), "no readable test images left for classes ['class1']")


def test_data_folder_missing_or_a_file(tmp_path, capsys):
    expect_one_line(capsys, run_args(tmp_path, tmp_path / "nope"), "does not exist")
    (tmp_path / "file").write_text("x")
    expect_one_line(capsys, run_args(tmp_path, tmp_path / "file"), "is a file")


@contextlib.contextmanager
def unprivileged():
    """Run the block with effective uid/gid `nobody` when root (permission bits do not stop root).

    Only the effective ids change, so the block ends back as root; the caller works with paths
    relative to a cwd it entered as root, because pytest's tmp root is 0700 and nobody cannot
    traverse it.
    """
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_directory(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for p in (tmp_path, data, data / "test"):
        p.chmod(0o755)
    (tmp_path / "out").mkdir(mode=0o777)
    (tmp_path / "out").chmod(0o777)
    (data / "train").chmod(0o000)
    argv = ["run", "--data", "data", "--models", "cnn_vgg", "--out", "out", "--config", fast_config(tmp_path)]
    argv[-1] = "fast.yaml"
    try:
        with unprivileged():
            line = expect_one_line(capsys, argv, "cannot read data/train (permission denied)", "chmod")
    finally:
        (data / "train").chmod(0o755)
    assert line


def test_max_train_images_larger_than_the_data(data, tmp_path, capsys):
    expect_one_line(capsys, run_args(tmp_path, data, "--max-train-images", "1000"),
                    "--max-train-images 1000 is more than the 60 images available")


def test_negative_image_limit_is_refused_before_decoding(data, tmp_path, capsys):
    expect_one_line(capsys, run_args(tmp_path, data, "--max-test-images", "-5"), "--max-test-images must be >= 0")
    assert not (tmp_path / "out" / "results.json").exists()


def test_batch_larger_than_the_training_split(data, tmp_path, capsys):
    expect_one_line(capsys, run_args(tmp_path, data, "--global-batch-size", "512"), "fewer than one batch of 512")


# ---------------------------------------------------------------------------------------------
# Flags and config files


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--models", "cnn_vgg,alexnet"], ("unknown model 'alexnet'", "choose from", "cnn_vgg")),
        (["--epochs", "0"], ("--epochs must be >= 1, got 0",)),
        (["--epochs", "-3"], ("--epochs must be >= 1, got -3",)),
        (["--global-batch-size", "0"], ("global_batch_size must be >= 1 (got 0)",)),
        (["--global-batch-size", "-8"], ("global_batch_size must be >= 1 (got -8)",)),
        (["--seeds", "0"], ("seeds must be >= 1, got 0",)),
        (["--models", "cnn_vgg,cnn_vgg"], ("lists cnn_vgg more than once",)),
        (["--models", " , "], ("no models selected",)),
    ],
    ids=["unknown-model", "epochs-0", "epochs-neg", "batch-0", "batch-neg", "seeds-0", "dup-model", "no-model"],
)
def test_bad_flags(data, tmp_path, capsys, flags, fragments):
    argv = run_args(tmp_path, data)
    if "--models" in flags:
        i = argv.index("--models")
        del argv[i : i + 2]
    expect_one_line(capsys, argv + flags, *fragments)
    assert not (tmp_path / "out" / "results.json").exists()


def test_argparse_rejects_a_non_number(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(run_args(tmp_path, data, "--epochs", "three"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "invalid int value: 'three'" in err and "Traceback" not in err
    print("USER SEES:", err.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("train:\n  epochs: 2\n  learning_rate: 0.1\n", ("unknown key 'learning_rate'", "lr_per_1024")),
        ("train:\n  epochs: two\n", ("train.epochs must be an integer, got 'two'",)),
        ("augment:\n  flip: yes please\n", ("augment.flip must be true or false",)),
        ("train:\n  epochs: 2\n   batch: [\n", ("is not valid YAML at line", "fix the syntax")),
        ("models: [cnn_vgg\n", ("is not valid YAML",)),
        ("- cnn_vgg\n", ("must hold a mapping",)),
        ("created: 2024-13-01\n", ("has a value YAML cannot convert",)),
        ("train:\n  epochs: !!python/object/apply:os.system ['touch PWNED']\n", ("has a value convbench cannot read",)),
        ("1: 2\nmodels: [cnn_vgg]\n", ("unknown key 1",)),
        ("train:\n  momentum: 1.5\n", ("momentum must be in [0, 1)",)),
        ("augment:\n  crop_padding: 40\n", ("crop_padding must be in [0, 31]",)),
        ("train:\n  seed: -1\n", ("train.seed must be in [0, 2**31)",)),
    ],
    ids=["unknown-key", "wrong-type", "wrong-bool", "syntax-indent", "syntax-bracket", "not-mapping", "bad-date",
         "python-tag", "int-key", "momentum", "crop-padding", "negative-seed"],
)
def test_bad_yaml(data, tmp_path, capsys, monkeypatch, text, fragments):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    expect_one_line(capsys, run_args(tmp_path, data, config=str(path)), *fragments)
    assert not (tmp_path / "PWNED").exists()


def test_missing_config_file(data, tmp_path, capsys):
    expect_one_line(capsys, run_args(tmp_path, data, config=str(tmp_path / "nope.yaml")), "nope.yaml does not exist")


# ---------------------------------------------------------------------------------------------
# Weights files when offline


def test_resnet50_weights_dir_without_the_file(data, tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    config = fast_config(tmp_path, {"transfer": {**FAST["transfer"], "weights_dir": str(tmp_path / "weights")}})
    expect_one_line(capsys, run_args(tmp_path, data, models="resnet50", config=config),
                    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 is missing", "download")


def test_efficientnet_lite0_weights_path_missing(data, tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    config = fast_config(tmp_path, {"transfer": {**FAST["transfer"], "weights_dir": str(tmp_path / "weights")}})
    expect_one_line(capsys, run_args(tmp_path, data, models="efficientnet_lite0", config=config),
                    "efficientnet-lite0-57934424.pth", "not found")


# ---------------------------------------------------------------------------------------------
# A real terminal: no traceback from a subprocess either


@pytest.mark.parametrize("case", ["bad-yaml", "unknown-model"])
def test_subprocess_shows_one_line_and_no_traceback(data, tmp_path, case):
    config = tmp_path / "c.yaml"
    config.write_text("train: {epochs: 1, batch: 4}\n" if case == "bad-yaml" else "measure_latency: false\n")
    models = "cnn_vgg" if case == "bad-yaml" else "vgg16"
    env = {**os.environ, "CONVBENCH_CACHE": str(tmp_path / "cache"), "KERAS_HOME": str(tmp_path / "keras"),
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "convbench.cli", "run", "--data", str(data), "--models", models,
         "--config", str(config), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    ours = [line for line in proc.stderr.splitlines() if line.startswith("convbench:")]
    assert len(ours) == 1 and ours[0].startswith("convbench: error: ")
    assert ("unknown key 'batch'" in ours[0]) if case == "bad-yaml" else ("unknown model 'vgg16'" in ours[0])
    print("USER SEES:", ours[0])


def test_errors_are_convbench_errors_not_crashes(data, tmp_path):
    """The library API raises ConvbenchError too (what the pipeline components rely on)."""
    with pytest.raises(ConvbenchError, match="is more than the 60 images"):
        load_dataset(str(data), tmp_path / "cache", max_train_images=61)


# ---------------------------------------------------------------------------------------------
# Ray addresses: one line within seconds, never a hang or a ConnectionError traceback


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_ray_address_where_nothing_listens(data, tmp_path, capsys, scheme):
    """Issue 19 case 10: HOST:PORT and ray://HOST:PORT with no Ray there (ray.init alone retries for minutes)."""
    address = f"{scheme}127.0.0.1:{_closed_port()}"
    expect_one_line(capsys, run_args(tmp_path, data, "--ray-address", address),
                    f"nothing answers at --ray-address {address}", "Connection refused", "ray start --head")
    assert not (tmp_path / "out" / "results.json").exists()


def test_ray_address_http_names_the_real_cause(data, tmp_path, capsys):
    """Issue 19 case 10: an http:// (job submission) address; without ray[default] the line says so
    rather than blaming the address."""
    import importlib.util

    address = f"http://127.0.0.1:{_closed_port()}"
    if any(importlib.util.find_spec(m) is None for m in ("aiohttp", "requests")):
        expect_one_line(capsys, run_args(tmp_path, data, "--ray-address", address), "pip install 'ray[default]'")
    else:
        expect_one_line(capsys, run_args(tmp_path, data, "--ray-address", address), f"cannot reach the Ray Job API at {address}")


def test_ray_address_auto_without_a_cluster(data, tmp_path):
    """Issue 19 case 10: `--ray-address auto` where no Ray runs. A subprocess: it must find no Ray
    that another test started in this process."""
    env = {**os.environ, "CONVBENCH_CACHE": str(tmp_path / "cache"), "KERAS_HOME": str(tmp_path / "keras"),
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_TMPDIR": str(tmp_path / "ray")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "convbench.cli", *run_args(tmp_path, data, "--ray-address", "auto")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("convbench:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(ours) == 1 and "cannot attach to a Ray cluster at --ray-address auto" in ours[0], proc.stderr
    print("USER SEES:", ours[0])
