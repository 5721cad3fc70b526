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

.PHONY: setup run test clean gpu-check

$(BIN)/convbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/convbench

# The main job: train and compare the default models into runs/<timestamp>-<config hash>/
# (runs/latest links to it) and write its REPORT.md. The same ARGS again continue that folder;
# other ARGS start a new one. Example: make run ARGS="--data ../shared/datasets/cifar10-jpeg --epochs 8"
run: setup
	$(BIN)/convbench run $(ARGS)

test: setup
	TMPDIR=$${TMPDIR:-/tmp} $(BIN)/pytest -q $(ARGS)

# On a machine with NVIDIA GPUs: TensorFlow's CUDA build, then devices, precision, replicas, bench
# throughput and the quick preset (under 8 minutes). Example: make gpu-check ARGS="--data /data/cifar10-jpeg"
gpu-check: setup
	$(BIN)/pip install -q -e ".[gpu]"
	$(BIN)/convbench gpu-check $(ARGS)

clean:
	rm -rf runs .cache

-include k8s/k8s.mk
