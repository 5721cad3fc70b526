"""Ray Train for convbench: each architecture trains under `ray.train.tensorflow.TensorflowTrainer`.

Three ways to reach Ray, picked by the address:
- no address: a local Ray starts on demand (token auth off, no dashboard) and shuts down at the end;
- `auto` or `ray://HOST:10001`: attach to a running cluster; its dashboard URL is printed;
- `http://HOST:8265`: the Ray Job Submission API of a cluster head (e.g. a KubeRay RayCluster).
  The work is submitted as a Ray job named after the run and model, its log is streamed, and the
  command fails when the job fails. Paths in the job (data, --out) are paths on the cluster.

Inside each worker: MultiWorkerMirroredStrategy across workers (Ray sets TF_CONFIG), or
MirroredStrategy over the worker's GPUs when there is one worker, always with convbench's custom
loop (Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy). Batches: `global_batch_size`
stays what the config says; each of W workers takes `per_worker_batch_size = global / W`, split
again over its GPUs; the peak learning rate follows the linear scaling rule of the global batch
(`lr_per_1024 * global_batch_size / 1024`, Goyal et al. 2017), so adding workers changes neither.

Every epoch is reported with `ray.train.report`, rank 0 attaching the resume checkpoint as a
`ray.train.Checkpoint`. With `FailureConfig(max_failures=N)` a killed worker makes Ray restart the
group; every worker then restores the last reported checkpoint, so finished epochs are not redone.
`<out>/ray/<job>.epochs.jsonl` logs each attempt and each finished epoch.

    convbench run --data ../shared/datasets/cifar10-jpeg --models cnn_vgg --max-train-images 2000 \\
        --epochs 2 --workers 2 --out runs/ray2
    .venv/bin/pytest -q tests/test_ray_train.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from convbench import rundir
from convbench import config as cfgmod
from convbench.config import from_dict, RunConfig, TrainConfig
from convbench.env import import_tensorflow_quietly
from convbench.errors import ConvbenchError, raise_terminated
from convbench.experiment import comparison as runner
from convbench.experiment.comparison import train_and_evaluate
from convbench.io import atomic_write_json, atomic_write_text
from convbench.log import run_log, setup_console_logging
from convbench.training.loop import default_strategy, load_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_GLOB = rundir.CHECKPOINT_GLOB  # what convbench.training.recipes writes per epoch (checkpoint-head/finetune for transfer)
# Environment of every process of a convbench Ray job. Train's controller collects reports when it
# polls the workers (every 2 s by default); an epoch counts as finished once Ray has committed its
# checkpoint, so a shorter poll shortens that wait at the end of each epoch (about 1 s to 0.25 s).
JOB_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# On a cluster with a dashboard (attached or submitted runs): each Train run (name, status,
# attempts, workers and their logs) becomes readable from the dashboard's HTTP API
# (/api/train/v2/runs/v1). Not on a local Ray, which has no dashboard for its state actor to talk to.
DASHBOARD_ENV = {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}
# Per-epoch Ray metrics of the rank-0 worker (Prometheus gauges; Ray adds the "ray_" prefix), tagged
# with the Train run's name: what the dashboard's Metrics view charts once Prometheus scrapes Ray.
EPOCH_GAUGES = {
    "convbench_epoch": ("epoch", "the last finished epoch (counted across a transfer model's phases)"),
    "convbench_train_loss": ("train_loss", "training loss of the last epoch"),
    "convbench_train_accuracy": ("train_accuracy", "training accuracy of the last epoch (0-1)"),
    "convbench_val_loss": ("val_loss", "validation loss after the last epoch"),
    "convbench_val_accuracy": ("val_accuracy", "validation accuracy after the last epoch (0-1)"),
    "convbench_learning_rate": ("lr", "learning rate at the end of the last epoch"),
    "convbench_images_per_second": ("images_per_s", "training throughput of the last epoch, all workers"),
}
GAUGE_TAGS = ("train_run", "model", "seed", "phase")


@dataclass(frozen=True)
class RayOptions:
    """How to train under Ray.

    Attributes:
        workers: Ray Train workers (processes) per model.
        gpus_per_worker: GPUs each worker gets (0 = CPU only).
        cpus_per_worker: CPUs each worker reserves; 0 = this machine's cores split evenly when Ray
            is local, 1 on a cluster.
        address: "" (local Ray), "auto", "ray://HOST:10001" or "http://HOST:8265" (job submission).
        accelerator_type: Ray accelerator type the workers need (e.g. "A100"); "" = any.
        max_failures: worker-group restarts Ray allows before the training fails.
        run_name: prefix of Ray job and run names (default: the output folder's name).
        storage_path: Ray Train storage for checkpoints (default: <out>/ray); must be shared storage
            when workers run on several nodes.
    """

    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: float = 0.0
    address: str = ""
    accelerator_type: str = ""
    max_failures: int = 2
    run_name: str = ""
    storage_path: str = ""

    def mode(self) -> str:
        """"local", "attach" or "submit" (see the module docstring)."""
        return address_mode(self.address)


@dataclass(frozen=True)
class BatchPlan:
    """The batch sizes and learning rate of a distributed training, all explicit."""

    workers: int
    replicas_per_worker: int
    global_batch_size: int
    per_worker_batch_size: int
    per_replica_batch_size: int
    peak_learning_rate: float

    def describe(self) -> str:
        return (
            f"{self.workers} worker(s) x {self.replicas_per_worker} replica(s): global batch {self.global_batch_size}, "
            f"per worker {self.per_worker_batch_size}, per replica {self.per_replica_batch_size}, peak lr "
            f"{self.peak_learning_rate:.4g} (linear scaling rule: lr_per_1024 x global batch / 1024)"
        )


def wants_ray(workers: int | None, address: str | None) -> bool:
    """Whether a command line asks for Ray: `--ray-address`, or `--workers` above 1.

    `--workers 1` without an address stays the plain single-process loop (no Ray overhead).
    """
    if workers is not None and workers < 1:
        raise ConvbenchError(f"--workers must be >= 1, got {workers}")
    return bool(address) or (workers or 1) > 1


def address_mode(address: str) -> str:
    """Classify a Ray address.

    Args:
        address: "", "auto", "local", "ray://HOST:PORT", "HOST:PORT" or "http(s)://HOST:8265".

    Returns:
        "local" (start Ray here), "attach" (ray.init to a cluster) or "submit" (Job Submission API).
    """
    if not address or address == "local":
        return "local"
    if address.startswith(("http://", "https://")):
        return "submit"
    if address == "auto" or address.startswith("ray://") or re.fullmatch(r"[A-Za-z0-9.\-]+:\d+", address):
        return "attach"
    raise ConvbenchError(
        f"--ray-address {address!r} is not understood; use http://HEAD:8265 (job submission), ray://HEAD:10001, "
        "auto, or leave it out for a local Ray"
    )


def plan_batches(train: TrainConfig, workers: int, gpus_per_worker: int = 0) -> BatchPlan:
    """Split the global batch over workers and their GPUs.

    Args:
        train: the model's training config (its global batch and lr_per_1024).
        workers: Ray Train workers.
        gpus_per_worker: GPUs per worker (each is one replica; 0 = one CPU replica).

    Returns:
        The plan.

    Raises:
        ConvbenchError: the global batch does not divide evenly.
    """
    replicas = max(1, gpus_per_worker)
    total = workers * replicas
    if workers < 1 or train.global_batch_size % total:
        raise ConvbenchError(
            f"global_batch_size {train.global_batch_size} does not split evenly over {workers} worker(s) x {replicas} "
            f"replica(s); pass --global-batch-size as a multiple of {total}"
        )
    per_worker = train.global_batch_size // workers
    return BatchPlan(workers, replicas, train.global_batch_size, per_worker, per_worker // replicas, train.learning_rate())


def job_name(run_name: str, model: str, seed: int | None = None) -> str:
    """A name that reads well in the Ray dashboard and is valid everywhere Ray uses it.

    Args:
        run_name: the run (e.g. the output folder's name).
        model: the model name.
        seed: the seed, when one model trains with several.

    Returns:
        e.g. "quick-cnn-vgg-seed0": lower case, digits and dashes, at most 63 characters.
    """
    def clean(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    # A long run name is shortened, never the model and seed: they tell the jobs of one run apart.
    suffix = clean("-".join([model] + ([f"seed{seed}"] if seed is not None else [])))
    prefix = clean(run_name or "convbench")[: max(1, 62 - len(suffix))].rstrip("-")
    return f"{prefix}-{suffix}".strip("-")[:63]


# ---------------------------------------------------------------------------------------------
# Ray session


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[str | None]:
    """Connect to Ray for the duration of a block; yields the dashboard URL (None when there is none).

    A local Ray is started only when none is running in this process, and is shut down on exit;
    one that was already initialised (or a cluster attached to) is left as it was.
    """
    import ray

    if options.mode() == "submit":
        raise ConvbenchError("ray_session cannot attach to an http:// address; that address is for job submission")
    if options.mode() == "attach":
        check_reachable(options.address)
    if ray.is_initialized():
        yield None
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    sigterm = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    # The workers of a cluster started elsewhere (`make ray-up`, KubeRay) do not inherit this shell's
    # TensorFlow log level; without it every worker floods the driver with gRPC notices.
    env_vars = {**JOB_ENV, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if options.mode() != "local":
        env_vars.update(DASHBOARD_ENV)
    kwargs: dict = {"log_to_driver": True, "logging_level": "WARNING", "runtime_env": {"env_vars": env_vars}}
    if options.mode() == "local":
        # A throwaway single-user Ray: no token file in ~/.ray, no dashboard (it needs ray[default]).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # address="local" always starts a new Ray: a bare ray.init() would attach to a head that
        # `make ray-up` left running and then refuse num_cpus.
        kwargs.update(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False)
        # Without the dashboard (ray[default]) Train's placement-group watcher warns every few seconds that
        # the state API is unavailable; on a local throwaway Ray only errors are worth showing.
        kwargs["logging_config"] = ray.LoggingConfig(log_level="ERROR")
        if os.environ.get("RAY_TMPDIR"):
            kwargs["_temp_dir"] = os.environ["RAY_TMPDIR"]
        started = time.perf_counter()
        context = ray.init(**kwargs)
        logger.info(f"ray: started a local Ray ({os.cpu_count()} CPUs) in {time.perf_counter() - started:.1f} s; it stops when the run ends")
    else:
        # The run's name on the dashboard's Jobs page (this driver is one Ray job for all its models);
        # Ray Train's per-report INFO lines stay out of the driver's terminal.
        from ray.job_config import JobConfig

        kwargs["job_config"] = JobConfig(metadata={"convbench_run": options.run_name or "convbench"})
        kwargs["logging_config"] = ray.LoggingConfig(log_level="WARNING")
        try:
            context = ray.init(address=options.address, **kwargs)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise ConvbenchError(
                f"cannot attach to a Ray cluster at --ray-address {options.address} ({_root_cause(exc)}); start one "
                "(`ray start --head`, or the KubeRay cluster in k8s/) or leave --ray-address out for a local Ray"
            ) from None
    if _main_thread():
        # ray.init makes SIGTERM a bare sys.exit; convbench's handler unwinds as Ctrl-C does (cli.main).
        signal.signal(signal.SIGTERM, raise_terminated)
    url = getattr(context, "dashboard_url", None) or None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    if url:
        logger.info(f"ray: dashboard {url}")
    # The driver reads DASHBOARD_ENV too (Train decides on state tracking where the trainer is
    # built); set for this session only, so a later local run in the same process is unaffected.
    driver_env = {k: v for k, v in DASHBOARD_ENV.items() if k not in os.environ} if options.mode() != "local" else {}
    os.environ.update(driver_env)
    try:
        yield url
    finally:
        for key in driver_env:
            os.environ.pop(key, None)
        ray.shutdown()
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line, within seconds, when nothing listens at a HOST:PORT or ray://HOST:PORT address.

    ray.init itself retries an unreachable GCS for minutes. "auto" has no port to probe; ray.init
    answers it quickly.
    """
    import socket

    match = re.fullmatch(r"(?:ray://)?\[?([A-Za-z0-9.\-:]+?)\]?:(\d+)", address)
    if not match:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
    raise ConvbenchError(
        f"nothing answers at --ray-address {address} ({reason} on {host}:{port}); start the Ray head there "
        "(`ray start --head`, or the KubeRay cluster in k8s/), check the host and port, or leave --ray-address out "
        "for a local Ray"
    )


# ---------------------------------------------------------------------------------------------
# Driver: one (model, seed) under Ray Train


def _resources(options: RayOptions) -> dict:
    cpus = options.cpus_per_worker
    if not cpus:
        cpus = max(1, (os.cpu_count() or 1) // options.workers) if options.mode() == "local" else 1
    resources = {"CPU": cpus}
    if options.gpus_per_worker:
        resources["GPU"] = options.gpus_per_worker
    return resources


def train_and_evaluate_ray(name: str, seed: int, config: RunConfig, data, out_dir: str | Path, options: RayOptions) -> dict:
    """Train one (model, seed) under Ray Train, then evaluate it: `experiment.comparison.train_and_evaluate` on Ray workers.

    Needs a Ray connection (`ray_session`). Writes the same files under out_dir as the plain path;
    out_dir must be visible to the rank-0 worker and to this process (shared storage on clusters).

    Args:
        name: registered model name.
        seed: the training seed.
        config: the run config.
        data: the Dataset (sent once to Ray's object store).
        out_dir: the run directory.
        options: workers, GPUs, failures, names.

    Returns:
        The run's result entry, as `experiment.comparison.train_and_evaluate` returns it, plus a "distributed" record.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    out_dir = Path(out_dir).resolve()
    recipe = config.recipe(name)
    plan = plan_batches(recipe.train, options.workers, options.gpus_per_worker)
    _check_steps(data, recipe.train.global_batch_size)
    job = job_name(options.run_name or out_dir.name, name, seed)
    storage = Path(options.storage_path or out_dir / "ray")
    model_dir = rundir.model_dir(out_dir, name, seed)
    epoch_log = storage / f"{job}.epochs.jsonl"
    result_file = storage / f"{job}.result.json"
    result_file.unlink(missing_ok=True)
    # Resume state lives in the run directory (below); a Ray run left under the same name would make
    # Ray pick up its old state instead, so every fit starts a fresh Ray run.
    shutil.rmtree(storage / job, ignore_errors=True)

    # A checkpoint left by an interrupted run (plain or Ray) seeds every worker, so all start at the
    # same epoch. It is handed over as a folder in the loop config: Ray's own resume_from_checkpoint
    # is deprecated (and raises) in Train V2; within this fit, Ray's restarts use its own checkpoints.
    resume_dir = ""
    leftovers = sorted(model_dir.glob(CHECKPOINT_GLOB))
    if leftovers:
        seed_dir = storage / f"{job}.resume"
        shutil.rmtree(seed_dir, ignore_errors=True)
        seed_dir.mkdir(parents=True)
        for f in leftovers:
            shutil.copy2(f, seed_dir / f.name)
        resume_dir = str(seed_dir)

    logger.info(f"[{name} seed {seed}] Ray Train run {job}: {plan.describe()}; storage {storage}")
    loop_config = {
        "name": name,
        "seed": seed,
        "config": cfgmod.to_dict(config),
        "data": ray.put(data),
        "out_dir": str(out_dir),
        "epoch_log": str(epoch_log),
        "result_file": str(result_file),
        "plan": dataclasses.asdict(plan),
        "resume_dir": resume_dir,
    }
    scaling = ScalingConfig(
        num_workers=options.workers,
        use_gpu=options.gpus_per_worker > 0,
        resources_per_worker=_resources(options),
        accelerator_type=options.accelerator_type or None,
    )
    run_config = RayRunConfig(
        name=job,
        storage_path=str(storage),
        failure_config=FailureConfig(max_failures=options.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        logging_config=LoggingConfig(log_level="WARNING"),  # not a line per report and checkpoint
    )
    trainer = TensorflowTrainer(train_worker, train_loop_config=loop_config, scaling_config=scaling, run_config=run_config)
    earlier_starts = _count_starts(epoch_log)  # the log keeps attempts of earlier invocations too
    started = time.perf_counter()
    sigint = signal.getsignal(signal.SIGINT) if _main_thread() else None
    try:
        trainer.fit()
    except SystemExit:
        # Ray Train's own Ctrl-C handler aborts the run, then leaves by sys.exit(0) from inside fit().
        raise KeyboardInterrupt from None
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types; report them as one line
        cause = _root_cause(exc)
        raise ConvbenchError(
            f"Ray training of {name} seed {seed} (run {job}) failed after {options.max_failures + 1} attempt(s) at most: "
            f"{cause}; its log is {epoch_log} and the Ray output above"
        ) from None
    finally:
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)  # fit() leaves Ray's handler installed
    if not result_file.exists():
        raise ConvbenchError(f"Ray run {job} finished without writing {result_file}; see the Ray output above")
    entry = json.loads(result_file.read_text())
    entry["distributed"] = {"backend": "ray", "ray_run": job, **dataclasses.asdict(plan),
                            "ray_fit_seconds": time.perf_counter() - started,
                            "attempts": _count_starts(epoch_log) - earlier_starts}
    atomic_write_text(result_file, json.dumps(entry, indent=2))
    shutil.rmtree(storage / f"{job}.resume", ignore_errors=True)
    return entry


def _check_steps(data, global_batch: int) -> None:
    # Fail here, before Ray starts workers: a config error would otherwise be retried max_failures times.
    if len(data.y_train) < global_batch:
        raise ConvbenchError(
            f"{len(data.y_train)} training images are fewer than one global batch of {global_batch}; "
            "lower --global-batch-size or use more images"
        )


def _count_starts(epoch_log: Path) -> int:
    return sum(1 for line in _read_jsonl(epoch_log) if line.get("event") == "start")


def _root_cause(exc: BaseException) -> str:
    seen = exc
    for _ in range(10):  # Ray nests the worker's exception in one or more wrappers
        inner = seen.__cause__ or getattr(seen, "cause", None)
        if not isinstance(inner, BaseException):
            break
        seen = inner
    text = str(seen).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), type(seen).__name__)
    return last[:500]


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return []


# ---------------------------------------------------------------------------------------------
# Worker


def worker_strategy(world_size: int):
    """MultiWorkerMirroredStrategy across several workers, else MirroredStrategy over local GPUs (or the CPU)."""
    import tensorflow as tf

    if world_size > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return default_strategy()


def train_worker(loop_config: dict) -> None:
    """The per-worker training function Ray runs (rank 0 also evaluates and writes the run's files)."""
    import ray
    import ray.train

    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    _quiet_train_reports()
    name, seed = loop_config["name"], loop_config["seed"]
    config = from_dict(loop_config["config"], base=RunConfig(), where="ray config")
    data = ray.get(loop_config["data"])

    tf = import_tensorflow_quietly()

    tf.get_logger().setLevel("WARNING")  # MultiWorkerMirroredStrategy logs every collective at INFO
    strategy = worker_strategy(size)
    # Only rank 0 writes the run directory; the others keep their per-epoch checkpoints to themselves.
    scratch = None if rank == 0 else Path(tempfile.mkdtemp(prefix=f"convbench-rank{rank}-"))
    out_dir = Path(loop_config["out_dir"]) if rank == 0 else scratch
    model_dir = rundir.model_dir(out_dir, name, seed)
    epoch_log = Path(loop_config["epoch_log"])

    # Rank 0 reports: its stdout reaches the driver's output (Ray's log_to_driver) and its lines the
    # run directory's run.log. The other ranks show errors only.
    setup_console_logging(logging.INFO if rank == 0 else logging.ERROR)
    with run_log(out_dir) if rank == 0 else contextlib.nullcontext():
        # Ray's latest checkpoint after a worker failure in this fit, else what an interrupted invocation left.
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None and loop_config.get("resume_dir"):
            checkpoint = ray.train.Checkpoint.from_directory(loop_config["resume_dir"])
        restored = _restore(checkpoint, model_dir)
        if rank == 0:
            _append_jsonl(epoch_log, {"event": "start", "pid": os.getpid(), "workers": size, "restored_epochs": restored,
                                      "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
            logger.info(f"[{name} seed {seed}] Ray worker group of {size} up (rank 0 pid {os.getpid()}); "
                        + (f"resuming after {restored} finished epoch(s)" if restored else "starting from scratch"))

        gauges = epoch_gauges() if rank == 0 else {}
        gauge_tags = {"train_run": context.get_experiment_name(), "model": name, "seed": str(seed)}

        def on_epoch_end(record) -> None:
            metrics = {**dataclasses.asdict(record), "workers": size}
            if rank != 0:
                ray.train.report(metrics)
                return
            for metric, (field, _) in EPOCH_GAUGES.items():
                gauges[metric].set(float(metrics[field]), tags={**gauge_tags, "phase": str(metrics["phase"])})
            with tempfile.TemporaryDirectory(prefix="convbench-ckpt-") as tmp:
                for f in model_dir.glob(CHECKPOINT_GLOB):
                    shutil.copy2(f, Path(tmp) / f.name)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            # Ray's controller registers a report on its next poll (JOB_ENV); a worker killed before that
            # would restart one epoch back. Waiting for the commit makes every epoch in the log one that
            # a restart resumes after.
            waited = time.perf_counter()
            ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
            _append_jsonl(epoch_log, {"event": "epoch", "pid": os.getpid(), **metrics,
                                      "commit_wait_s": round(time.perf_counter() - waited, 3)})

        try:
            entry = train_and_evaluate(name, seed, config, data, out_dir, strategy=strategy, shard=(rank, size),
                                       on_epoch_end=on_epoch_end)
            if rank == 0:
                atomic_write_json(Path(loop_config["result_file"]), entry)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def _quiet_train_reports() -> None:
    """Drop Ray Train's INFO line per `ray.train.report` from the worker's log (the epoch line says it all).

    Ray logs it under a logger named after its source file, outside the "ray.train" hierarchy that
    LoggingConfig sets, so it is found by that name.
    """
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: the lines stay, nothing breaks
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def epoch_gauges() -> dict:
    """The Ray metrics (ray.util.metrics.Gauge) of EPOCH_GAUGES, made once per worker process.

    Ray exports them through each node's metrics agent (`ray start --metrics-export-port`), which
    needs ray[default]; without it Ray records and drops them.
    """
    from ray.util.metrics import Gauge

    return {metric: Gauge(metric, description=text, tag_keys=GAUGE_TAGS) for metric, (_, text) in EPOCH_GAUGES.items()}


def _restore(checkpoint, model_dir: Path) -> int:
    """Make model_dir hold exactly the checkpoint's files; returns the epochs it had finished."""
    if checkpoint is None:
        return 0

    model_dir.mkdir(parents=True, exist_ok=True)
    for f in model_dir.glob(CHECKPOINT_GLOB):
        f.unlink()
    with checkpoint.as_directory() as src:
        for f in Path(src).glob(CHECKPOINT_GLOB):
            shutil.copy2(f, model_dir / f.name)
    done = 0
    for f in model_dir.glob(CHECKPOINT_GLOB):
        done = max(done, len(load_checkpoint(f)[0].get("history", [])))
    return done


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------------------------------
# The whole comparison under Ray


def run_comparison_ray(config: RunConfig, out_dir: str | Path, options: RayOptions) -> dict:
    """`experiment.comparison.run_comparison` with every (model, seed) trained under Ray Train.

    Args:
        config: a validated RunConfig.
        out_dir: the run directory (same ledger and files as the plain run).
        options: Ray options; an http:// address submits the whole run as a Ray job instead.

    Returns:
        The results dict (None-free only for local and attached runs; a submitted run returns {}).
    """

    out_dir = Path(out_dir)
    options = dataclasses.replace(options, run_name=options.run_name or out_dir.name)
    if options.mode() == "submit":
        submit_run(config, out_dir, options)
        return {}
    for name in config.models:
        plan_batches(config.recipe(name).train, options.workers, options.gpus_per_worker)

    def train_fn(name, seed, config, data, out_dir, **_):
        return train_and_evaluate_ray(name, seed, config, data, out_dir, options)

    with ray_session(options):
        return runner.run_comparison(config, out_dir, train_fn=train_fn)


# ---------------------------------------------------------------------------------------------
# Job submission (http://HEAD:8265)


def job_client(address: str):
    """A JobSubmissionClient for `address`, with the Ray token as a bearer header when RAY_AUTH_TOKEN is set."""
    from ray.job_submission import JobSubmissionClient

    if any(importlib.util.find_spec(m) is None for m in ("aiohttp", "requests")):  # what Ray's job SDK imports
        raise ConvbenchError(f"submitting to --ray-address {address} needs Ray's job client: pip install 'ray[default]' "
                             "(or use ray://HEAD:10001, which this installation supports)")
    headers = {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        return JobSubmissionClient(address, headers=headers or None)
    except Exception as exc:  # noqa: BLE001 - connection errors come in several types
        raise ConvbenchError(
            f"cannot reach the Ray Job API at {address} ({_root_cause(exc)}); check the address (port 8265) and, "
            "with token auth, RAY_AUTH_TOKEN"
        ) from None


def submit_job(address: str, entrypoint: str, name: str, runtime_env: dict | None = None,
               poll_seconds: float = 5.0) -> str:
    """Submit a Ray job, stream its log until it ends, and fail loudly unless it succeeded.

    Args:
        address: http(s)://HEAD:8265.
        entrypoint: the shell command the job runs on the cluster.
        name: readable job name (run and model); a timestamp makes the submission id unique.
        runtime_env: Ray runtime_env (e.g. a small working_dir with the config).
        poll_seconds: how often the status and log are polled.

    Returns:
        The submission id.
    """
    from ray.job_submission import JobStatus

    client = job_client(address)
    submission_id = f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    submission_id = submission_id[-63:].lstrip("-")
    env = dict(runtime_env or {})
    env["env_vars"] = {**JOB_ENV, **DASHBOARD_ENV, **env.get("env_vars", {})}
    client.submit_job(entrypoint=entrypoint, submission_id=submission_id, runtime_env=env,
                      metadata={"job_name": name, "submitted_by": "convbench"})
    logger.info(f"ray: submitted job {submission_id} to {address}; dashboard {address.rstrip('/')}/#/jobs/{submission_id}")
    previous = signal.signal(signal.SIGTERM, raise_terminated) if _main_thread() else None
    shown = 0
    try:
        while True:
            status = client.get_job_status(submission_id)
            logs = client.get_job_logs(submission_id)
            if len(logs) > shown:
                sys.stdout.write(logs[shown:])
                sys.stdout.flush()
                shown = len(logs)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        client.stop_job(submission_id)
        logger.info(f"ray: stopped job {submission_id}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(submission_id)
        raise ConvbenchError(f"Ray job {submission_id} ended {status}: {getattr(info, 'message', '') or 'see its log above'}")
    logger.info(f"ray: job {submission_id} succeeded")
    return submission_id


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def submit_run(config: RunConfig, out_dir: Path, options: RayOptions) -> str:
    """Submit a whole `convbench run` as one Ray job (data source and --out are paths on the cluster).

    The job runs the same command with `--ray-address auto`, so each model trains there as a Ray
    Train run named `<run>-<model>-seed<k>`. The config travels in the job's working_dir.
    """

    source = config.data.source
    # The job runs in its own working directory on the cluster: relative paths would point nowhere.
    if source not in ("cifar10", "cifar100") and not Path(source).is_absolute():
        raise ConvbenchError(f"with an http:// Ray address --data must be cifar10, cifar100 or an absolute path on the "
                             f"cluster (e.g. /data/cifar10-jpeg), not {source!r}")
    if not Path(out_dir).is_absolute():
        raise ConvbenchError(f"with an http:// Ray address --out must be an absolute path on the cluster's shared storage "
                             f"(e.g. /data/runs/NAME), not {str(out_dir)!r}")
    with tempfile.TemporaryDirectory(prefix="convbench-job-") as tmp:
        cfgmod.save_yaml(config, rundir.config_path(tmp))
        args = ["convbench", "run", "--config", "config.yaml", "--out", str(out_dir), "--ray-address", "auto",
                "--workers", str(options.workers), "--gpus-per-worker", str(options.gpus_per_worker)]
        return submit_job(options.address, " ".join(args), job_name(options.run_name, "run"),
                          runtime_env={"working_dir": tmp})
