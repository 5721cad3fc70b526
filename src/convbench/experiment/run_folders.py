"""Where a run goes without --out: `runs/<timestamp>-<config hash>`, `runs/latest`, and `convbench runs`.

    convbench run --data ../shared/datasets/cifar10-jpeg            # -> runs/20261203-231500-1a2b3c4d
    convbench run --data ../shared/datasets/cifar10-jpeg --epochs 8 # another config: a new folder
    convbench runs                                                  # list them

The hash is of the config part a run folder's ledger compares (`experiment.comparison.config_fingerprint`:
everything but the model list, seeds, per-model overrides, latency and ablation settings), so:
- changing an option (epochs, data, batch size, ...) and running again starts a new folder, where
  before it stopped with "holds results of a different config";
- the same command again (after a crash, Ctrl-C, or to add seeds or models) finds the newest
  folder of that hash and resumes or extends it, as long as the models it names were trained with
  the same recipe there (a changed per-model override gets a new folder too).
`runs/latest` is a relative symlink to the folder the last run used. An explicit --out is used
as given, with the ledger's checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from convbench import rundir
from convbench import config as cfgmod
from convbench.errors import ConvbenchError
from convbench.experiment.comparison import _mismatched_recipes, config_fingerprint
from convbench.lock import live_owner
from convbench.models import model_info

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("runs")
LATEST = "latest"
# <date>-<time>[-<kind>]-<hash>[.<n>]: ".n" when two runs started in the same second.
_NAME = re.compile(r"^(\d{8}-\d{6})-(?:([a-z]+)-)?([0-9a-f]{8})(?:\.(\d+))?$")


def config_hash(config: cfgmod.RunConfig) -> str:
    """8 hex digits of the config part that decides whether a folder's results can be reused."""
    part = config_fingerprint(config, {})["config"]
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:8]


def choose_run_dir(config: cfgmod.RunConfig, kind: str = "", root: Path = DEFAULT_ROOT) -> Path:
    """The folder a run without --out writes to: the newest reusable one of its hash, else a new one.

    Args:
        config: the resolved RunConfig.
        kind: "" for `convbench run`; "ablate" or "pipeline" keep those commands' folders apart.
        root: the folder holding the runs (a reused one is announced in the log).

    Returns:
        The run directory (not created here).
    """
    digest = config_hash(config)
    for folder in sorted(_folders(root, kind, digest), key=_age, reverse=True):
        # Read only: a damaged results.json is set aside by the ledger, with its warning, not here.
        previous = _read_results(folder)
        if previous and _mismatched_recipes(config, [r for r in previous.get("runs", []) if isinstance(r, dict) and "name" in r and "seed" in r]):
            continue
        if previous:
            logger.info(f"continuing {folder}: same config, its finished models are kept")
        return folder
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{kind}-{digest}" if kind else f"{stamp}-{digest}"
    folder = root / name
    suffix = 1
    while folder.exists():  # two runs started in the same second
        folder, suffix = root / f"{name}.{suffix}", suffix + 1
    return folder


def _age(folder: Path) -> tuple[str, int]:
    """Sort key, oldest first: the start time, then the same-second suffix (none, .1, .2 ... .10)."""
    match = _NAME.match(folder.name)
    return match.group(1), int(match.group(4) or 0)


def _folders(root: Path, kind: str, digest: str) -> list[Path]:
    if not root.is_dir():
        return []
    out = []
    for folder in root.iterdir():
        match = _NAME.match(folder.name)
        if match and (match.group(2) or "") == kind and match.group(3) == digest and folder.is_dir() and not folder.is_symlink():
            out.append(folder)
    return out


def update_latest(run_dir: Path, root: Path = DEFAULT_ROOT) -> None:
    """Point `root/latest` at run_dir (a relative symlink, replaced atomically).

    A real folder named `latest` (what `make run` wrote before run folders) is left alone, with a
    warning; so is a file system without symlinks.
    """
    latest = root / LATEST
    if latest.exists() and not latest.is_symlink():
        logger.warning(f"warning: {latest} is a folder from an earlier convbench, not a link; left as it is "
                       f"(rename it, e.g. to {root / 'old-latest'}, so that {latest} follows the newest run)")
        return
    temporary = root / f".{LATEST}.{os.getpid()}"
    try:
        if temporary.is_symlink():
            temporary.unlink()
        os.symlink(os.path.relpath(Path(run_dir).absolute(), Path(root).absolute()), temporary)
        os.replace(temporary, latest)
    except OSError as exc:
        logger.warning(f"warning: could not point {latest} at {run_dir} ({exc.strerror}); open {run_dir} directly")


