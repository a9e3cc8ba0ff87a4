# workerfleet: `make demo` runs the main job, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: footprint help install debian-packages binaries images cluster-up cluster-down cluster-status lint unit chart e2e test demo bench clean crds

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[operator,dev]'
	touch $@

install: $(INSTALLED) ## create .venv with workerfleet and its dev tools

binaries: $(INSTALLED) ## build (or reuse) the pinned control-plane binaries
	$(BIN)/python -m devenv.toolchain

images: $(INSTALLED) debian-packages ## the operator, demo worker and pause images from Debian packages, as one OCI archive in build/images
	$(BIN)/python -m devenv.images

cluster-up: $(INSTALLED) ## start the local control plane (idempotent); REAL_NODE=1 adds the real node (containerd, runc, kubelet)
	$(BIN)/python -m devenv.cluster up $(if $(REAL_NODE),--real-node)

cluster-down: $(INSTALLED) ## stop the local control plane and remove its state
	$(BIN)/python -m devenv.cluster down

cluster-status: $(INSTALLED) ## show each component's pid, health and log
	$(BIN)/python -m devenv.cluster status

crds: $(INSTALLED) ## regenerate crds/ and the chart's copy from the API models (commit the result)
	$(BIN)/python -m workerfleet.api.crdgen --output-dir crds
	$(BIN)/python -m workerfleet.api.crdgen --output-dir charts/workerfleet/crds

lint: $(INSTALLED) ## ruff, mypy (strict), import-linter contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(INSTALLED) ## tests that need no cluster (the chart's are under `make chart`)
	$(BIN)/pytest tests --ignore=tests/chart

chart: $(INSTALLED) binaries ## helm lint and template, offline schema validation, policy scan of the chart
	$(BIN)/pytest tests/chart

debian-packages: ## install the queue and metrics servers the tests and the demo run (apt-get, as root)
	scripts/debian-packages

e2e: $(INSTALLED) binaries debian-packages ## tests against the local control plane (brought up when not running)
	$(BIN)/pytest e2e --durations=30

test: lint unit chart e2e ## lint + unit + chart + e2e

DEMO_LINGER ?= 300
demo: debian-packages cluster-up ## workerfleet on the local cluster: a burst of jobs, scaling up and back to zero; REAL_NODE=1: as containers on the real node
	$(BIN)/python -m devenv.demo --linger $(DEMO_LINGER) $(if $(REAL_NODE),--real-node)

# The peer job queues of `bench.peers`, each set in a virtualenv of its own (pyproject's `bench` extras).
BENCH_VENVS := .venv-bench/.installed .venv-bench-arq/.installed
$(BENCH_VENVS): .venv-%/.installed: pyproject.toml
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	.venv-$*/bin/pip install --quiet --upgrade pip
	.venv-$*/bin/pip install --quiet -e '.[$*]'
	touch $@

BENCH_SCALE_SIZES ?= 100,300,1000
bench: $(INSTALLED) $(BENCH_VENVS) binaries debian-packages ## worker jobs/s next to bare loops, Celery, RQ, Dramatiq, arq, saq; autoscaling reaction; rollback latency; operator at scale; loss checker
	$(BIN)/python -m bench.peers
	$(BIN)/python -m bench.worker_throughput
	$(BIN)/python -m bench.autoscaling_reaction
	$(BIN)/python -m bench.rollback_latency
	$(BIN)/python -m bench.scale --sizes $(BENCH_SCALE_SIZES)
	$(BIN)/python -m bench.loss
	$(BIN)/python -m bench.footprint
	$(BIN)/python -m bench.plots

footprint: $(INSTALLED) ## installed size of the worker and the operator dependency sets, the worker's start time
	$(BIN)/python -m bench.footprint

clean: cluster-down
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
