# Container image and Kubernetes targets; included by the top-level Makefile. See docs/deploy.md.
#
#   make image                 build the image (VARIANT=gpu for CUDA); tag = content of k8s/IMAGE
#                              (the dependency stage is kept as IMAGE-deps-VARIANT so pruning
#                              dangling images never throws away the 3 GB layer cache)
#   make kind-up               kind cluster (k8s/kind-config.yaml) + KubeRay + Kubeflow Pipelines
#   make kind-load             copy the image into the kind node
#   make deploy                Ray token secret + kubectl apply -k k8s/overlays/$(OVERLAY)
#   make data DATA=DIR         copy a cifar10-jpeg folder onto the shared PVC (/data/cifar10-jpeg)
#   make submit                compile the pipeline and submit it to Kubeflow Pipelines
#   make dashboards            port-forward the Ray dashboard (8265) and the KFP UI (8080)
#   make rayjob                run the one-off RayJob (training without the pipeline)
#   make k8s-validate          render and validate every overlay offline (no cluster needed)
#   make constraints           regenerate constraints.txt from the dev venv
#   make kind-down             delete the kind cluster

IMAGE := $(shell cat k8s/IMAGE)
VARIANT ?= cpu
DOCKER ?= docker
# Empty: the Dockerfile's default (python:3.11-slim-bookworm).
BASE_IMAGE ?=
# A CA bundle pip must trust inside the build (corporate proxy); copied to build/ for the build only.
BUILD_CA ?=
DOCKER_BUILD_ARGS ?=
# Not DOCKER_CONTEXT: the docker CLI reads that name from the environment as a context name.
IMAGE_CONTEXT ?= .
KIND ?= kind
KIND_CLUSTER ?= convbench
KUBECTL ?= kubectl
HELM ?= helm
OVERLAY ?= kind
NAMESPACE ?= kubeflow
# Pinned releases: KubeRay 1.7 matches the CRD schemas the tests validate against; the KFP
# backend matches the kfp 2.17 SDK in constraints.txt.
KUBERAY_VERSION ?= 1.7.0
KFP_VERSION ?= 2.17.0
KFP_HOST ?= http://127.0.0.1:8080
RAY_ADDRESS ?= http://convbench-ray-head.$(NAMESPACE).svc.cluster.local:8265
# Run options for `make submit` (a short run that fits kind); override for a real comparison.
SUBMIT_ARGS ?= --preset quick --max-train-images 5000 --max-test-images 1000 --epochs 2
DATA ?=

.PHONY: image constraints k8s-validate kind-up install-kuberay install-kfp kind-load deploy data \
	submit dashboards rayjob kind-down

image:
	@set -e; \
	if [ -n "$(BUILD_CA)" ]; then \
	  mkdir -p "$(IMAGE_CONTEXT)/build"; cp "$(BUILD_CA)" "$(IMAGE_CONTEXT)/build/docker-ca.crt"; \
	  trap 'rm -f "$(IMAGE_CONTEXT)/build/docker-ca.crt"' EXIT; \
	fi; \
	start=$$(date +%s); \
	for target in deps runtime; do \
	  if [ $$target = deps ]; then tag="$(IMAGE)-deps-$(VARIANT)"; stage="--target deps"; else tag="$(IMAGE)"; stage=""; fi; \
	  $(DOCKER) build $(DOCKER_BUILD_ARGS) --build-arg VARIANT=$(VARIANT) --build-arg IMAGE_REF=$(IMAGE) \
	    $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	    $$stage -t $$tag -f "$(IMAGE_CONTEXT)/Dockerfile" "$(IMAGE_CONTEXT)"; \
	done; \
	echo "built $(IMAGE) ($(VARIANT)) in $$(( $$(date +%s) - start )) s, $$($(DOCKER) image inspect -f '{{.Size}}' $(IMAGE)) bytes"

constraints:
	$(BIN)/python tools/pin_constraints.py

k8s-validate:
	$(BIN)/convbench k8s validate

kind-up:
	$(KIND) create cluster --config k8s/kind-config.yaml --name $(KIND_CLUSTER)
	$(MAKE) install-kuberay install-kfp

install-kuberay:
	$(HELM) repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
	$(HELM) upgrade --install kuberay-operator kuberay/kuberay-operator --version $(KUBERAY_VERSION) \
	  --namespace ray-system --create-namespace --wait

install-kfp:
	$(KUBECTL) apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$(KFP_VERSION)"
	$(KUBECTL) wait --for condition=established --timeout=120s crd/applications.app.k8s.io
	$(KUBECTL) apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$(KFP_VERSION)"
	$(KUBECTL) -n kubeflow wait --for=condition=Available deployment --all --timeout=1200s

kind-load:
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

# The Ray token is generated here, on the user's machine, and lives only in the cluster.
deploy:
	$(KUBECTL) get namespace $(NAMESPACE) >/dev/null 2>&1 || $(KUBECTL) create namespace $(NAMESPACE)
	$(KUBECTL) -n $(NAMESPACE) get secret convbench-ray-token >/dev/null 2>&1 || \
	  $(KUBECTL) -n $(NAMESPACE) create secret generic convbench-ray-token \
	    --from-literal=auth_token="$$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)
	$(KUBECTL) -n $(NAMESPACE) wait --for=jsonpath='{.status.state}'=ready raycluster/convbench --timeout=900s

data:
	@test -n "$(DATA)" || { echo "usage: make data DATA=/path/to/cifar10-jpeg (holding train/ and test/)"; exit 2; }
	@set -e; pod=$$($(KUBECTL) -n $(NAMESPACE) get pod -l ray.io/cluster=convbench,ray.io/node-type=head -o name | head -n 1); \
	test -n "$$pod" || { echo "no Ray head pod; run make deploy first"; exit 2; }; \
	$(KUBECTL) -n $(NAMESPACE) cp "$(DATA)" "$${pod#pod/}:/data/cifar10-jpeg" -c ray-head; \
	echo "copied $(DATA) to PVC convbench-data at /data/cifar10-jpeg"

submit:
	@set -e; \
	$(KUBECTL) -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 >/dev/null 2>&1 & pf=$$!; \
	trap 'kill $$pf' EXIT; sleep 3; \
	$(BIN)/convbench pipeline submit --host $(KFP_HOST) --data /data/cifar10-jpeg \
	  --ray-address $(RAY_ADDRESS) --shared-pvc convbench-data --ray-token-secret convbench-ray-token \
	  $(SUBMIT_ARGS)

dashboards:
	@echo "Ray dashboard: http://127.0.0.1:8265   Kubeflow Pipelines UI: http://127.0.0.1:8080   (Ctrl-C stops)"
	@$(KUBECTL) -n $(NAMESPACE) port-forward svc/convbench-ray-head 8265:8265 & pf=$$!; \
	trap 'kill $$pf' EXIT INT TERM; $(KUBECTL) -n kubeflow port-forward svc/ml-pipeline-ui 8080:80

# A RayJob runs once: delete the finished one, re-apply the suspended template, then resume it.
rayjob:
	$(KUBECTL) -n $(NAMESPACE) delete rayjob convbench-train --ignore-not-found
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)
	$(KUBECTL) -n $(NAMESPACE) patch rayjob convbench-train --type merge -p '{"spec":{"suspend":false}}'
	@echo "follow it: kubectl -n $(NAMESPACE) get rayjob convbench-train -w"

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)