def run_folder(out: str | None, config: cfgmod.RunConfig, kind: str = "") -> Path:
    """--out as given, or `choose_run_dir` (then `runs/latest` follows it)."""
    if out:
        return Path(out)
    folder = choose_run_dir(config, kind)
    folder.mkdir(parents=True, exist_ok=True)
    update_latest(folder)
    return folder


def describe_runs(root: Path = DEFAULT_ROOT) -> list[dict]:
    """One summary per run folder under root (newest first), read from results.json and config.yaml.

    Returns:
        Dicts with folder, updated (UTC), status, data, models ("name:epochs"), seeds and best (name and accuracy).
    """
    rows = []
    if not root.is_dir():
        return rows
    latest = (root / LATEST).resolve() if (root / LATEST).is_symlink() else None
    for folder in sorted((f for f in root.iterdir() if f.is_dir() and not f.is_symlink()), key=lambda f: f.stat().st_mtime, reverse=True):
        if not (rundir.results_path(folder).exists() or rundir.config_path(folder).exists()):
            continue
        rows.append({**_summary(folder), "latest": latest == folder.resolve()})
    return rows


def _read_results(folder: Path) -> dict:
    """A folder's results.json as a dict, {} when it is missing or unreadable (nothing is moved)."""
    try:
        results = json.loads(rundir.results_path(folder).read_text())
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def _summary(folder: Path) -> dict:
    results = _read_results(folder)
    config = None
    try:
        config = cfgmod.from_dict(results["config"]) if isinstance(results.get("config"), dict) else cfgmod.load_yaml(rundir.config_path(folder))
    except (ConvbenchError, OSError, ValueError, TypeError, KeyError):  # another version's or a damaged config
        config = None
    finished = [r for r in results.get("runs", []) if isinstance(r, dict) and "test_accuracy" in r]
    diverged = results.get("diverged", []) if isinstance(results.get("diverged"), list) else []
    if live_owner(folder):
        status = "running"
    elif "wall_seconds" in results:
        status = "complete"
    else:
        wanted = len(config.models) * config.seeds if config else 0
        status = f"incomplete ({len(finished) + len(diverged)}/{wanted} runs)" if wanted else "incomplete"
    best = max((m for m in results.get("models", []) if isinstance(m, dict) and "test_accuracy" in m),
               key=lambda m: m["test_accuracy"], default=None)
    created = results.get("created") or dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "folder": folder.name,
        "updated": str(created)[:16].replace("T", " "),
        "status": status,
        "data": _data_label(config) if config else "?",
        "models": _models_column(config, finished + diverged),
        "seeds": config.seeds if config else "?",
        "best": f"{best['name']} {best['test_accuracy']:.1%}" if best else "-",
    }


def _models_column(config: cfgmod.RunConfig | None, entries: list[dict]) -> str:
    """ "name:epochs" of every model the folder holds or its config names (a narrower rerun keeps the others)."""
    epochs: dict[str, object] = {}
    for entry in entries:
        recipe = entry.get("recipe")
        if isinstance(recipe, dict):
            epochs.setdefault(entry["name"], _recipe_epochs(entry.get("kind"), recipe))
    for name in config.models if config else ():
        if name not in epochs:
            epochs[name] = _recipe_epochs(_kind(name), dataclasses.asdict(config.recipe(name)))
    return ", ".join(f"{name}:{n}" for name, n in epochs.items()) or "?"


def _kind(name: str) -> str:

    try:
        return model_info(name).kind
    except ConvbenchError:
        return ""


def _recipe_epochs(kind, recipe: dict):
    try:
        return cfgmod.training_epochs(kind, recipe)
    except (KeyError, TypeError, AttributeError):
        return "?"


def _data_label(config: cfgmod.RunConfig) -> str:
    d = config.data
    limits = [f"{n} {what}" for n, what in ((d.max_train_images, "train"), (d.max_test_images, "test")) if n]
    return Path(d.source).name + (f" ({', '.join(limits)})" if limits else "")


def format_runs(rows: list[dict], root: Path = DEFAULT_ROOT) -> str:
    """`convbench runs`' table (plain text, one run per line)."""
    if not rows:
        return f"no runs under {root}/ yet: convbench run --data ../shared/datasets/cifar10-jpeg"
    columns = ("folder", "updated", "status", "data", "seeds", "best", "models")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  " + "  ".join(c.ljust(widths[c]) for c in columns)]
    for r in rows:
        lines.append(("* " if r["latest"] else "  ") + "  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip())
    lines.append(f"\n* = {root / LATEST}. models are name:epochs; best is the mean test accuracy over seeds.")
    return "\n".join(lines)
