"""What a user finds in the Ray dashboard after `convbench run --ray-address auto --workers 2`.

    .venv/bin/pytest -q tests/test_ray_dashboard.py

No mock: a real Ray head with its dashboard on 127.0.0.1 (the flags of `make ray-up`, on free ports
and a private temp dir), a real 2-worker training of cnn_vgg on a tiny two-class image folder, and
everything read back over HTTP: the Train run and the driver job through the dashboard's own API,
the rank-0 worker's log through the dashboard's log API, and the per-epoch Ray metrics from the
node's metrics endpoint (what Prometheus scrapes for the dashboard's Metrics view). Needs the
`dashboard` extra (ray[default]); skipped without it. About 90 s on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers_data import write_dataset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None or importlib.util.find_spec("ray") is None,
                       reason="the Ray dashboard needs the dashboard extra: pip install -e '.[dashboard]'"),
]

RUN = "dash"  # the run folder's name, so the Train run is "dash-cnn-vgg-seed0"
TRAIN_RUN = "dash-cnn-vgg-seed0"
EPOCHS = 2
FAST_CONFIG = """
measure_latency: false
analysis: {robustness_images: 0, tta_flip: false, saliency_images: 0, mistakes: 0}
train: {global_batch_size: 64, lr_per_1024: 0.4, warmup_epochs: 0.5}
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _get(url: str, timeout: float = 10.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GET {url}: HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:1500]}") from None


def _kill_session(temp_dir: str) -> None:
    """SIGKILL every process of this head (they all carry its temp dir on their command line).

    `ray stop` would stop every Ray of this user on the machine, and SIGTERM to `ray start --block`
    drains for 30 s.
    """
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
            if temp_dir in cmdline and int(pid) != os.getpid():
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # already gone


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head as `make ray-up` starts it; yields (dashboard URL, metrics URL, environment for clients)."""
    # A short folder: Ray's socket paths must stay under 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rd", dir="/tmp")
    # Every port Ray would otherwise take at its default (e.g. the agent's 52365, which a local Ray
    # of another test or session may hold): a clash disables the agent's log service silently.
    gcs, dashboard, metrics, agent_http, agent_grpc, runtime_env, client = _free_ports(7)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": temp_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--metrics-export-port", str(metrics),
         "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
         "--runtime-env-agent-port", str(runtime_env), "--ray-client-server-port", str(client),
         "--num-cpus", "2", "--temp-dir", temp_dir, "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                json.loads(_get(f"{url}/api/version", timeout=2))
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Ray head did not start: {head.stderr.read()[-2000:] if head.poll() is not None else 'timeout'}")
                time.sleep(1)
        yield url, f"http://127.0.0.1:{metrics}/metrics", env
    finally:
        head.send_signal(signal.SIGKILL)
        head.wait()
        _kill_session(temp_dir)


class MetricsWatcher(threading.Thread):
    """Polls the metrics endpoint while the run trains: a finished worker's gauges vanish within seconds."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.samples, self.done = url, {}, threading.Event()

    def run(self) -> None:
        pattern = re.compile(r'^ray_(convbench_[a-z_]+)\{([^}]*)\} (\S+)$', re.M)
        while not self.done.is_set():
            try:
                text = _get(self.url, timeout=5)
            except OSError:
                text = ""
            for metric, labels, value in pattern.findall(text):
                if f'train_run="{TRAIN_RUN}"' in labels:
                    self.samples.setdefault(metric, set()).add(float(value))
            self.done.wait(1.0)


def test_run_shows_in_the_dashboard_by_name_with_workers_logs_and_epoch_metrics(ray_head, tmp_path):
    url, metrics_url, env = ray_head
    data = write_dataset(tmp_path / "data", classes=2, train=144, test=32)
    (tmp_path / "fast.yaml").write_text(FAST_CONFIG)
    out = tmp_path / RUN
    watcher = MetricsWatcher(metrics_url)
    watcher.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "convbench.cli", "run", "--data", str(data), "--models", "cnn_vgg",
             "--epochs", str(EPOCHS), "--config", str(tmp_path / "fast.yaml"), "--out", str(out),
             "--ray-address", "auto", "--workers", "2"],
            env=env, capture_output=True, text=True, timeout=900)
    finally:
        watcher.done.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ray: dashboard {url}" in proc.stdout + proc.stderr

    # The Train run, by name, finished, with its two workers (the dashboard's Train API).
    runs = json.loads(_get(f"{url}/api/train/v2/runs/v1"))["train_runs"]
    [run] = [r for r in runs if r["name"] == TRAIN_RUN]
    assert run["status"] == "FINISHED", run["status_detail"]
    attempt = run["attempts"][-1]
    assert attempt["status"] == "FINISHED"
    assert sorted(w["world_rank"] for w in attempt["workers"]) == [0, 1]

    # The driver is a Ray job on the Jobs page, labelled with the run's name.
    jobs = json.loads(_get(f"{url}/api/jobs/"))
    [job] = [j for j in jobs if j.get("job_id") == run["job_id"]]
    assert job["status"] == "SUCCEEDED" and job["metadata"].get("convbench_run") == RUN

    # The rank-0 worker's log, as the dashboard's log viewer serves it, has every epoch's line.
    [rank0] = [w for w in attempt["workers"] if w["world_rank"] == 0]
    # By file name, as the Logs page lists them (asking by actor id answers 500 now and then once the actor is gone).
    listing = json.loads(_get(f"{url}/api/v0/logs?" + urllib.parse.urlencode({"node_id": rank0["node_id"]})))
    [stdout_file] = [f for f in listing["data"]["result"]["worker_out"] if f.endswith(f"-{rank0['pid']}.out")]
    query = urllib.parse.urlencode({"node_id": rank0["node_id"], "filename": stdout_file, "lines": 10000})
    log = _get(f"{url}/api/v0/logs/file?{query}")
    for epoch in range(1, EPOCHS + 1):
        assert re.search(rf"\[cnn_vgg seed 0\] epoch {epoch}/{EPOCHS} train: loss [\d.]+ acc [\d.]+ \| val loss", log), log[-2000:]

    # Per-epoch Ray metrics, tagged with the Train run, as Prometheus would scrape them.
    seen = watcher.samples
    assert {"convbench_epoch", "convbench_val_accuracy", "convbench_train_loss", "convbench_learning_rate",
            "convbench_images_per_second"} <= set(seen), seen
    assert max(seen["convbench_epoch"]) == EPOCHS
    assert all(0.0 <= v <= 1.0 for v in seen["convbench_val_accuracy"])
    assert min(seen["convbench_images_per_second"]) > 0
