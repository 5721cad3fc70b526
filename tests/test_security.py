"""Security: nothing untrusted is executed, downloads are checksum-gated, artifacts hold no secrets.

Run: .venv/bin/pytest tests/test_security.py -q -rP --durations=0

- Source scan (AST, not grep, so comments and strings do not count): YAML only through a safe
  loader, no `shell=True`/`os.system`/`os.popen`, no `eval`/`exec`/`compile`, pickle only in the
  restricted torch reader (whose unpicklers all override `find_class`), `np.load` never with
  `allow_pickle=True`, no `tarfile.extractall`, no Keras `safe_mode=False`.
- A YAML config with `!!python/...` tags is refused and its command never runs.
- CIFAR downloads: a fake archive served from a file:// URL with the wrong checksum is refused
  and nothing is cached; with the pinned checksum it is used; a tampered archive already in the
  cache is refused before it is opened.
- A real run with secrets in its environment writes none of them into the run directory.

The malicious-pickle test of the EfficientNet-Lite0 weights reader is tests/test_torch_weights.py.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import write_dataset  # noqa: E402

from convbench import config as c  # noqa: E402
from convbench.data import datasets as datamod  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "tests", ".cache", "build", "dist", "runs", "node_modules", "__pycache__"}
PICKLE_ALLOWED = {"src/convbench/models/torch_weights.py"}  # the restricted unpickler lives here


def _sources() -> list[Path]:
    files = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if not SKIP_DIRS & set(rel.parts[:-1]) and not any(p.startswith(".") for p in rel.parts[:-1]):
            files.append(path)
    return sorted(files)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    rel = str(path.relative_to(REPO))
    found = []

    def where(node):
        return f"{rel}:{node.lineno}"

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_dotted(b).endswith("Unpickler") for b in node.bases):
            if not any(isinstance(n, ast.FunctionDef) and n.name == "find_class" for n in node.body):
                found.append(f"{where(node)}: Unpickler subclass without a restricting find_class")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
            found.append(f"{where(node)}: {name}()")
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "commands.getoutput"):
            found.append(f"{where(node)}: {name}() runs a shell")
        if "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
            found.append(f"{where(node)}: shell= in {name}()")
        if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "yaml.full_load_all"):
            found.append(f"{where(node)}: {name}()")
        if name == "yaml.load":
            loader = kw.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            source = ast.get_source_segment(text, loader) if loader is not None else ""
            if not source or "SafeLoader" not in source or any(bad in source for bad in ("Unsafe", "FullLoader", "yaml.Loader")):
                found.append(f"{where(node)}: yaml.load without a safe Loader ({source or 'none'})")
        if name.split(".")[-1] in ("load", "loads", "Unpickler") and name.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "joblib"):
            if rel not in PICKLE_ALLOWED:
                found.append(f"{where(node)}: {name}() outside the restricted reader")
        if name.endswith("np.load") or name.endswith("numpy.load"):
            v = kw.get("allow_pickle")
            if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                found.append(f"{where(node)}: np.load(allow_pickle=...)")
        if name.endswith(".extractall") and "filter" not in kw:
            found.append(f"{where(node)}: extractall without a filter (path traversal)")
        if name.endswith("load_model") and "safe_mode" in kw and not (isinstance(kw["safe_mode"], ast.Constant) and kw["safe_mode"].value is True):
            found.append(f"{where(node)}: load_model(safe_mode=...)")
    return found


def test_source_has_no_unsafe_calls():
    files = _sources()
    assert any(str(p).endswith("src/convbench/config.py") for p in files)
    problems = [p for path in files for p in _problems(path)]
    assert not problems, "unsafe calls:\n" + "\n".join(problems)


def test_the_scanner_catches_what_it_looks_for(tmp_path, monkeypatch):
    """The scan above is only worth something if it flags each pattern: feed it one of each."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, pickle, subprocess, yaml, numpy as np, tarfile\n"
        "eval('1')\nexec('x=1')\nos.system('ls')\nsubprocess.run('ls', shell=True)\n"
        "yaml.load(s, Loader=yaml.Loader)\nyaml.load(s)\nyaml.unsafe_load(s)\npickle.loads(b'')\n"
        "np.load('x', allow_pickle=True)\ntarfile.open('x').extractall('y')\n"
        "class U(pickle.Unpickler):\n    pass\n"
        "yaml.load(s, Loader=yaml.SafeLoader)\nsubprocess.run(['ls'], shell=False)\nnp.load('x', allow_pickle=False)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    problems = _problems(bad)
    assert len(problems) == 11, "\n".join(problems)


