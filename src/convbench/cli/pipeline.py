"""`convbench pipeline compile|submit|local`: the Kubeflow pipeline from the command line.

    convbench pipeline compile --out convbench-comparison.yaml
    convbench pipeline local --data ../shared/datasets/cifar10-jpeg --models cnn_vgg,cnn_resnet \\
        --max-train-images 300 --max-test-images 100 --epochs 1 --out runs/pipeline-local
    convbench pipeline submit --host http://localhost:8080 --data /data/cifar10-jpeg --workers 2 \\
        --ray-address http://convbench-ray-head.kubeflow.svc.cluster.local:8265

`local` runs the same pipeline with kfp's SubprocessRunner (no cluster, no containers: each step is
a subprocess of this Python) and leaves the same REPORT.md, figures/ and results.json in --out as
`convbench run`. kfp's local runner has been reported to mark runs successful after a failed step
(kubeflow/pipelines#13332), so the outputs are checked here too: any failure exits non-zero and
names the step.

    .venv/bin/pytest -q tests/test_pipeline.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path

from convbench import rundir
from convbench import config as cfgmod
from convbench.cli.options import add_lang_option, add_run_options, open_run_folder, resolve_config
from convbench.errors import ConvbenchError, raise_terminated
from convbench.i18n import check_language
from convbench.lock import pid_alive

logger = logging.getLogger(__name__)

STEPS = ("prepare-data", "train-model", "evaluate-model", "render-report")
RUN_DIR_FILES = (rundir.REPORT, rundir.RESULTS)


def add_commands(subparsers) -> None:
    """Register `convbench pipeline ...` (called by convbench.cli.commands)."""

    p = subparsers.add_parser("pipeline", help="the Kubeflow pipeline: compile, submit to a cluster, or run locally on CPU")
    sub = p.add_subparsers(dest="pipeline_command", required=True)

    c = sub.add_parser("compile", help="write the pipeline's YAML (IR) for the Kubeflow UI or kfp.Client")
    c.add_argument("--out", required=True, help="the YAML file to write")
    _add_cluster_options(c)
    c.set_defaults(func=cmd_compile)

    s = sub.add_parser("submit", help="submit a run to Kubeflow Pipelines through kfp.Client and print its URL")
    s.add_argument("--host", required=True, help="Kubeflow Pipelines API, e.g. http://localhost:8080 (port-forwarded ml-pipeline-ui)")
    s.add_argument("--experiment", default="convbench", help="experiment name (created if missing)")
    s.add_argument("--run-name", help="run name (default: convbench-<timestamp>)")
    s.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    add_run_options(s)
    add_lang_option(s)
    _add_pipeline_params(s)
    _add_cluster_options(s)
    s.set_defaults(func=cmd_submit)

    lo = sub.add_parser("local", help="run the pipeline here with kfp's SubprocessRunner (the CPU fallback)")
    add_run_options(lo)
    add_lang_option(lo)
    lo.set_defaults(func=cmd_local)


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image of every step (default: the content of k8s/IMAGE)")
    p.add_argument("--shared-pvc", default="", help="PVC to mount into train-model (e.g. convbench-data), needed for Ray on the cluster")
    p.add_argument("--shared-mount", default="/data", help="where --shared-pvc is mounted (default /data)")
    p.add_argument("--ray-token-secret", default="", help="Secret with key auth_token for Ray token auth (e.g. convbench-ray-token)")


def _add_pipeline_params(p: argparse.ArgumentParser) -> None:
    # Options only a cluster run has; the run options (--data ... --ray-address) come from add_run_options.
    p.add_argument("--shared-dir", help="folder on the shared PVC for Ray jobs (default /data/pipeline)")
    p.add_argument("--train-cpu", help="CPU of each train-model step (default 4)")
    p.add_argument("--train-memory", help="memory of each train-model step (default 8Gi)")
    p.add_argument("--train-gpus", type=int, help="GPUs of each train-model step (default 0)")
    p.add_argument("--accelerator-type", help="GPU resource name (default nvidia.com/gpu)")
    p.add_argument("--step-cpu", help="CPU of the other steps (default 1)")
    p.add_argument("--step-memory", help="memory of the other steps (default 4Gi)")




def compile_pipeline(path: str | Path, image: str | None = None, shared_pvc: str = "", shared_mount: str = "/data",
                     ray_token_secret: str = "") -> Path:
    """Compile the pipeline to a YAML file.

    Args:
        path: the file to write.
        image, shared_pvc, shared_mount, ray_token_secret: see `convbench.pipelines.comparison.build_pipeline`.

    Returns:
        The path written.
    """
    from kfp import compiler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from convbench.pipelines.comparison import build_pipeline  # kfp: about 3 s to import

    compiler.Compiler().compile(build_pipeline(image, shared_pvc, shared_mount, ray_token_secret), str(path))
    return path


def cmd_compile(args) -> int:
    path = compile_pipeline(args.out, args.image, args.shared_pvc, args.shared_mount, args.ray_token_secret)
    print(f"pipeline written: {path}")
    return 0


def pipeline_arguments(args) -> dict:
    """Pipeline parameters from command-line options; options not given keep the pipeline's defaults."""
    values = {
        "data_source": args.data,
        "models": [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
        "preset": args.preset,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "max_train_images": args.max_train_images,
        "max_test_images": args.max_test_images,
        "global_batch_size": args.global_batch_size,
        "config_yaml": Path(args.config).read_text(encoding="utf-8") if args.config else None,
        "workers": getattr(args, "workers", None),
        "gpus_per_worker": getattr(args, "gpus_per_worker", None),
        "ray_address": getattr(args, "ray_address", None),
        # The report step's language: --lang, else `lang:` of the --config file (the Dataset's config does not carry it).
        "lang": _lang_argument(args),
    }
    for key in ("shared_dir", "train_cpu", "train_memory", "train_gpus", "accelerator_type", "step_cpu", "step_memory"):
        values[key] = getattr(args, key, None)
    return {k: v for k, v in values.items() if v is not None}


def _lang_argument(args) -> str | None:
    """The pipeline's `lang` from `--lang` or the --config file's `lang:` (None: the pipeline's default, en)."""

    if getattr(args, "lang", None):
        return check_language(args.lang)
    if getattr(args, "config", None):
        import yaml

        try:
            data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None  # resolving the config reports what is wrong with it
        if isinstance(data, dict) and data.get("lang"):
            return check_language(data["lang"])
    return None


def submit(host: str, arguments: dict, experiment: str = "convbench", run_name: str | None = None,
           namespace: str | None = None, **build) -> str:
    """Compile and submit a run through `kfp.Client`; returns the run's URL.

    Args:
        host: the Kubeflow Pipelines API endpoint.
        arguments: pipeline parameters.
        experiment: experiment name.
        run_name: run name (default convbench-<timestamp>).
        namespace: profile namespace for multi-user Kubeflow.
        **build: image, shared_pvc, shared_mount, ray_token_secret for the compiled pipeline.

    Returns:
        The run's URL in the Kubeflow UI.
    """
    import datetime as dt

    import kfp

    run_name = run_name or f"convbench-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="convbench-pipeline-") as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", **build)
        try:
            client = kfp.Client(host=host, namespace=namespace)
            run = client.create_run_from_pipeline_package(str(package), arguments=arguments, run_name=run_name,
                                                          experiment_name=experiment, namespace=namespace)
        except Exception as exc:  # noqa: BLE001 - kfp surfaces connection and API errors in many types
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ConvbenchError(f"cannot submit to Kubeflow Pipelines at {host} ({reason}); check --host "
                                 "(e.g. kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80)") from None
    url = f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
    logger.info(f"submitted run {run_name} ({run.run_id}) to experiment {experiment}: {url}")
    return url


