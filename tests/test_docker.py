"""The convbench image: static checks of the Dockerfile everywhere; build and run it where a
Docker engine is reachable.

Run: .venv/bin/pytest -q tests/test_docker.py

The engine tests skip, with the reason, when `docker info` fails (CI starts no dockerd). Where an
engine runs they build the image with the real `make image` target from a copy of the build
context in tmp_path, then run it like Kubernetes does (uid 1000, read-only root filesystem,
writable tmpfs at /tmp and the home directory, all capabilities dropped, no privilege
escalation, no network): `convbench run` on a tiny CIFAR-10 subset mounted read-only must write
REPORT.md owned by uid 1000, and a Ray head with token authentication must accept a job that
carries the token and refuse one that does not.

The first build downloads about 3 GB of wheels (minutes); later builds reuse Docker's layer cache
and rebuild only the small source layers. Knobs for offline hosts (docs/deploy.md):
  CONVBENCH_DOCKER_BASE_IMAGE  base image (default: the Dockerfile's python:3.11-slim-bookworm)
  CONVBENCH_DOCKER_BUILD_ARGS  extra `docker build` flags (default: --network host)
  CONVBENCH_DOCKER_CA          CA bundle pip must trust in the build (default: the host bundle)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from convbench.orchestrate.k8s_render import default_image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg"
# Mirrors the pod securityContext and volumes in k8s/base/raycluster.yaml.
K8S_LIKE = ["--read-only", "--tmpfs", "/tmp:rw,exec,size=2g", "--tmpfs", "/home/convbench:rw,uid=1000,gid=1000,size=256m",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--shm-size", "512m"]


def _dockerfile_stages() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return re.split(r"(?m)^FROM ", text)[1:]


def test_dockerfile_runtime_stage_is_non_root_and_secret_free() -> None:
    """The final stage runs as a numeric non-root user, sets the cache env vars, and nothing
    secret-looking (or the build CA) reaches it."""
    stages = _dockerfile_stages()
    runtime = stages[-1]
    users = re.findall(r"(?m)^USER\s+(\S+)", runtime)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    for var in ("KERAS_HOME", "MPLCONFIGDIR", "CONVBENCH_CACHE", "RAY_TRAIN_ENABLE_PRINT_PATCH=0", "TF_CPP_MIN_LOG_LEVEL=2"):
        assert var in runtime, var
    assert "docker-ca" not in runtime, "the build CA must stay in the deps stage"
    env_and_args = " ".join(re.findall(r"(?m)^(?:ENV|ARG)\s+(.*)$", (ROOT / "Dockerfile").read_text()))
    assert not re.search(r"(?i)(password|secret|token|api_key|access_key)\s*=", env_and_args)
    deps = next(stage for stage in stages if re.match(r"\S+ AS deps\b", stage))
    assert re.search(r"gpu\)\s*tf=\"tensorflow\[and-cuda\]\"", deps), "VARIANT=gpu must install TensorFlow with CUDA"
    assert "-c constraints.txt" in deps, "dependencies must install under the lock"


def test_every_subpackage_is_installed_by_pip_install_dot() -> None:
    """The image runs a non-editable `pip install .`: every package folder must be listed in
    pyproject.toml, or the image lacks it while the editable dev venv hides the gap."""
    import tomllib

    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = setuptools_cfg.get("packages")
    if not isinstance(packages, list):
        pytest.skip("packages are discovered automatically (find:), nothing to compare")
    dirs = setuptools_cfg.get("package-dir", {})
    found = set()
    for dotted, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([dotted, *rel.parts]))
    # A sub-folder is installed only if its own dotted name is listed (setuptools does not recurse).
    missing = sorted(p for p in found if p not in packages)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_dockerignore_is_an_allow_list() -> None:
    """Only what the Dockerfile copies enters the build context."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "src", "components", "pipelines", "build/docker-ca.crt"}


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{json .ServerVersion}}"],
                              capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "docker info timed out: no Docker engine answering"
    if info.returncode != 0:
        return f"no Docker engine reachable: {(info.stderr.strip().splitlines() or ['docker info failed'])[-1]}"
    return None


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """Build the image with `make image` from a copy of the build context; return its tag."""
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    base = os.environ.get("CONVBENCH_DOCKER_BASE_IMAGE", "")
    probe = base or "python:3.11-slim-bookworm"
    if _run(["docker", "image", "inspect", probe], 30).returncode != 0:
        pulled = _run(["docker", "pull", probe], 300)
        if pulled.returncode != 0:
            pytest.skip(f"base image {probe} is not present and cannot be pulled; set CONVBENCH_DOCKER_BASE_IMAGE "
                        "(docs/deploy.md shows how to make one offline)")
    context = tmp_path_factory.mktemp("context")
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt", "README.md"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, context / name)
    for name in ("components", "pipelines"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ca = os.environ.get("CONVBENCH_DOCKER_CA", "/etc/ssl/certs/ca-certificates.crt")
    make = ["make", "-s", "image", f"IMAGE_CONTEXT={context}",
            f"DOCKER_BUILD_ARGS={os.environ.get('CONVBENCH_DOCKER_BUILD_ARGS', '--network host')}"]
    if base:
        make.append(f"BASE_IMAGE={base}")
    if Path(ca).is_file():
        make.append(f"BUILD_CA={ca}")
    built = _run(make, 3600, cwd=ROOT)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(built.stdout.strip().splitlines()[-1])
    assert not (context / "build" / "docker-ca.crt").exists(), "make image must remove the CA copy"
    return default_image()


def test_image_user_env_and_tools(image: str) -> None:
    """uid 1000, the cache env vars point into /tmp, Ray's dashboard deps and KubeRay's wget are there."""
    out = _run(["docker", "run", "--rm", "--network", "none", *K8S_LIKE, image, "sh", "-c",
                "id -u; id -g; echo $KERAS_HOME $MPLCONFIGDIR $CONVBENCH_CACHE; command -v wget tar bash; "
                "python -c 'import aiohttp, ray, ray.dashboard, convbench.cli.commands; print(ray.__version__)'"], 120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[0] == "1000" and lines[1] == "1000"
    assert all(p.startswith("/tmp/") for p in lines[2].split())
    assert "/usr/bin/wget" in out.stdout and lines[-2] == "2.60.0"


def _tiny_subset(dest: Path, train_per_class: int, test_per_class: int) -> Path:
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for class_dir in sorted((SHARED_DATA / split).iterdir()):
            target = dest / split / class_dir.name
            target.mkdir(parents=True)
            for jpg in sorted(class_dir.glob("*.jpg"))[:count]:
                shutil.copy2(jpg, target / jpg.name)
    return dest


@pytest.mark.slow
def test_convbench_run_in_container_writes_report_as_non_root(image: str, tmp_path: Path) -> None:
    """`convbench run` in the image, data mounted read-only, root filesystem read-only, no
    network: REPORT.md appears and belongs to uid 1000."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"CIFAR-10 JPEG copy not found at {SHARED_DATA}")
    data = _tiny_subset(tmp_path / "data", train_per_class=12, test_per_class=5)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the container user (uid 1000) writes here
    cmd = ["docker", "run", "--rm", "--network", "none", *K8S_LIKE, "-v", f"{data}:/data:ro", "-v", f"{out}:/out", image,
           "convbench", "run", "--data", "/data", "--models", "cnn_vgg", "--epochs", "1", "--global-batch-size", "32",
           "--max-train-images", "120", "--max-test-images", "50", "--out", "/out/run", "--preset", "quick"]
    ran = _run(cmd, 900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    report = out / "run" / "REPORT.md"
    assert report.is_file(), sorted(p.name for p in (out / "run").iterdir()) if (out / "run").exists() else "no run dir"
    assert report.stat().st_uid == 1000
    assert "cnn_vgg" in report.read_text()
    results = json.loads((out / "run" / "results.json").read_text())
    assert results["data"]["test_images"] == 50


@pytest.mark.slow
def test_ray_head_in_container_enforces_token_auth(image: str) -> None:
    """A Ray head started as KubeRay starts it (token auth, non-root, read-only root) runs a job
    submitted with the token through the Job Submission API, and refuses a wrong token."""
    name = f"convbench-ray-test-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    start = ["docker", "run", "-d", "--name", name, "--network", "none", *K8S_LIKE, "-e", "RAY_AUTH_MODE=token",
             "-e", f"RAY_AUTH_TOKEN={token}", image, "ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
             "--dashboard-host", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    started = _run(start, 60)
    assert started.returncode == 0, started.stderr
    submit = (
        "import sys, time\n"
        "from ray.job_submission import JobSubmissionClient, JobStatus\n"
        "for _ in range(60):\n"
        "    try:\n"
        "        client = JobSubmissionClient('http://127.0.0.1:8265'); break\n"
        "    except Exception as exc:\n"
        "        err = exc; time.sleep(1)\n"
        "else:\n"
        "    sys.exit(f'dashboard never came up: {err}')\n"
        "job = client.submit_job(entrypoint=\"python -c 'import convbench.orchestrate.k8s_render as k; print(\\\"image\\\", k.default_image())'\")\n"
        "for _ in range(120):\n"
        "    status = client.get_job_status(job)\n"
        "    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED): break\n"
        "    time.sleep(1)\n"
        "print('STATUS', status)\n"
        "print(client.get_job_logs(job))\n"
    )
    try:
        ok = _run(["docker", "exec", name, "python", "-c", submit], 240)
        assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
        assert "STATUS SUCCEEDED" in ok.stdout, ok.stdout[-2000:]
        assert f"image {image}" in ok.stdout, "the job driver must see the image's own tag ($CONVBENCH_IMAGE)"
        denied = _run(["docker", "exec", "-e", "RAY_AUTH_TOKEN=wrong-token", name, "python", "-c",
                       "from ray.job_submission import JobSubmissionClient\n"
                       "JobSubmissionClient('http://127.0.0.1:8265').list_jobs()\n"], 120)
        assert denied.returncode != 0, "a wrong token must be refused"
        assert re.search(r"(?i)unauthori[sz]ed|401|403|token", denied.stdout + denied.stderr), denied.stderr[-2000:]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