def test_yaml_tags_are_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    for payload in (
        f"models: !!python/object/apply:os.system ['touch {marker}']\n",
        f"train: !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
        "seeds: !!python/name:os.system\n",
    ):
        path = tmp_path / "evil.yaml"
        path.write_text(payload)
        with pytest.raises(ConvbenchError, match="cannot read at line 1"):
            c.load_yaml(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Downloads are checked against the pinned checksum before use


def _fake_cifar10(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A tar.gz in the CIFAR-10 binary layout: 4 images per batch file (20 train, 4 test), labels 0..9."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(24, dtype=np.uint8) % 10
    members = {}
    for k, name in enumerate([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]):
        rows = [bytes([labels[4 * k + j]]) + images[4 * k + j].transpose(2, 0, 1).tobytes() for j in range(4)]
        members[f"cifar-10-batches-bin/{name}"] = b"".join(rows)
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(f"c{i}" for i in range(10)).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return images, labels


@pytest.fixture()
def fake_archive(tmp_path, monkeypatch):
    archive = tmp_path / "served" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    images, labels = _fake_cifar10(archive)
    spec = dict(datamod.CIFAR_ARCHIVES["cifar10"], url=archive.as_uri())
    monkeypatch.setitem(datamod.CIFAR_ARCHIVES, "cifar10", spec)
    return archive, spec, images, labels


def test_pinned_checksums_are_the_published_ones():
    assert datamod.CIFAR_ARCHIVES["cifar10"]["md5"] == "c32a1d4ab5d03f1284b67883e8d87530"
    assert datamod.CIFAR_ARCHIVES["cifar100"]["md5"] == "03b5dce01913d631647c71ecec9e9cb8"


def test_download_with_a_wrong_checksum_is_refused_and_not_cached(tmp_path, fake_archive):
    archive, spec, _, _ = fake_archive  # spec keeps the real CIFAR-10 MD5, which the fake cannot match
    cache = tmp_path / "cache"
    with pytest.raises(ConvbenchError, match=f"has MD5 {hashlib.md5(archive.read_bytes()).hexdigest()}, expected {spec['md5']}"):
        datamod.load_dataset("cifar10", cache)
    leftovers = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert leftovers == []


def test_download_with_the_pinned_checksum_is_used(tmp_path, fake_archive, monkeypatch):
    archive, spec, images, labels = fake_archive
    monkeypatch.setitem(datamod.CIFAR_ARCHIVES, "cifar10", dict(spec, md5=hashlib.md5(archive.read_bytes()).hexdigest()))
    ds = datamod.load_dataset("cifar10", tmp_path / "cache", val_fraction=0.2)
    assert np.array_equal(ds.x_test, images[20:]) and np.array_equal(ds.y_test, labels[20:])
    assert sorted(map(bytes, np.concatenate([ds.x_train, ds.x_val]))) == sorted(map(bytes, images[:20]))
    assert (tmp_path / "cache" / "downloads" / "cifar-10-binary.tar.gz").read_bytes() == archive.read_bytes()


def test_tampered_archive_in_the_cache_is_refused_before_use(tmp_path, fake_archive, monkeypatch):
    archive, spec, _, _ = fake_archive
    good_md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(datamod.CIFAR_ARCHIVES, "cifar10", dict(spec, md5=good_md5))
    cached = tmp_path / "cache" / "downloads" / "cifar-10-binary.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(archive.read_bytes()[:-10] + b"tampered!!")
    opened = []
    monkeypatch.setattr(datamod.tarfile, "open", lambda *a, **k: opened.append(a) or pytest.fail("opened a tampered archive"))
    with pytest.raises(ConvbenchError, match=f"does not match the published MD5 {good_md5}"):
        datamod.load_dataset("cifar10", tmp_path / "cache")
    assert not opened and not (tmp_path / "cache" / "decoded").exists()


# ---------------------------------------------------------------------------------------------
# No credentials in artifacts


SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "cbsecret-aws-7f3a9",
    "KFP_TOKEN": "cbsecret-kfp-41d2c",
    "KF_PIPELINES_TOKEN": "cbsecret-kfp2-0c8e1",
    "RAY_AUTH_TOKEN": "cbsecret-ray-93b7a",
    "GITHUB_TOKEN": "cbsecret-gh-5e6f0",
    "HTTPS_PROXY": "http://user:cbsecret-proxy-2a1b@proxy.invalid:3128",
}


def test_run_artifacts_hold_no_credentials(tmp_path, monkeypatch, capsys):
    from convbench.cli import commands as cli

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    data = write_dataset(tmp_path / "data", classes=2, train=12, test=4)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "measure_latency": False, "train": {"epochs": 1, "global_batch_size": 8},
        "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0},
    }))
    out = tmp_path / "run"
    rc = cli.main(["run", "--data", str(data), "--models", "cnn_vgg", "--config", str(config), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"results.json", "REPORT.md", "config.yaml", "run.log"} <= {p.name for p in files}
    leaks = [(str(p.relative_to(out)), key) for p in files for key, value in SECRETS.items()
             if value.encode() in p.read_bytes() or value.split("@")[0].split(":")[-1].encode() in p.read_bytes()]
    leaks += [("stdout/stderr", key) for key, value in SECRETS.items() if value in captured.out + captured.err]
    assert not leaks, f"credentials written: {leaks}"