def cmd_submit(args) -> int:
    submit(args.host, pipeline_arguments(args), args.experiment, args.run_name, args.namespace, image=args.image,
           shared_pvc=args.shared_pvc, shared_mount=args.shared_mount, ray_token_secret=args.ray_token_secret)
    return 0


# ---------------------------------------------------------------------------------------------
# Local run (the CPU fallback)


def run_local(args, config, out: Path) -> Path:
    """Run the pipeline with kfp's SubprocessRunner and copy its run directory into `out`.

    Args:
        args: `convbench run`-style options (the pipeline and Ray ones are read from them).
        config: the RunConfig those options resolve to (`cli.options.resolve_config(args)`).
        out: the run directory to fill (REPORT.md, results.json, figures/, ...).

    Returns:
        The REPORT.md path in `out`.

    Raises:
        ConvbenchError: a step failed or left no outputs; the message names the step.
    """
    import yaml

    import kfp.local

    source = Path(config.data.source)
    data_source = str(source.resolve()) if source.exists() else config.data.source  # steps may run elsewhere
    arguments = pipeline_arguments(args)
    # The language goes to the report step alone (`lang`), not into the config the training steps are cached on.
    arguments.update(data_source=data_source, models=list(config.models), preset=config.preset, lang=config.lang,
                     config_yaml=yaml.safe_dump({k: v for k, v in cfgmod.to_dict(config).items() if k != "lang"},
                                                sort_keys=False))
    for key in ("epochs", "seeds", "max_train_images", "max_test_images", "global_batch_size"):
        arguments.pop(key, None)  # already inside config_yaml, resolved as `convbench run` resolves them
    root = out.resolve() / ".kfp"
    # Each kfp run gets fresh output folders: the train steps keep their resume state here instead,
    # so the same command after an interruption resumes every model at its next epoch.
    arguments["resume_dir"] = str(root / "resume")
    drop_empty_cache_entries(root / "cache")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "outputs"),
                   workspace_root=str(root / "workspace"), raise_on_error=True, enable_caching=True,
                   cache_root=str(root / "cache"))
    # Steps are subprocesses of this interpreter: make `python3` and `convbench` resolve to it, too.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    logger.info(f"pipeline local: {len(config.models)} model(s) x {config.seeds} seed(s); kfp outputs in {root}")

    from convbench.pipelines.comparison import build_pipeline  # kfp: about 3 s to import

    pipeline = build_pipeline(local=True)
    messages = _LogCapture()
    logging.getLogger().addHandler(messages)
    stdout, sys.stdout = sys.stdout, _Tee(sys.stdout, messages.records)  # kfp prints the steps' output
    handlers = _stop_steps_on_signals()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            task = pipeline(**arguments)
    except Exception as exc:  # noqa: BLE001 - kfp raises RuntimeError or its own types for a failed task
        messages.records.append(str(exc))
        step, reason = failed_step(messages.records)
        raise ConvbenchError(f"pipeline step {step} failed: {reason}; its log is above") from None
    finally:
        sys.stdout = stdout
        logging.getLogger().removeHandler(messages)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    step, reason = failed_step(messages.records)
    if step != "unknown step":
        # kubeflow/pipelines#13332: a failed task inside the run, yet the run reported success.
        raise ConvbenchError(f"pipeline step {step} failed: {reason}; its log is above")
    run_dir = Path(_output_path(task))
    verify_run_dir(run_dir, config, root / "outputs")
    out.mkdir(parents=True, exist_ok=True)
    for item in run_dir.iterdir():
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        elif item.name == rundir.LOG and target.exists():
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(item.read_text(encoding="utf-8", errors="replace"))
        else:
            shutil.copy2(item, target)
    return rundir.report_path(out)


