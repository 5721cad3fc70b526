"""The Kubeflow pipeline: compiled DAG, `convbench pipeline local` end to end, loud failures, submit errors.

    .venv/bin/pytest -q tests/test_pipeline.py

The local runs are subprocesses (`python -m convbench.cli pipeline local ...`), as a user runs them;
each pipeline step is in turn a subprocess that kfp's SubprocessRunner starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_tensorboard import read_scalars  # noqa: E402

from convbench.errors import ConvbenchError  # noqa: E402

STEPS = ("prepare-data", "train-model", "evaluate-model", "render-report")
# Analysis extras off: they are the plain library's code and cost more than the tiny trainings here.
FAST_CONFIG = """
measure_latency: false
analysis: {robustness_images: 0, tta_flip: false, saliency_images: 0, mistakes: 0}
train: {global_batch_size: 32}
"""


def _compile(tmp_path: Path, *extra: str) -> dict:
    from convbench.cli.commands import main

    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "--out", str(out), *extra]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    return {"spec": docs[0], "platform": docs[1] if len(docs) > 1 else {}}


def test_compiled_pipeline_holds_the_dag_types_and_image(tmp_path):
    from convbench.orchestrate.k8s_render import default_image

    compiled = _compile(tmp_path, "--shared-pvc", "convbench-data", "--ray-token-secret", "convbench-ray-token")
    spec = compiled["spec"]
    assert spec["pipelineInfo"]["name"] == "convbench-comparison"
    assert {f"comp-{s}" for s in STEPS} <= set(spec["components"])
    # prepare-data -> ParallelFor over the models parameter -> render-report collecting its outputs.
    root = spec["root"]["dag"]["tasks"]
    [loop_name] = [name for name, t in root.items() if "parameterIterator" in t]
    loop = root[loop_name]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("models")
    assert loop["dependentTasks"] == ["prepare-data"]
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"train-model", "evaluate-model"}
    assert inner["evaluate-model"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train-model"
    report = root["render-report"]["inputs"]["artifacts"]
    assert report["models"]["taskOutputArtifact"]["producerTask"] == loop_name  # dsl.Collected over the loop
    assert report["evaluations"]["taskOutputArtifact"]["producerTask"] == loop_name

    def types(component: str, direction: str) -> dict:
        arts = spec["components"][f"comp-{component}"][direction].get("artifacts", {})
        return {k: v["artifactType"]["schemaTitle"] for k, v in arts.items()}

    assert types("prepare-data", "outputDefinitions") == {"dataset": "system.Dataset"}
    assert types("train-model", "outputDefinitions") == {"model": "system.Model", "history": "system.Metrics"}
    assert types("evaluate-model", "outputDefinitions") == {"metrics": "system.Metrics",
                                                            "confusion": "system.ClassificationMetrics"}
    assert types("render-report", "outputDefinitions") == {"report": "system.Markdown", "report_html": "system.HTML",
                                                           "run_dir": "system.Artifact"}
    assert spec["components"]["comp-render-report"]["inputDefinitions"]["artifacts"]["models"]["isArtifactList"]

    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 4
    for ex in executors.values():
        container = ex["container"]
        assert container["image"] == default_image()
        assert "pip install" not in " ".join(container["command"])  # install_kfp_package=False, nothing at run time
    train_exec = executors[spec["components"]["comp-train-model"]["executorLabel"]]["container"]
    assert "pipelinechannel--train_cpu" in train_exec["resources"]["resourceCpuLimit"]
    assert "pipelinechannel--train_gpus" in train_exec["resources"]["accelerator"]["resourceCount"]
    assert "pipelinechannel--accelerator_type" in train_exec["resources"]["accelerator"]["resourceType"]
    assert inner["train-model"]["retryPolicy"]["maxRetryCount"] >= 1
    assert all(t["cachingOptions"]["enableCache"] for t in [*inner.values(), root["prepare-data"], root["render-report"]])
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("data_source", "models", "preset", "epochs", "seeds", "workers", "gpus_per_worker", "ray_address"):
        assert name in params, name
    k8s = compiled["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    [train_k8s] = k8s.values()
    assert train_k8s["pvcMount"][0]["mountPath"] == "/data"
    assert train_k8s["secretAsEnv"][0]["keyToEnv"][0]["envVar"] == "RAY_AUTH_TOKEN"


def test_image_can_be_overridden(tmp_path):
    spec = _compile(tmp_path, "--image", "registry.example/convbench:9.9.9")["spec"]
    assert {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()} == {"registry.example/convbench:9.9.9"}


def _run_cli(args: list[str], tmp_path: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp_path)  # kfp's and the steps' temporary files stay inside the test's folder
    return subprocess.run([sys.executable, "-m", "convbench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_pipeline_local_end_to_end(tiny_data, tmp_path):
    (tmp_path / "fast.yaml").write_text(FAST_CONFIG)
    out = tmp_path / "run"
    proc = _run_cli(["pipeline", "local", "--data", str(tiny_data), "--models", "cnn_vgg,cnn_resnet", "--epochs", "1",
                     "--config", str(tmp_path / "fast.yaml"), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in STEPS:
        assert f"Task '{step}' finished with status" in _plain(proc.stdout), step
    for rel in ("REPORT.md", "REPORT.html", "results.json", "config.yaml", "figures/learning_curves.png",
                "history/cnn_vgg_seed0.csv", "history/cnn_resnet_seed0.csv", "predictions/cnn_vgg_seed0.npz",
                "models/cnn_resnet/seed0/best.weights.h5"):
        assert (out / rel).is_file(), rel
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["runs"]] == ["cnn_vgg", "cnn_resnet"]
    assert [m["name"] for m in results["models"]] == ["cnn_vgg", "cnn_resnet"]
    assert results["data"]["train_images"] + results["data"]["val_images"] == 300
    report = (out / "REPORT.md").read_text()
    assert "cnn_vgg" in report and "cnn_resnet" in report and "](figures/" in report
    html = (out / "REPORT.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html
    # The train steps export TensorBoard events too (issue 17); TensorBoard's reader finds them.
    for name in ("cnn_vgg", "cnn_resnet"):
        scalars = read_scalars(out / "tensorboard" / f"{name}_seed0")
        assert [step for step, _ in scalars["validation"]["epoch_accuracy"]] == [1] and "test_accuracy" in scalars[""]


@pytest.mark.slow
def test_failing_step_fails_the_local_run_and_names_it(tiny_data, tmp_path):
    (tmp_path / "fast.yaml").write_text(FAST_CONFIG)
    # 270 training images cannot fill one global batch of 512: train-model fails after prepare-data succeeded.
    proc = _run_cli(["pipeline", "local", "--data", str(tiny_data), "--models", "cnn_vgg", "--epochs", "1",
                     "--global-batch-size", "512", "--config", str(tmp_path / "fast.yaml"), "--out", str(tmp_path / "run")],
                    tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("convbench: error: pipeline step train-model failed:"), last
    assert "fewer than one batch of 512" in last
    assert not (tmp_path / "run" / "REPORT.md").exists()


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_failed_step_is_found_in_kfp_messages():
    from convbench.cli.pipeline import failed_step

    messages = [
        "\x1b[96m'prepare-data'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
        "    convbench.errors.ConvbenchError: 10 training images are fewer than one batch of 512; lower it",
        "Task \x1b[96m'train-model'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m",
        "Pipeline 'convbench-comparison' finished with status FAILURE. Inner task failed: 'train-model' inside 'for-loop-1-iteration-0'.",
    ]
    step, reason = failed_step(messages)
    assert step == "train-model"
    assert reason.startswith("10 training images are fewer than one batch")
    assert failed_step(["Inner task failed: 'render-report'."])[0] == "render-report"


def test_silent_success_without_outputs_is_an_error(tmp_path):
    """kubeflow/pipelines#13332: a run reported successful must still have produced every output."""
    from convbench.config import RunConfig
    from convbench.cli.pipeline import verify_run_dir

    config = RunConfig(models=("cnn_vgg", "cnn_resnet"))
    with pytest.raises(ConvbenchError, match="render-report left no REPORT.md"):
        verify_run_dir(tmp_path, config)
    (tmp_path / "REPORT.md").write_text("# report\n")
    (tmp_path / "results.json").write_text(json.dumps({"runs": [{"name": "cnn_vgg", "seed": 0}]}))
    with pytest.raises(ConvbenchError, match="train-model produced no results for cnn_resnet seed 0"):
        verify_run_dir(tmp_path, config)


