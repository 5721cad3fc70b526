"""Offline checks of the Kubernetes deployment in k8s/ (no cluster needed).

Run: .venv/bin/pytest -q tests/test_k8s.py

Each overlay is rendered by a real kustomize engine when one is installed (`kustomize build`, or
`kubectl kustomize`, which renders offline) and otherwise by convbench's built-in renderer; the
engine that ran is printed and recorded as the `render_engine` property in the JUnit report.
When a real engine is present, the built-in renderer's output is also compared with it.
Every rendered object is validated: core kinds with kubernetes-validate in strict mode,
RayCluster/RayJob with jsonschema against the KubeRay 1.7 CRD schemas from ../shared (those
tests skip when the schemas are absent). Negative tests break real rendered manifests and
check that each breakage is reported.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from convbench.cli import commands as cli
from convbench.orchestrate import k8s_render as kr
from convbench.errors import ConvbenchError

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = [ROOT / "k8s" / "overlays" / name for name in kr.OVERLAYS]
HAVE_SCHEMAS = (kr.schema_dir() / "ray.io_rayclusters.yaml").is_file()
needs_schemas = pytest.mark.skipif(not HAVE_SCHEMAS, reason=f"KubeRay CRD schemas not found in {kr.schema_dir()}")


@pytest.fixture(autouse=True)
def _image_from_checkout(monkeypatch) -> None:
    """These tests check the checkout's k8s/IMAGE; an exported override must not leak in."""
    monkeypatch.delenv("CONVBENCH_IMAGE", raising=False)


@pytest.fixture(scope="module")
def kind_objects() -> list[dict]:
    """The kind overlay rendered by the built-in renderer (mutated copies feed negative tests)."""
    return kr.render_builtin(ROOT / "k8s" / "overlays" / "kind")


def _find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    return next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


@needs_schemas
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.name for p in OVERLAYS])
def test_overlay_renders_and_passes_every_check(overlay: Path, record_property) -> None:
    """Render with the best engine available, then schema-validate and run every check."""
    rendered = kr.render(overlay)
    record_property("render_engine", rendered.engine)
    print(f"{overlay.name}: rendered by {rendered.engine}")
    kinds = sorted(o["kind"] for o in rendered.objects)
    assert kinds == sorted(["ServiceAccount", "PersistentVolumeClaim", "RayCluster", "Service", "NetworkPolicy", "RayJob"])
    assert kr.check_all(rendered.objects) == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.name for p in OVERLAYS])
def test_builtin_renderer_matches_real_kustomize(overlay: Path, record_property) -> None:
    """The fallback renderer produces exactly what kustomize produces for our overlays."""
    if kr.find_kustomize() is None:
        pytest.skip("no kustomize or kubectl on PATH: nothing to compare the built-in renderer with")
    real = kr.render(overlay, engine="kustomize")
    record_property("render_engine", real.engine)
    ours = kr.objects_by_key(kr.render_builtin(overlay))
    theirs = kr.objects_by_key(real.objects)
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == theirs[key], f"{key} differs from {real.engine}"