def drop_empty_cache_entries(cache_root: Path) -> list[Path]:
    """Remove kfp.local cache entries without outputs; returns the removed files.

    kfp.local can cache a step stopped by SIGTERM as a success with no outputs (`{}`). The next run
    then takes that entry as the step's result and fails with "Tried to get output 'model' from task
    'train-model', but task 'train-model' not found". Every convbench step has outputs, so an empty
    (or unreadable) entry is never a real result; without it the step runs again and resumes.
    """
    removed = []
    for entry in sorted(cache_root.glob("*.json")) if cache_root.is_dir() else []:
        try:
            empty = json.loads(entry.read_text()) in ({}, None)
        except (OSError, ValueError):
            empty = True
        if empty:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        logger.info(f"pipeline local: dropped {len(removed)} cached step result(s) without outputs, left by an interrupted run")
    return removed


def _stop_steps_on_signals() -> dict:
    """Make SIGTERM and SIGINT stop kfp's step processes before unwinding; returns the previous handlers.

    kfp's SubprocessRunner waits for a step's process to exit while an exception unwinds
    (`with subprocess.Popen(...)`), so an interrupted `pipeline local` would sit through the rest of
    the step, or leave it running as an orphan. The handler stops every descendant first.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        stopped = stop_descendants()
        if stopped:
            logger.info(f"pipeline local: stopped {len(stopped)} step process(es) (pid {', '.join(map(str, stopped))})")
        if signum == signal.SIGTERM:
            raise_terminated(signum, frame)
        raise KeyboardInterrupt

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def descendants(pid: int) -> list[int]:
    """Every living descendant of a process (children first), from /proc; [] where there is no /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo.extend(parents.get(child, []))
    return out


