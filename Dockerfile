# convbench image: one image for every pipeline step and for the Ray head and workers.
#
#   make image                    CPU variant, tagged with the content of k8s/IMAGE
#   make image VARIANT=gpu        TensorFlow with CUDA (pip wheels; nodes need the NVIDIA driver)
#   docker run --rm -v $PWD/data:/data:ro -v $PWD/out:/out convbench:0.1.0 \
#       convbench run --data /data --out /out --preset quick
#
# Versions are locked by constraints.txt (make constraints). The image runs as uid 1000, holds
# no secrets and works with a read-only root filesystem as long as /tmp and /home/convbench are
# writable (the Kubernetes manifests mount emptyDirs there).
# Offline build hosts: BASE_IMAGE may be any Debian-based image with python3 + python3-venv
# (docs/deploy.md shows how to make one with debootstrap); a custom CA for pip can be passed as
# build/docker-ca.crt (make image BUILD_CA=/path/ca.crt); it stays in the deps stage.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- reqs: the dependency list of pyproject.toml, alone, so that editing anything else in
# pyproject.toml (version, package list) does not invalidate the dependency layer below.
FROM ${BASE_IMAGE} AS reqs
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; open('/requirements.txt', 'w').write(''.join(d + chr(10) for d in deps))"

# ---- deps: a venv in /opt/venv with every dependency, installed under the lock ------------
# Only a change of the dependency list or of constraints.txt rebuilds this 3 GB layer.
FROM ${BASE_IMAGE} AS deps
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY --from=reqs /requirements.txt /src/requirements.txt
COPY constraints.txt build/docker-ca.cr[t] /src/
RUN set -eu; \
    if [ -f /src/docker-ca.crt ]; then export PIP_CERT=/src/docker-ca.crt; fi; \
    case "$VARIANT" in \
      cpu) tf="" ;; \
      gpu) tf="tensorflow[and-cuda]" ;; \
      *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -c constraints.txt -r requirements.txt "ray[default]" $tf; \
    rm -rf /src

# ---- wheel: the project itself as a wheel (offline: setuptools comes from the locked venv) --
FROM deps AS wheel
WORKDIR /src
COPY pyproject.toml README.m[d] /src/
COPY src/ /src/src/
COPY components/ /src/components/
COPY pipelines/ /src/pipelines/
RUN touch README.md && /opt/venv/bin/pip wheel --no-deps --no-build-isolation -w /wheels /src

# ---- runtime: the venv, the project, a non-root user; nothing else from the build ----------
FROM ${BASE_IMAGE}
ARG VARIANT=cpu
# wget and bash: KubeRay's default readiness/liveness probes are shell commands that use wget.
# tar: kubectl cp (used by `make data`) needs it in the container.
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends wget bash tar; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    groupadd --gid 1000 convbench; \
    useradd --uid 1000 --gid 1000 --home-dir /home/convbench --create-home --shell /bin/bash convbench
COPY --from=deps /opt/venv /opt/venv
# A small layer of its own, so a source change ships kilobytes, not the 3 GB venv.
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && /opt/venv/bin/python -c "import convbench.cli.commands, convbench.orchestrate.k8s_render"
# The image's own reference (k8s/IMAGE, passed by make image) for convbench.orchestrate.k8s_render.default_image().
ARG IMAGE_REF=""
ENV PATH=/opt/venv/bin:$PATH \
    CONVBENCH_IMAGE=${IMAGE_REF} \
    HOME=/home/convbench \
    CONVBENCH_CACHE=/tmp/convbench \
    KERAS_HOME=/tmp/convbench/keras \
    MPLCONFIGDIR=/tmp/convbench/matplotlib \
    RAY_TRAIN_ENABLE_PRINT_PATCH=0 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    CONVBENCH_IMAGE_VARIANT=${VARIANT}
LABEL org.opencontainers.image.title="convbench" \
      org.opencontainers.image.description="Build, train and compare CNNs on CIFAR; pipeline steps and Ray nodes" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric user so Kubernetes can verify runAsNonRoot.
USER 1000:1000
WORKDIR /home/convbench
CMD ["convbench", "--help"]