def test_overlays_differ_where_they_should(kind_objects) -> None:
    """kind is small and CPU-only; gpu asks for nvidia.com/gpu on GPU nodes and RWX storage."""
    gpu = kr.render_builtin(ROOT / "k8s" / "overlays" / "gpu")
    for objects, want_gpu in ((kind_objects, False), (gpu, True)):
        for obj in (_find(objects, "RayCluster"), _find(objects, "RayJob")):
            cluster = obj["spec"] if obj["kind"] == "RayCluster" else obj["spec"]["rayClusterSpec"]
            worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
            res = worker["containers"][0]["resources"]
            assert ("nvidia.com/gpu" in res["limits"]) is want_gpu
            assert ("nvidia.com/gpu" in res["requests"]) is want_gpu
            assert ("tolerations" in worker and "nodeSelector" in worker) is want_gpu
            head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
            assert "nvidia.com/gpu" not in head["limits"]
    assert _find(gpu, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert _find(kind_objects, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]
    kind_worker = _find(kind_objects, "RayCluster")["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    gpu_worker = _find(gpu, "RayCluster")["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert int(kind_worker["containers"][0]["resources"]["limits"]["cpu"]) < int(gpu_worker["containers"][0]["resources"]["limits"]["cpu"])


def test_image_tag_lives_in_one_place() -> None:
    """k8s/IMAGE, the kustomize images entry and `make image` agree on the one tag."""
    image = kr.default_image()
    assert image == (ROOT / "k8s" / "IMAGE").read_text().strip()
    assert kr.kustomization_image() == image
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    dry = subprocess.run(["make", "-n", "image"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f'tag="{image}"' in dry.stdout, dry.stdout


def test_installed_copy_reads_image_from_environment(monkeypatch) -> None:
    """Inside the image (no k8s/ folder) $CONVBENCH_IMAGE, baked in by make image, gives the tag."""
    monkeypatch.setenv("CONVBENCH_IMAGE", "registry.example.com/convbench:1.2.3")
    assert kr.default_image() == "registry.example.com/convbench:1.2.3"
    assert kr.default_image(ROOT) == (ROOT / "k8s" / "IMAGE").read_text().strip()  # explicit checkout wins
    monkeypatch.setenv("CONVBENCH_IMAGE", "Not An Image")
    with pytest.raises(ConvbenchError, match="not an image reference"):
        kr.default_image()


def test_set_image_changes_both_places(tmp_path: Path) -> None:
    """set-image rewrites k8s/IMAGE and the kustomization; rendering then uses the new tag."""
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", k8s)
    kr.set_image("registry.example.com/team/convbench:9.9.9", k8s_dir=k8s)
    assert kr.default_image(tmp_path) == "registry.example.com/team/convbench:9.9.9"
    assert kr.kustomization_image(k8s) == "registry.example.com/team/convbench:9.9.9"
    objects = kr.render_builtin(k8s / "overlays" / "gpu")
    assert kr.check_images(objects, "registry.example.com/team/convbench:9.9.9") == []
    assert kr.check_images(objects, "convbench:0.1.0") != []
    assert "# The one image tag" in (k8s / "base" / "kustomization.yaml").read_text()  # comments survive
    with pytest.raises(ConvbenchError, match="needs a tag"):
        kr.set_image("convbench", k8s_dir=k8s)


def test_rbac_grants_nothing(kind_objects) -> None:
    """The narrowest RBAC is none: every pod runs as convbench-ray, which no binding names and
    which mounts no API token (the KFP step gets the Ray token through kubelet env injection)."""
    assert not [o for o in kind_objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    sa = _find(kind_objects, "ServiceAccount", "convbench-ray")
    assert sa["automountServiceAccountToken"] is False
    accounts = {pod.get("serviceAccountName") for o in kind_objects for _, pod in kr.pod_specs(o)}
    assert accounts == {"convbench-ray"}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "oops", "namespace": "kubeflow"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
               "subjects": [{"kind": "ServiceAccount", "name": "convbench-ray", "namespace": "kubeflow"}]}
    assert any("grants RBAC to convbench-ray" in e for e in kr.check_security(kind_objects + [binding]))


def test_kind_config_is_pinned() -> None:
    """The kind node image is pinned by digest and matches the Kubernetes version we validate for."""
    config = yaml.safe_load((ROOT / "k8s" / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    images = [node["image"] for node in config["nodes"]]
    assert images and all(re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", i) for i in images)
    minor = ".".join(kr.DEFAULT_K8S_VERSION.split(".")[:2])
    assert all(i.split(":v")[1].startswith(minor + ".") for i in images)


# ------------------------------------------------------------------------- negative tests


def _broken(objects: list[dict], kind: str, mutate) -> list[dict]:
    objects = copy.deepcopy(objects)
    mutate(_find(objects, kind))
    return objects


@pytest.mark.parametrize("kind, mutate, expected", [
    # wrong type
    ("PersistentVolumeClaim", lambda o: o["spec"].__setitem__("accessModes", "ReadWriteOnce"), "is not of type 'array'"),
    # missing required field
    ("Service", lambda o: o["spec"]["ports"][0].pop("port"), "'port' is a required property"),
    # unknown field, caught only in strict mode
    ("Service", lambda o: o["spec"].__setitem__("clusterIp", "None"), "clusterIp"),
    # bad value inside a nested list
    ("NetworkPolicy", lambda o: o["spec"]["ingress"][1]["ports"][0].__setitem__("port", [8265]), "port"),
], ids=["wrong-type", "missing-required", "unknown-field", "bad-nested-value"])
def test_core_validation_catches_broken_objects(kind_objects, kind, mutate, expected) -> None:
    """kubernetes-validate (strict) reports each breakage of a real rendered object."""
    broken = _broken(kind_objects, kind, mutate)
    obj = _find(broken, kind)
    errors = kr.validate_object(obj)
    assert errors and any(expected in e for e in errors), errors
    assert kr.validate_object(_find(kind_objects, kind)) == []


def _worker(o):
    return o["spec"]["workerGroupSpecs"][0]


@needs_schemas
@pytest.mark.parametrize("kind, mutate, expected", [
    ("RayCluster", lambda o: _worker(o).__setitem__("replica", 2), "'replica' was unexpected"),
    ("RayCluster", lambda o: _worker(o).pop("groupName"), "'groupName' is a required property"),
    ("RayCluster", lambda o: o["spec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0), "is not of type 'string'"),
    ("RayCluster", lambda o: o["spec"]["authOptions"].__setitem__("mode", "password"), "is not one of"),
    ("RayCluster", lambda o: o["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"].__setitem__("memory", "lots"), "memory"),
    ("RayCluster", lambda o: o.__setitem__("apiVersion", "ray.io/v2"), "is not ray.io/v1"),
    ("RayJob", lambda o: o["spec"].__setitem__("submissionMode", 7), "is not of type 'string'"),
    ("RayJob", lambda o: o["spec"]["submitterPodTemplate"]["spec"]["containers"][0].__setitem__("imagePullPolicy", 3), "imagePullPolicy"),
], ids=["unknown-field", "missing-groupName", "int-startparam", "bad-auth-mode", "bad-quantity", "bad-apiversion",
        "bad-submission-mode", "wrong-type-in-podspec"])
def test_crd_validation_catches_broken_ray_objects(kind_objects, kind, mutate, expected) -> None:
    """The strict CRD schemas report unknown fields, missing required fields and bad values."""
    obj = _find(_broken(kind_objects, kind, mutate), kind)
    errors = kr.validate_object(obj)
    assert errors and any(expected in e for e in errors), errors


@needs_schemas
def test_crd_fields_with_defaults_are_not_required(kind_objects) -> None:
    """minReplicas/maxReplicas are 'required' in the CRD but defaulted, so omitting them is valid."""
    obj = _find(_broken(kind_objects, "RayCluster", lambda o: (_worker(o).pop("minReplicas"), _worker(o).pop("maxReplicas"))), "RayCluster")
    assert kr.validate_object(obj) == []


@pytest.mark.parametrize("mutate, check, expected", [
    (lambda objs: _find(objs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__("image", "rayproject/ray:2.60.0"),
     kr.check_images, "expected 'convbench:0.1.0'"),
    (lambda objs: _worker(_find(objs, "RayCluster"))["template"]["spec"]["containers"][0]["resources"].pop("limits"),
     kr.check_resources, "lacks resources.requests/limits.cpu"),
    (lambda objs: _worker(_find(objs, "RayCluster"))["template"]["spec"]["containers"][0]["resources"]["requests"].__setitem__("cpu", "1"),
     kr.check_resources, "differ from limits"),
    (lambda objs: _find(objs, "RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
     kr.check_security, "allowPrivilegeEscalation"),
    (lambda objs: _find(objs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"].__setitem__("drop", []),
     kr.check_security, "capabilities.drop lacks ALL"),
    (lambda objs: (_find(objs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"].pop("securityContext"),
                   _find(objs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["securityContext"].pop("runAsNonRoot")),
     kr.check_security, "runAsNonRoot is not true"),
    (lambda objs: _find(objs, "RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["securityContext"].__setitem__("runAsUser", 0),
     kr.check_security, "runs as uid 0"),
    (lambda objs: _worker(_find(objs, "RayCluster"))["template"]["spec"]["containers"][0]["volumeMounts"].pop(1),
     kr.check_security, "without a writable emptyDir at /tmp"),
    (lambda objs: _find(objs, "RayJob")["spec"]["submitterPodTemplate"]["spec"].pop("automountServiceAccountToken"),
     kr.check_security, "automountServiceAccountToken is not false"),
    (lambda objs: _worker(_find(objs, "RayCluster"))["template"]["spec"].pop("serviceAccountName"),
     kr.check_security, "default ServiceAccount"),
    (lambda objs: _find(objs, "RayCluster")["spec"].pop("authOptions"),
     kr.check_ray_wiring, "token"),
    (lambda objs: _find(objs, "Service")["spec"]["ports"].pop(0),
     kr.check_ray_wiring, "port 8265 not exposed"),
    (lambda objs: _find(objs, "NetworkPolicy")["spec"]["ingress"].pop(1),
     kr.check_ray_wiring, "cannot reach port 8265"),
    (lambda objs: _worker(_find(objs, "RayCluster")).__setitem__("replicas", 3),
     kr.check_ray_wiring, "rayClusterSpec differs"),
], ids=["foreign-image", "no-limits", "requests-not-limits", "privilege-escalation", "capabilities",
        "root-allowed", "uid-0", "no-tmp-emptydir", "api-token-mounted", "default-sa", "no-token-auth", "dashboard-not-exposed", "kfp-blocked", "rayjob-drift"])
def test_checks_catch_broken_deployments(kind_objects, mutate, check, expected) -> None:
    """Each deployment rule fails on a realistic breakage of the kind overlay and passes on it intact."""
    assert check(kind_objects) == []
    broken = copy.deepcopy(kind_objects)
    mutate(broken)
    errors = check(broken)
    assert errors and any(expected in e for e in errors), errors


def _broken_overlay(tmp_path: Path, patch_ops: str) -> Path:
    """Copy k8s/ to tmp_path and add a JSON6902 patch to the kind overlay."""
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", k8s)
    overlay = k8s / "overlays" / "kind"
    (overlay / "broken.yaml").write_text(patch_ops)
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kust["patches"].append({"path": "broken.yaml", "target": {"kind": "RayCluster", "name": "convbench"}})
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    return overlay


@needs_schemas
@pytest.mark.parametrize("engine", ["builtin", "kustomize"])
def test_broken_overlay_on_disk_is_caught(tmp_path: Path, engine: str, record_property) -> None:
    """End to end: an overlay patch adding a misspelt field renders, then fails validation."""
    if engine == "kustomize" and kr.find_kustomize() is None:
        pytest.skip("no kustomize or kubectl on PATH")
    overlay = _broken_overlay(tmp_path, "- op: add\n  path: /spec/workerGroupSpecs/0/maxReplica\n  value: 3\n")
    rendered = kr.render(overlay, engine=engine)
    record_property("render_engine", rendered.engine)
    errors = kr.check_all(rendered.objects)
    assert any("'maxReplica' was unexpected" in e for e in errors), errors


def test_builtin_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    """Unsupported kustomization features and bad patch paths raise one clear error."""
    overlay = _broken_overlay(tmp_path, "- op: replace\n  path: /spec/workerGroupSpecs/7/replicas\n  value: 3\n")
    with pytest.raises(ConvbenchError, match="workerGroupSpecs/7/replicas does not exist"):
        kr.render_builtin(overlay)
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kust["patches"].pop()
    kust["namePrefix"] = "dev-"
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    with pytest.raises(ConvbenchError, match="namePrefix"):
        kr.render_builtin(overlay)
    with pytest.raises(ConvbenchError, match="no kustomization.yaml"):
        kr.render_builtin(tmp_path)


def test_builtin_strategic_merge_follows_merge_keys() -> None:
    """Core lists merge by key (containers by name); custom-resource lists are replaced whole."""
    base = {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
                                    {"name": "b", "image": "y"}]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}}
    merged = kr._strategic_merge(base, patch, core=True, path="test")
    assert [c["name"] for c in merged["spec"]["containers"]] == ["a", "b"]
    assert merged["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert merged["spec"]["containers"][0]["image"] == "x"
    replaced = kr._strategic_merge(base, patch, core=False, path="test")
    assert [c["name"] for c in replaced["spec"]["containers"]] == ["a"]
    assert kr._strategic_merge({"a": 1, "b": 2}, {"a": None}, core=True, path="test") == {"b": 2}


def test_constraints_pin_every_declared_dependency() -> None:
    """constraints.txt pins (==) every dependency pyproject.toml declares, plus ray[default]'s extras."""
    import tomllib

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"not a pin: {line}"
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [d for deps in project.get("optional-dependencies", {}).values() for d in deps]
    for requirement in declared:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower())
        assert name in pins, f"{requirement} has no pin in constraints.txt; run make constraints"
    for extra in ("aiohttp", "aiohttp-cors", "opencensus", "prometheus-client", "py-spy"):  # ray[default]
        assert extra in pins, f"{extra} (ray[default]) missing; run make constraints"
    assert not any(line.startswith("-e") for line in (ROOT / "constraints.txt").read_text().splitlines())


def test_cli_validate_and_rayjob(capsys) -> None:
    """`convbench k8s` validates all overlays and prints an unsuspended RayJob; a bad path is one error line."""
    if not HAVE_SCHEMAS:
        pytest.skip(f"KubeRay CRD schemas not found in {kr.schema_dir()}")
    assert cli.main(["k8s", "validate", "--engine", "builtin"]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli.main(["k8s", "rayjob", str(ROOT / "k8s" / "overlays" / "kind")]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["kind"] == "RayJob" and job["spec"]["suspend"] is False
    assert cli.main(["k8s", "render", str(ROOT / "k8s" / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no kustomization.yaml" in err and err.startswith("convbench: error: ") and len(err.splitlines()) == 1


def test_pinned_releases_agree_with_docs_and_schemas() -> None:
    """The KubeRay release installed matches the CRD schemas we validate against, and the docs
    show the same pinned versions as k8s/k8s.mk."""
    mk = (ROOT / "k8s" / "k8s.mk").read_text()
    kuberay = re.search(r"(?m)^KUBERAY_VERSION \?= (\S+)$", mk).group(1)
    kfp = re.search(r"(?m)^KFP_VERSION \?= (\S+)$", mk).group(1)
    assert kuberay.startswith("1.7."), "KubeRay operator must match the kuberay-1.7 CRD schemas"
    assert kr.schema_dir().name == "kuberay-1.7" or "CONVBENCH_K8S_SCHEMAS" in os.environ
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert f"--version {kuberay}" in docs and f"PIPELINE_VERSION={kfp}" in docs
    kind_image = yaml.safe_load((ROOT / "k8s" / "kind-config.yaml").read_text())["nodes"][0]["image"]
    assert "kind v0.30.0" in docs and "v0.30.0" in (ROOT / "k8s" / "kind-config.yaml").read_text()
    assert kind_image.split("@")[0].split(":v")[1].rsplit(".", 1)[0] in docs  # "1.33"