def stop_descendants(grace_s: float = 10.0) -> list[int]:
    """SIGTERM every descendant of this process, SIGKILL those still alive after `grace_s`; returns the pids."""
    import time

    pids = descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # reap our own children so they stop counting as alive
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return pids


def _output_path(task) -> str:
    output = getattr(task, "output", None)
    path = getattr(output, "path", None)
    if not path:
        raise ConvbenchError("pipeline step render-report produced no run directory, although kfp reported success "
                             "(kubeflow/pipelines#13332); see the step logs above")
    return path


class _LogCapture(logging.Handler):
    """Keeps the messages kfp's local runner logs, to find the task that failed."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a log record that cannot be formatted is not worth failing for
            pass


class _Tee:
    """A stdout that also keeps what passes through it (the last lines only)."""

    def __init__(self, stream, lines: list[str], keep: int = 5000):
        self.stream, self.lines, self.keep = stream, lines, keep

    def write(self, text: str) -> int:
        self.lines.extend(text.splitlines())
        del self.lines[: max(0, len(self.lines) - self.keep)]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failed_step(messages: list[str]) -> tuple[str, str]:
    """The pipeline step kfp's messages report as failed, and why.

    Args:
        messages: kfp's log messages and error text, in order.

    Returns:
        (step name such as "train-model", or "unknown step"; the first error line found).
    """
    clean = [_ANSI.sub("", m) for m in messages]
    step = "unknown step"
    for text in clean:
        m = re.search(r"Task '([\w-]+)' finished with status FAILURE", text)
        if m:
            step = _step_of(m.group(1))
            break
    if step == "unknown step":
        for text in clean:
            m = re.search(r"Inner task failed: '([\w-]+)'", text)
            if m:
                step = _step_of(m.group(1))
    reason = ""
    for text in clean:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(("convbench.errors.ConvbenchError:", "ConvbenchError:")) or re.match(r"^\w+(Error|Exception): ", line):
                reason = line.split(": ", 1)[1] if line.startswith(("convbench.errors.", "ConvbenchError")) else line
            elif not reason and "failed with exception: " in line:
                reason = line.split("failed with exception: ", 1)[1]
    if not reason:
        failing = [t for t in clean if "FAILURE" in t or "failed" in t]
        reason = (failing[-1] if failing else "see the log above").strip().splitlines()[0]
    return step, reason[:500]


def _step_of(task_name: str) -> str:
    for step in STEPS:
        if task_name == step or re.fullmatch(rf"{re.escape(step)}(-\d+)?", task_name):
            return step
    return task_name


def verify_run_dir(run_dir: Path, config, outputs_root: Path | None = None) -> None:
    """Fail loudly unless the pipeline's run directory holds a report of every model and seed.

    Args:
        run_dir: the render-report step's run directory.
        config: the resolved RunConfig.
        outputs_root: kfp's pipeline root (named in the error).

    Raises:
        ConvbenchError: naming the step whose outputs are missing.
    """
    for name in RUN_DIR_FILES:
        if not (run_dir / name).is_file():
            raise ConvbenchError(f"pipeline step render-report left no {name} in {run_dir}, although kfp reported success "
                                 "(kubeflow/pipelines#13332); see the step logs above")
    results = json.loads(rundir.results_path(run_dir).read_text())
    have = {(r["name"], r["seed"]) for r in results.get("runs", []) + results.get("diverged", [])}
    want = {(m, config.train.seed + k) for m in config.models for k in range(config.seeds)}
    if want - have:
        missing = ", ".join(f"{m} seed {s}" for m, s in sorted(want - have))
        raise ConvbenchError(f"pipeline step train-model produced no results for {missing}; see the step logs above")


def cmd_local(args) -> int:

    config = resolve_config(args)
    with open_run_folder(args.out, config, kind="pipeline") as out:
        report = run_local(args, config, out)
        logger.info(f"done: {report}")
    return 0