def test_report_html_embeds_figures_and_renders_tables(tmp_path):
    from convbench.orchestrate.kfp_steps import embed_figures, markdown_to_html

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    text = "# Title\n\nSome **bold** and `code` <b>.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- x\n- y\n\n![Curves](figures/a.png)\n"
    embedded = embed_figures(text, tmp_path)
    assert "](figures/a.png)" not in embedded and "data:image/png;base64," in embedded
    page = markdown_to_html(embedded)
    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page and "<code>code</code>" in page
    assert "&lt;b&gt;" in page  # raw HTML in the report is shown, not executed
    assert "<td>1</td><td>2</td>" in page and "<li>x</li>" in page
    assert '<img alt="Curves" src="data:image/png;base64,' in page


def test_submit_to_an_unreachable_host_is_one_clear_error(tmp_path):
    proc = _run_cli(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--data", "/data/cifar10-jpeg",
                     "--models", "cnn_vgg"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("convbench: error: cannot submit to Kubeflow Pipelines at http://127.0.0.1:9")


def test_pipeline_arguments_follow_the_run_options(tmp_path):
    import argparse

    from convbench.cli.options import add_run_options
    from convbench.cli.pipeline import _add_pipeline_params, pipeline_arguments

    parser = argparse.ArgumentParser()
    add_run_options(parser)
    _add_pipeline_params(parser)
    args = parser.parse_args(["--data", "/data/x", "--models", "cnn_vgg, cnn_resnet", "--epochs", "3", "--workers", "2",
                              "--ray-address", "http://head:8265", "--train-gpus", "1"])
    values = pipeline_arguments(args)
    assert values["models"] == ["cnn_vgg", "cnn_resnet"] and values["epochs"] == 3 and values["workers"] == 2
    assert values["ray_address"] == "http://head:8265" and values["train_gpus"] == 1 and values["gpus_per_worker"] == 0
    assert "seeds" not in values and "config_yaml" not in values  # not given: the pipeline's defaults apply


@pytest.mark.slow
def test_sigterm_stops_every_step_and_the_same_command_resumes(tiny_data, tmp_path):
    """Issue 19 case 5: SIGTERM to `pipeline local` in mid-training stops its step processes too (no
    orphans), prints the one line and exits 143; the same command then resumes the model at its next
    epoch from `<out>/.kfp/resume` instead of epoch 1."""
    import signal
    import time

    from convbench.errors import INTERRUPTED

    EPOCHS = 40  # a tiny epoch takes a fraction of a second: enough of them to interrupt one
    from convbench.lock import pid_alive
    from convbench.cli.pipeline import descendants
    from convbench.training.loop import load_checkpoint

    (tmp_path / "fast.yaml").write_text(FAST_CONFIG)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "convbench.cli", "pipeline", "local", "--data", str(tiny_data), "--models", "cnn_vgg",
            "--epochs", str(EPOCHS), "--config", str(tmp_path / "fast.yaml"), "--out", str(out)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}

    def epochs_done() -> int:
        for path in (out / ".kfp" / "resume").glob("cnn_vgg-*/models/cnn_vgg/seed0/checkpoint.npz"):
            try:
                return len(load_checkpoint(path)[0]["history"])
            except (OSError, ValueError, KeyError):
                return 0  # being replaced right now
        return 0

    with open(tmp_path / "first.log", "w") as first_log:
        proc = subprocess.Popen(args, stdout=first_log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and epochs_done() < 1:
            time.sleep(0.2)
        steps = descendants(proc.pid)
        assert steps and epochs_done() >= 1, (tmp_path / "first.log").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = _plain((tmp_path / "first.log").read_text())
    assert proc.returncode == 143, first[-3000:]
    assert first.rstrip().splitlines()[-1] == INTERRUPTED, first[-3000:]
    assert not [p for p in steps if pid_alive(p)], "step processes left running"
    done = epochs_done()
    assert 1 <= done < EPOCHS

    second = subprocess.run(args, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    log = _plain(second.stdout + second.stderr)
    assert second.returncode == 0, log[-3000:]
    assert f"resuming from checkpoint.npz: {done} epochs already done" in log
    assert "[cnn_vgg seed 0] epoch 1/" not in log
    (entry,) = json.loads((out / "results.json").read_text())["runs"]
    assert entry["epochs_run"] == EPOCHS


def test_a_model_that_diverged_flows_through_evaluate_and_report(tiny_data, tmp_path):
    """Issue 19 case 2 in the pipeline: a Model artifact whose only seed diverged is scored as nothing
    (no error), and the report step renders a report naming it, which the local runner's check accepts."""
    from convbench.io import atomic_write_json, atomic_write_text
    from convbench.cli.pipeline import verify_run_dir
    from convbench.orchestrate.kfp_steps import assemble_run, dataset_config, evaluate_models, history_metrics, prepare_dataset
    from convbench.experiment.comparison import DIVERGED

    dataset = tmp_path / "dataset"
    prepare_dataset(str(dataset), {}, str(tiny_data), ["cnn_vgg"], epochs=1)
    model_dir = tmp_path / "model"
    atomic_write_text(model_dir / "history" / "cnn_vgg_seed0.csv",
                      "epoch,phase,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,images_per_s\n"
                      "1,train,nan,0.1,nan,0.0,0.5,1.0,100\n")
    entry = {"name": "cnn_vgg", "kind": "custom", "seed": 0, "status": DIVERGED, "history_csv": "history/cnn_vgg_seed0.csv",
             "train_seconds": 1.0, "epochs_run": 1,
             "diverged": {"epoch": 1, "phase": "train", "quantity": "training loss", "value": "nan", "lr": 0.5,
                          "lr_setting": "train.lr_per_1024", "lr_setting_value": 2.0}}
    atomic_write_json(model_dir / "runs.json", {"model": "cnn_vgg", "runs": [], "diverged": [entry], "environment": {}})
    logged: dict = {}
    scalars = evaluate_models(str(dataset), str(model_dir), logged.__setitem__, lambda names, cm: None)
    assert "test_accuracy" not in scalars
    assert "seed0_train_seconds" in history_metrics(str(model_dir), logged.__setitem__, str(tmp_path / "history.csv"))
    run_dir = tmp_path / "run"
    report = assemble_run(str(dataset), [str(model_dir)], str(run_dir)).read_text()
    assert "every one diverged" in report and "**cnn_vgg** (seed 0): training loss became nan at epoch 1" in report
    verify_run_dir(run_dir, dataset_config(dataset))


def test_cached_step_results_without_outputs_are_dropped_before_a_run(tmp_path, logged):
    """kfp.local cached a train step stopped by SIGTERM as a success with `{}` outputs (seen in a CI
    run of the SIGTERM test); the next `pipeline local` failed with "task 'train-model' not found".
    Such entries, and unreadable ones, are removed; real results stay."""
    from convbench.cli.pipeline import drop_empty_cache_entries

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "empty.json").write_text("{}")
    (cache / "torn.json").write_text('{"Output": ')
    (cache / "real.json").write_text(json.dumps({"Output": "{}"}))
    removed = drop_empty_cache_entries(cache)
    lines = logged()
    assert sorted(p.name for p in removed) == ["empty.json", "torn.json"]
    assert [p.name for p in cache.iterdir()] == ["real.json"]
    assert lines == ["pipeline local: dropped 2 cached step result(s) without outputs, left by an interrupted run"]
    assert drop_empty_cache_entries(tmp_path / "absent") == []
