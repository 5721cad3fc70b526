# convbench: the two commands a newcomer needs are `make run` and `make test` (see README.md).
# Everything else is optional. Caches stay inside the checkout unless you point them elsewhere.
PYTHON ?= python3
VENV ?= .venv
CACHE ?= $(CURDIR)/.cache
ARGS ?=
BIN := $(VENV)/bin
export KERAS_HOME ?= $(CACHE)/keras
export MPLCONFIGDIR ?= $(CACHE)/matplotlib
export CONVBENCH_CACHE ?= $(CACHE)/convbench
export RAY_TRAIN_ENABLE_PRINT_PATCH ?= 0
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup run test clean gpu-check transfer-table ray-up ray-down

$(BIN)/convbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,dashboard]"
	touch $@

setup: $(BIN)/convbench

# The main job: train and compare the default models into runs/<timestamp>-<config hash>/
# (runs/latest links to it) and write its REPORT.md. The same ARGS again continue that folder;
# other ARGS start a new one. Example: make run ARGS="--data ../shared/datasets/cifar10-jpeg --epochs 8"
run: setup
	$(BIN)/convbench run $(ARGS)

# lint-imports first: the layers of README "How the code is laid out" (contracts in pyproject.toml).
# TEST_WORKERS=2 runs the tests on two pytest-xdist processes, a file to each (not timed in this form; a
# test-by-test split took 18 min 48 s here against about 24), but not yet reliably: two tests that
# start Ray can meet each other's cluster. 0 = one process.
TEST_WORKERS ?= 0
test: setup
	$(BIN)/lint-imports
	TMPDIR=$${TMPDIR:-/tmp} $(BIN)/pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(ARGS)

# On a machine with NVIDIA GPUs: TensorFlow's CUDA build, then devices, precision, replicas, bench
# throughput and the quick preset (under 8 minutes). Example: make gpu-check ARGS="--data /data/cifar10-jpeg"
gpu-check: setup
	$(BIN)/pip install -q -e ".[gpu]"
	$(BIN)/convbench gpu-check $(ARGS)

# README "Transfer learning": efficientnet_lite0 on 2,000 training images at each resolution of
# TABLE_RESOLUTIONS, head only and with the top 1 or 2 blocks fine-tuned for 3 epochs (about
# 8 minutes on 2 cores).
# Each row's REPORT.md in runs/transfer-table/ gives its training time and images per second.
# Example: make transfer-table ARGS="--data ../shared/datasets/cifar10-jpeg"
TABLE := runs/transfer-table
TABLE_RESOLUTIONS ?= 96 128 160 192
transfer-table: setup
	mkdir -p $(TABLE)
	for r in $(TABLE_RESOLUTIONS); do for b in 0 1 2; do \
	  if [ $$b = 0 ]; then t="{resolution: $$r, finetune_epochs: 0}"; e=""; else t="{resolution: $$r, finetune_blocks: $$b}"; e="--epochs 3"; fi; \
	  printf 'transfer: %s\nmeasure_latency: false\nanalysis: {robustness_images: 0, tta_flip: false, saliency_images: 0, mistakes: 0}\n' "$$t" > $(TABLE)/r$${r}_b$$b.yaml; \
	  $(BIN)/convbench run --preset quick --models efficientnet_lite0 --max-train-images 2000 --max-test-images 1000 $$e \
	    --config $(TABLE)/r$${r}_b$$b.yaml --out $(TABLE)/r$${r}_b$$b $(ARGS) || exit 1; \
	done; done
	$(BIN)/convbench runs --root $(TABLE)

# Watch training in the Ray dashboard (README "Watch it in the Ray dashboard"): a single-user Ray head on
# this machine, reachable only from it, with the dashboard on http://127.0.0.1:$(RAY_DASHBOARD_PORT) and
# per-epoch metrics on http://127.0.0.1:$(RAY_METRICS_PORT)/metrics. Then train there:
#   make run ARGS="--data ../shared/datasets/cifar10-jpeg --ray-address auto --workers 2"
# `make ray-down` stops it (`ray stop`: every Ray this user started on this machine).
RAY_DASHBOARD_PORT ?= 8265
RAY_METRICS_PORT ?= 8266
ray-up: setup
	RAY_AUTH_MODE=disabled $(BIN)/ray start --head --node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 \
	  --dashboard-port $(RAY_DASHBOARD_PORT) --metrics-export-port $(RAY_METRICS_PORT) --disable-usage-stats
	@echo "Ray dashboard: http://127.0.0.1:$(RAY_DASHBOARD_PORT)   train there with --ray-address auto   stop: make ray-down"

ray-down:
	$(BIN)/ray stop

clean:
	rm -rf runs .cache

-include k8s/k8s.mk
