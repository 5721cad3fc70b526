"""Render convbench's Kustomize overlays and validate the result offline.

Test it:            .venv/bin/pytest -q tests/test_k8s.py
Render an overlay:  .venv/bin/convbench k8s render k8s/overlays/kind
Validate overlays:  .venv/bin/convbench k8s validate   (all of k8s/overlays/*)
Change the tag:     .venv/bin/convbench k8s set-image convbench:0.2.0
Run the RayJob:     .venv/bin/convbench k8s rayjob k8s/overlays/kind | kubectl create -f -

Rendering uses a real kustomize engine when one is installed (`kustomize build`, else
`kubectl kustomize`, which works offline). Without one it falls back to the small built-in
renderer below, which implements only what convbench's overlays use and refuses anything else:

- `resources`: local files (multi-document YAML) and local directories holding a kustomization;
- `patches` with `path` or inline `patch`: a YAML list is a JSON6902 patch (ops add, remove,
  replace, test; needs `target`), a mapping is a strategic-merge patch. Strategic merge knows the
  merge keys of the core fields the overlays touch (containers, volumes, volumeMounts, env,
  ports, ...); for custom resources it replaces lists whole, as kustomize does without a schema;
- `images`: `name` with `newName`, `newTag` and/or `digest`, applied to every `containers` and
  `initContainers` list at any depth (that is how kustomize reaches RayCluster pod templates);
- `namespace`, `namePrefix`, `commonLabels`, generators, components, replacements and remote
  bases are not supported and raise `ConvbenchError`.

Validation: core kinds with PyPI `kubernetes-validate` in strict mode; RayCluster and RayJob with
`jsonschema` against the KubeRay CRD schemas (../shared/k8s-schemas/kuberay-1.7, or
$CONVBENCH_K8S_SCHEMAS), made strict (unknown fields are errors, as `kubectl apply
--validate=strict` does) and with every field that has a `default` treated as optional.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from convbench.errors import ConvbenchError

# src/convbench/orchestrate/k8s_render.py -> repository root
REPO_ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = REPO_ROOT / "k8s"
IMAGE_FILE = K8S_DIR / "IMAGE"
OVERLAYS = ("kind", "gpu")

# Facts about the deployment that the pipeline's training step relies on (k8s/base/*.yaml).
NAMESPACE = "kubeflow"
RAY_CLUSTER_NAME = "convbench"
RAY_HEAD_SERVICE = "convbench-ray-head"
RAY_TOKEN_SECRET = "convbench-ray-token"
PVC_NAME = "convbench-data"
DATA_MOUNT = "/data"
RAY_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}

# Kubernetes version the core schemas are checked against: the kind node image in
# k8s/kind-config.yaml runs v1.33.
DEFAULT_K8S_VERSION = "1.33.0"
KUBERAY_SCHEMA_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}

_SUPPORTED_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}
# List merge keys of the strategic-merge fields the overlays can touch on core kinds.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "name",
    "volumeDevices": "devicePath",
    "env": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
}
_CORE_GROUPS = {"", "v1", "apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "policy"}


def default_image(repo_root: Path | None = None) -> str:
    """The one image reference every manifest and the compiled pipeline use.

    In a checkout that is the content of `k8s/IMAGE`. An installed copy (the image itself, where
    `k8s/` is not shipped) reads $CONVBENCH_IMAGE instead, which `make image` bakes into the image
    from the same file; the variable also overrides the file when set.

    Args:
        repo_root: checkout to read `k8s/IMAGE` from; defaults to this package's checkout (and
            then $CONVBENCH_IMAGE wins when set).

    Returns:
        The image reference, e.g. "convbench:0.1.0".
    """
    env = os.environ.get("CONVBENCH_IMAGE", "").strip()
    if env and repo_root is None:
        _split_image(env, source="$CONVBENCH_IMAGE")
        return env
    path = (Path(repo_root) / "k8s" / "IMAGE") if repo_root else IMAGE_FILE
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConvbenchError(f"cannot read the image tag from {path} ({exc}); restore k8s/IMAGE or set CONVBENCH_IMAGE") from exc
    _split_image(value, source=str(path))
    return value


def ray_job_address(namespace: str = NAMESPACE) -> str:
    """HTTP address of the Ray Job Submission API inside the cluster.

    Args:
        namespace: namespace the overlay was applied to.

    Returns:
        e.g. "http://convbench-ray-head.kubeflow.svc.cluster.local:8265".
    """
    return f"http://{RAY_HEAD_SERVICE}.{namespace}.svc.cluster.local:{RAY_PORTS['dashboard']}"


def _split_image(ref: str, source: str = "image") -> tuple[str, str | None, str | None]:
    """Split "name[:tag][@digest]" into its parts; the tag colon is the one after the last '/'."""
    match = re.fullmatch(r"([a-z0-9][a-z0-9._/:-]*?)(?::([A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?", ref)
    if not match or ":" in match.group(1).rsplit("/", 1)[-1]:
        raise ConvbenchError(f"{source}: '{ref}' is not an image reference; write name:tag, e.g. convbench:0.1.0")
    return match.group(1), match.group(2), match.group(3)


# ----------------------------------------------------------------------------------- rendering


@dataclass
class Rendered:
    """Objects rendered from one kustomization and the engine that rendered them."""

    objects: list[dict]
    engine: str


@functools.lru_cache(maxsize=None)
def find_kustomize() -> tuple[str, ...] | None:
    """The command of a real kustomize engine on PATH, or None.

    Returns:
        ("kustomize", "build") or ("kubectl", "kustomize") (kubectl's built-in kustomize runs
        offline, without a cluster), or None when neither works.
    """
    if shutil.which("kustomize"):
        return ("kustomize", "build")
    if shutil.which("kubectl"):
        try:
            probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode == 0:
            return ("kubectl", "kustomize")
    return None


def render(path: Path | str, engine: str = "auto") -> Rendered:
    """Render a kustomization directory.

    Args:
        path: directory holding kustomization.yaml (an overlay or the base).
        engine: "auto" (a real kustomize if installed, else the built-in renderer), "builtin",
            or "kustomize" (fail when no real engine is installed).

    Returns:
        The rendered objects and a description of the engine that produced them.
    """
    path = Path(path)
    _kustomization_file(path)  # one clear error for a wrong path, whichever engine runs
    if engine not in ("auto", "builtin", "kustomize"):
        raise ConvbenchError(f"unknown render engine '{engine}'; use auto, builtin or kustomize")
    command = find_kustomize() if engine != "builtin" else None
    if command is None:
        if engine == "kustomize":
            raise ConvbenchError("no kustomize engine found; install kustomize or kubectl, or use engine='builtin'")
        return Rendered(render_builtin(path), "builtin renderer (convbench.orchestrate.k8s_render)")
    proc = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ConvbenchError(f"{' '.join(command)} {path} failed: {proc.stderr.strip().splitlines()[-1:]}; fix the kustomization")
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    version = subprocess.run([command[0], "version", "--client"] if command[0] == "kubectl" else ["kustomize", "version"],
                             capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"Kustomize Version:\s*(\S+)", version) or re.search(r"(v\d+\.\d+\.\d+)", version)
    return Rendered(objects, f"{' '.join(command)} ({found.group(1) if found else 'version unknown'})")


def _load_yaml_docs(path: Path) -> list[Any]:
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ConvbenchError(f"cannot read {path}: {exc}; fix the YAML") from exc


def _kustomization_file(directory: Path) -> Path:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return directory / name
    raise ConvbenchError(f"{directory} has no kustomization.yaml; point at an overlay such as k8s/overlays/kind")


def render_builtin(directory: Path | str) -> list[dict]:
    """Render a kustomization with the built-in renderer (see the module docstring for limits).

    Args:
        directory: the kustomization directory.

    Returns:
        The rendered objects, in resource order.
    """
    directory = Path(directory)
    kfile = _kustomization_file(directory)
    docs = _load_yaml_docs(kfile)
    kust = docs[0] if docs else {}
    if not isinstance(kust, dict):
        raise ConvbenchError(f"{kfile} is not a mapping; fix the kustomization")
    unsupported = sorted(set(kust) - _SUPPORTED_KUSTOMIZATION_KEYS)
    if unsupported:
        raise ConvbenchError(f"{kfile} uses {unsupported}, which the built-in renderer does not support; "
                             "install kustomize or kubectl to render it")
    objects: list[dict] = []
    for entry in kust.get("resources") or []:
        if not isinstance(entry, str) or "://" in entry or entry.startswith("github.com/"):
            raise ConvbenchError(f"{kfile}: resource {entry!r} is not a local path; the built-in renderer reads local files only")
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(render_builtin(target))
        elif target.is_file():
            for doc in _load_yaml_docs(target):
                if not isinstance(doc, dict) or "kind" not in doc:
                    raise ConvbenchError(f"{target}: a document is not a Kubernetes object; fix the file")
                objects.append(doc)
        else:
            raise ConvbenchError(f"{kfile}: resource {entry!r} does not exist")
    for patch in kust.get("patches") or []:
        _apply_patch_entry(objects, patch, directory, kfile)
    for image in kust.get("images") or []:
        _apply_image(objects, image, kfile)
    return objects


def _apply_patch_entry(objects: list[dict], entry: dict, directory: Path, kfile: Path) -> None:
    if not isinstance(entry, dict) or ("path" in entry) == ("patch" in entry):
        raise ConvbenchError(f"{kfile}: each patch needs exactly one of 'path' or 'patch'")
    extra = set(entry) - {"path", "patch", "target"}
    if extra:
        raise ConvbenchError(f"{kfile}: patch fields {sorted(extra)} are not supported by the built-in renderer")
    text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
    where = entry.get("path", "inline patch")
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    target = entry.get("target")
    if len(docs) == 1 and isinstance(docs[0], list):
        if not target:
            raise ConvbenchError(f"{kfile}: JSON6902 patch {where} needs a 'target'")
        matched = _select(objects, target, kfile)
        for obj in matched:
            _json6902(obj, docs[0], where)
        return
    for doc in docs:
        if not isinstance(doc, dict):
            raise ConvbenchError(f"{where}: a strategic-merge patch must be a mapping")
        selector = target or {
            "kind": doc.get("kind"), "name": (doc.get("metadata") or {}).get("name"),
            "namespace": (doc.get("metadata") or {}).get("namespace")}
        for obj in _select(objects, selector, kfile):
            core = _group(obj) in _CORE_GROUPS
            merged = _strategic_merge(obj, doc, core=core, path=where)
            obj.clear()
            obj.update(merged)


def _group(obj: dict) -> str:
    api = obj.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def _select(objects: list[dict], target: dict, kfile: Path) -> list[dict]:
    unsupported = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unsupported:
        raise ConvbenchError(f"{kfile}: patch target fields {sorted(unsupported)} are not supported by the built-in renderer")
    found = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        api = obj.get("apiVersion", "")
        version = api.split("/")[-1]
        checks = {
            "group": _group(obj), "version": version, "kind": obj.get("kind"),
            "name": meta.get("name"), "namespace": meta.get("namespace"),
        }
        if all(target.get(key) in (None, checks[key]) for key in checks):
            found.append(obj)
    if not found:
        raise ConvbenchError(f"{kfile}: patch target {target} matches no resource; fix the target")
    return found


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ConvbenchError(f"JSON pointer '{path}' must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _json6902(obj: dict, ops: list, where: str) -> None:
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        if kind not in ("add", "remove", "replace", "test") or not parts:
            raise ConvbenchError(f"{where}: unsupported JSON6902 operation {op}; use add, remove, replace or test")
        parent: Any = obj
        for part in parts[:-1]:
            try:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise ConvbenchError(f"{where}: path {op['path']} does not exist in {obj.get('kind')} "
                                     f"{obj.get('metadata', {}).get('name')}; fix the patch") from exc
        last = parts[-1]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
                continue
            if index >= len(parent):
                raise ConvbenchError(f"{where}: index {index} out of range at {op['path']}; fix the patch")
        elif not isinstance(parent, dict):
            raise ConvbenchError(f"{where}: {op['path']} does not point into an object; fix the patch")
        else:
            index = last
            if kind != "add" and last not in parent:
                raise ConvbenchError(f"{where}: path {op['path']} does not exist; use op 'add' or fix the path")
        if kind in ("add", "replace"):
            parent[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[index]
        elif parent[index] != op["value"]:
            raise ConvbenchError(f"{where}: test failed at {op['path']}")


def _strategic_merge(base: Any, patch: Any, core: bool, path: str, key: str = "") -> Any:
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise ConvbenchError(f"{path}: strategic-merge directives ($patch, $setElementOrder...) are not supported by the built-in renderer")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _strategic_merge(base.get(k), v, core, path, k)
        return out
    if isinstance(patch, list) and isinstance(base, list) and core:
        merge_key = _MERGE_KEYS.get(key)
        if key == "ports":
            merge_key = "containerPort" if all("containerPort" in p for p in patch) else "port"
        if merge_key and all(isinstance(p, dict) and merge_key in p for p in patch):
            out = copy.deepcopy(base)
            for item in patch:
                for i, existing in enumerate(out):
                    if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]:
                        out[i] = _strategic_merge(existing, item, core, path)
                        break
                else:
                    out.append(copy.deepcopy(item))
            return out
    return copy.deepcopy(patch)


def _apply_image(objects: list[dict], entry: dict, kfile: Path) -> None:
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConvbenchError(f"{kfile}: each images entry needs a 'name'")
    extra = set(entry) - {"name", "newName", "newTag", "digest"}
    if extra:
        raise ConvbenchError(f"{kfile}: images fields {sorted(extra)} are not supported by the built-in renderer")

    def rewrite(ref: str) -> str:
        name, tag, digest = _split_image(ref, source=str(kfile))
        if name != entry["name"]:
            return ref
        name = entry.get("newName", name)
        if "digest" in entry:
            return f"{name}@{entry['digest']}"
        tag = str(entry.get("newTag", tag)) if entry.get("newTag", tag) is not None else None
        return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and "newTag" not in entry else "")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers") and isinstance(v, list):
                    for container in v:
                        if isinstance(container, dict) and isinstance(container.get("image"), str):
                            container["image"] = rewrite(container["image"])
                walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for obj in objects:
        walk(obj)


def objects_by_key(objects: list[dict]) -> dict[tuple[str, str, str, str], dict]:
    """Index rendered objects by (apiVersion, kind, namespace, name) for order-free comparison.

    Args:
        objects: rendered objects.

    Returns:
        A dict from identity tuple to object.
    """
    out = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        out[(obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))] = obj
    return out


# ---------------------------------------------------------------------------------- validation


def schema_dir() -> Path:
    """Folder of the KubeRay 1.7 CRD files ($CONVBENCH_K8S_SCHEMAS or ../shared/k8s-schemas/kuberay-1.7)."""
    env = os.environ.get("CONVBENCH_K8S_SCHEMAS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "k8s-schemas" / "kuberay-1.7"


def _strict_schema(node: Any) -> Any:
    """Copy of a CRD schema that rejects unknown fields and does not require defaulted fields."""
    if isinstance(node, list):
        return [_strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict_schema(v) for k, v in node.items()}
    props = out.get("properties")
    if isinstance(props, dict):
        if "required" in out:
            # The API server fills defaulted fields in before validating.
            out["required"] = [name for name in out["required"] if "default" not in props.get(name, {})]
            if not out["required"]:
                del out["required"]
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str, directory: str | None = None):
    """A jsonschema validator for one KubeRay kind (storage version of its CRD).

    Args:
        kind: "RayCluster" or "RayJob".
        directory: folder of the CRD files; defaults to `schema_dir()`.

    Returns:
        (validator, apiVersion) where apiVersion is e.g. "ray.io/v1".
    """
    import jsonschema

    folder = Path(directory) if directory else schema_dir()
    path = folder / KUBERAY_SCHEMA_FILES[kind]
    if not path.is_file():
        raise ConvbenchError(f"CRD schema {path} not found; set CONVBENCH_K8S_SCHEMAS to the kuberay-1.7 schema folder")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = _strict_schema(version["schema"]["openAPIV3Schema"])
    # ObjectMeta is "type: object" in CRDs; the API server checks it, so check the parts we use.
    schema["properties"]["metadata"] = {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                       "namespace": {"type": "string"},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                       "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
        "additionalProperties": False,
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    return jsonschema.Draft7Validator(schema), f"{crd['spec']['group']}/{version['name']}"


def validate_object(obj: dict, k8s_version: str = DEFAULT_K8S_VERSION) -> list[str]:
    """Validate one rendered object offline.

    Args:
        obj: the object.
        k8s_version: Kubernetes version whose core schemas apply.

    Returns:
        Error lines, empty when the object is valid.
    """
    kind = obj.get("kind", "?")
    name = (obj.get("metadata") or {}).get("name", "?")
    label = f"{kind}/{name}"
    if kind in KUBERAY_SCHEMA_FILES:
        validator, api_version = crd_validator(kind)
        errors = [f"{label}: apiVersion {obj.get('apiVersion')} is not {api_version}"] if obj.get("apiVersion") != api_version else []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            errors.append(f"{label}: {where}: {error.message}")
        return errors
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return [f"{label}: {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{label}: no schema for {obj.get('apiVersion')} {kind} in Kubernetes {k8s_version}"]
    return []


def validate_objects(objects: list[dict], k8s_version: str = DEFAULT_K8S_VERSION) -> list[str]:
    """Validate every object; see `validate_object`.

    Args:
        objects: rendered objects.
        k8s_version: Kubernetes version whose core schemas apply.

    Returns:
        All error lines.
    """
    return [err for obj in objects for err in validate_object(obj, k8s_version)]


# ------------------------------------------------------------------------------------- checks


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """Yield (where, pod spec) for every pod template inside an object.

    Args:
        obj: a rendered object.

    Yields:
        A readable location and the pod spec dict.
    """
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name", "?")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        yield f"Pod/{name}", spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield f"{kind}/{name}", spec.get("template", {}).get("spec", {})
    elif kind == "CronJob":
        yield f"CronJob/{name}", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif kind in ("RayCluster", "RayJob"):
        cluster = spec if kind == "RayCluster" else spec.get("rayClusterSpec") or {}
        yield f"{kind}/{name} head", cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {})
        for group in cluster.get("workerGroupSpecs") or []:
            yield f"{kind}/{name} worker group {group.get('groupName')}", group.get("template", {}).get("spec", {})
        if kind == "RayJob" and spec.get("submitterPodTemplate"):
            yield f"RayJob/{name} submitter", spec["submitterPodTemplate"].get("spec", {})


def _containers(pod: dict) -> list[dict]:
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def check_images(objects: list[dict], image: str | None = None) -> list[str]:
    """Every container runs the one image.

    Args:
        objects: rendered objects.
        image: expected reference; defaults to `default_image()`.

    Returns:
        Error lines.
    """
    image = image or default_image()
    return [f"{where}: container {c.get('name')} runs image {c.get('image')!r}, expected {image!r} (k8s/IMAGE)"
            for obj in objects for where, pod in pod_specs(obj) for c in _containers(pod) if c.get("image") != image]


def check_resources(objects: list[dict]) -> list[str]:
    """Every container has cpu and memory requests and limits, and requests equal limits.

    Args:
        objects: rendered objects.

    Returns:
        Error lines.
    """
    errors = []
    for obj in objects:
        for where, pod in pod_specs(obj):
            for c in _containers(pod):
                res = c.get("resources") or {}
                req, lim = res.get("requests") or {}, res.get("limits") or {}
                for key in ("cpu", "memory"):
                    if key not in req or key not in lim:
                        errors.append(f"{where}: container {c.get('name')} lacks resources.requests/limits.{key}")
                if req and lim and req != lim:
                    errors.append(f"{where}: container {c.get('name')} requests {req} differ from limits {lim} "
                                  "(set them equal for Guaranteed QoS)")
    return errors


def check_security(objects: list[dict]) -> list[str]:
    """Pods run as non-root under their own ServiceAccount without an API token; containers
    drop ALL capabilities, cannot escalate, and have a read-only root filesystem with a writable
    emptyDir at /tmp; nothing grants the pods' ServiceAccounts any RBAC permission.

    Args:
        objects: rendered objects.

    Returns:
        Error lines.
    """
    errors = []
    for obj in objects:
        for where, pod in pod_specs(obj):
            psc = pod.get("securityContext") or {}
            empty_dirs = {v.get("name") for v in pod.get("volumes") or [] if "emptyDir" in v}
            if pod.get("serviceAccountName") in (None, "", "default"):
                errors.append(f"{where}: runs as the namespace's default ServiceAccount; set serviceAccountName")
            if pod.get("automountServiceAccountToken") is not False:
                errors.append(f"{where}: automountServiceAccountToken is not false (the pods need no API token)")
            for c in _containers(pod):
                sc = c.get("securityContext") or {}
                name = f"{where}: container {c.get('name')}"
                if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                    errors.append(f"{name}: runAsNonRoot is not true")
                if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                    errors.append(f"{name}: runs as uid 0")
                if sc.get("allowPrivilegeEscalation") is not False:
                    errors.append(f"{name}: allowPrivilegeEscalation is not false")
                if sc.get("privileged"):
                    errors.append(f"{name}: privileged")
                if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                    errors.append(f"{name}: capabilities.drop lacks ALL")
                if (sc.get("capabilities") or {}).get("add"):
                    errors.append(f"{name}: adds capabilities {sc['capabilities']['add']}")
                if sc.get("readOnlyRootFilesystem") is not True:
                    errors.append(f"{name}: readOnlyRootFilesystem is not true")
                elif not any(m.get("mountPath") == "/tmp" and m.get("name") in empty_dirs for m in c.get("volumeMounts") or []):
                    errors.append(f"{name}: read-only root filesystem without a writable emptyDir at /tmp")
    pod_accounts = {pod.get("serviceAccountName") for obj in objects for _, pod in pod_specs(obj)}
    for obj in objects:
        if obj.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            granted = {s.get("name") for s in obj.get("subjects") or [] if s.get("kind") == "ServiceAccount"}
            for account in sorted(granted & pod_accounts):
                errors.append(f"{obj['kind']}/{obj['metadata']['name']}: grants RBAC to {account}, which needs none")
    return errors


def check_ray_wiring(objects: list[dict]) -> list[str]:
    """The pieces the pipeline's training step relies on fit together.

    Checks: the RayCluster has token auth; its head declares the dashboard, client and GCS
    ports; the head Service selects that head and exposes the same ports; the NetworkPolicy
    covers the Ray pods and lets KFP step pods reach 8265; the RayJob's cluster spec equals the
    RayCluster spec (so overlays patch both); the PVC is mounted at /data in the Ray pods.

    Args:
        objects: rendered objects of one overlay.

    Returns:
        Error lines.
    """
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind"), []).append(obj)
    errors = []
    clusters = [o for o in by_kind.get("RayCluster", []) if o["metadata"]["name"] == RAY_CLUSTER_NAME]
    if not clusters:
        return [f"no RayCluster named {RAY_CLUSTER_NAME}"]
    cluster = clusters[0]
    spec = cluster["spec"]
    if (spec.get("authOptions") or {}).get("mode") != "token":
        errors.append("RayCluster: authOptions.mode is not 'token' (keep Ray token authentication on)")
    if (spec.get("authOptions") or {}).get("secretName") != RAY_TOKEN_SECRET:
        errors.append(f"RayCluster: authOptions.secretName is not {RAY_TOKEN_SECRET} (make deploy creates that Secret)")
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    declared = {p.get("containerPort") for p in head.get("ports") or []}
    for port_name, port in RAY_PORTS.items():
        if port not in declared:
            errors.append(f"RayCluster head: container port {port} ({port_name}) not declared")
    services = [s for s in by_kind.get("Service", []) if s["metadata"]["name"] == RAY_HEAD_SERVICE]
    if not services:
        errors.append(f"no Service named {RAY_HEAD_SERVICE}")
    else:
        svc = services[0]["spec"]
        want = {"ray.io/cluster": RAY_CLUSTER_NAME, "ray.io/node-type": "head"}
        if svc.get("selector") != want:
            errors.append(f"Service {RAY_HEAD_SERVICE}: selector {svc.get('selector')} is not {want}")
        exposed = {p.get("port") for p in svc.get("ports") or []}
        for port in RAY_PORTS.values():
            if port not in exposed:
                errors.append(f"Service {RAY_HEAD_SERVICE}: port {port} not exposed")
    ray_labels = cluster["spec"]["headGroupSpec"]["template"].get("metadata", {}).get("labels", {})
    policies = by_kind.get("NetworkPolicy", [])
    selected = [p for p in policies
                if (p["spec"].get("podSelector", {}).get("matchLabels") or {}).items() <= ray_labels.items()]
    if not selected:
        errors.append("no NetworkPolicy selects the Ray pods")
    else:
        allows_kfp = any(
            any(peer.get("podSelector", {}).get("matchLabels") == {"pipelines.kubeflow.org/v2_component": "true"}
                for peer in rule.get("from") or [])
            and any(p.get("port") == RAY_PORTS["dashboard"] for p in rule.get("ports") or [])
            for policy in selected for rule in policy["spec"].get("ingress") or [])
        if not allows_kfp:
            errors.append("NetworkPolicy: KFP step pods (pipelines.kubeflow.org/v2_component=true) cannot reach port 8265")
    for job in by_kind.get("RayJob", []):
        if job["spec"].get("rayClusterSpec") != spec:
            errors.append(f"RayJob/{job['metadata']['name']}: rayClusterSpec differs from RayCluster {RAY_CLUSTER_NAME} "
                          "(patch both in the overlay)")
    for where, pod in pod_specs(cluster):
        claims = {v["name"] for v in pod.get("volumes") or [] if (v.get("persistentVolumeClaim") or {}).get("claimName") == PVC_NAME}
        for c in pod.get("containers") or []:
            if not any(m.get("mountPath") == DATA_MOUNT and m.get("name") in claims for m in c.get("volumeMounts") or []):
                errors.append(f"{where}: container {c.get('name')} does not mount PVC {PVC_NAME} at {DATA_MOUNT}")
    return errors


def kustomization_image(k8s_dir: Path | None = None) -> str:
    """The image reference the base kustomization's `images:` entry produces.

    Args:
        k8s_dir: the k8s/ folder; defaults to this checkout's.

    Returns:
        "newName:newTag" of the entry named "convbench" in k8s/base/kustomization.yaml.
    """
    path = (Path(k8s_dir) if k8s_dir else K8S_DIR) / "base" / "kustomization.yaml"
    kust = yaml.safe_load(path.read_text())
    for entry in kust.get("images") or []:
        if entry.get("name") == "convbench":
            return f"{entry.get('newName', 'convbench')}:{entry.get('newTag')}"
    raise ConvbenchError(f"{path} has no images entry named convbench; restore it")


def check_all(objects: list[dict], image: str | None = None, k8s_version: str = DEFAULT_K8S_VERSION) -> list[str]:
    """Schema validation plus every check above, for one rendered overlay.

    Args:
        objects: rendered objects.
        image: expected image reference; defaults to `default_image()`.
        k8s_version: Kubernetes version whose core schemas apply.

    Returns:
        All error lines; empty means the overlay is deployable as far as offline checks can tell.
    """
    return (validate_objects(objects, k8s_version) + check_images(objects, image) + check_resources(objects)
            + check_security(objects) + check_ray_wiring(objects))


def set_image(reference: str, k8s_dir: Path | None = None) -> None:
    """Change the one image tag: k8s/IMAGE and the base kustomization's images entry together.

    Args:
        reference: new "name:tag", e.g. "convbench:0.2.0" or "registry.example/convbench:0.2.0".
        k8s_dir: the k8s/ folder; defaults to this checkout's.
    """
    name, tag, digest = _split_image(reference, source="set-image")
    if not tag or digest:
        raise ConvbenchError(f"set-image: '{reference}' needs a tag and no digest, e.g. convbench:0.2.0")
    k8s_dir = Path(k8s_dir) if k8s_dir else K8S_DIR
    kfile = k8s_dir / "base" / "kustomization.yaml"
    text = kfile.read_text()
    new = re.sub(r"(?m)^(\s+newName:\s*).*$", rf"\g<1>{name}", text, count=1)
    new = re.sub(r"(?m)^(\s+newTag:\s*).*$", rf'\g<1>"{tag}"', new, count=1)
    if new == text and kustomization_image(k8s_dir) != reference:
        raise ConvbenchError(f"{kfile}: no newName/newTag lines to update; restore the images entry")
    kfile.write_text(new)
    (k8s_dir / "IMAGE").write_text(reference + "\n")


def add_commands(subparsers) -> None:
    """Register `convbench k8s render|validate|rayjob|set-image|image` (called by convbench.cli.commands)."""
    k8s = subparsers.add_parser("k8s", help="the Kubernetes manifests: render, validate offline, print the RayJob, set the image")
    sub = k8s.add_subparsers(dest="k8s_command", required=True)
    p = sub.add_parser("render", help="print the rendered overlay")
    p.add_argument("path")
    p.add_argument("--engine", default="auto", choices=["auto", "builtin", "kustomize"])
    p = sub.add_parser("validate", help="validate and check overlays (default: all)")
    p.add_argument("paths", nargs="*")
    p.add_argument("--engine", default="auto", choices=["auto", "builtin", "kustomize"])
    p = sub.add_parser("rayjob", help="print the overlay's RayJob, unsuspended, for kubectl create -f -")
    p.add_argument("path")
    p = sub.add_parser("set-image", help="change k8s/IMAGE and the kustomize images entry together")
    p.add_argument("reference")
    sub.add_parser("image", help="print the image reference (k8s/IMAGE)")
    k8s.set_defaults(func=cmd_k8s)


def cmd_k8s(args) -> int:
    """`convbench k8s ...` (see the module docstring); 1 when validation finds problems."""
    if args.k8s_command == "render":
        print(yaml.safe_dump_all(render(args.path, args.engine).objects, sort_keys=False), end="")
    elif args.k8s_command == "validate":
        paths = args.paths or [str(K8S_DIR / "overlays" / o) for o in OVERLAYS]
        failed = False
        for path in paths:
            rendered = render(path, args.engine)
            errors = check_all(rendered.objects)
            if kustomization_image() != default_image():
                errors.append(f"k8s/IMAGE says {default_image()} but the kustomize images entry gives {kustomization_image()}")
            print(f"{path}: {len(rendered.objects)} objects rendered by {rendered.engine}: "
                  + ("OK" if not errors else f"{len(errors)} problems"))
            for err in errors:
                print(f"  {err}")
            failed |= bool(errors)
        return 1 if failed else 0
    elif args.k8s_command == "rayjob":
        jobs = [o for o in render(args.path).objects if o.get("kind") == "RayJob"]
        if not jobs:
            raise ConvbenchError(f"{args.path} renders no RayJob")
        for job in jobs:
            job["spec"]["suspend"] = False
        print(yaml.safe_dump_all(jobs, sort_keys=False), end="")
    elif args.k8s_command == "set-image":
        set_image(args.reference)
        print(f"image set to {args.reference} in {IMAGE_FILE} and {K8S_DIR / 'base' / 'kustomization.yaml'}")
    elif args.k8s_command == "image":
        print(default_image())
    return 0
