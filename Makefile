# swcli: build, test and demo entry points. Everything runs from the project's own files on a fresh machine.
#
#   make demo    the CIFAR-10 tutorial end to end through images: data -> train -> runtime, dataset and model
#                images -> `docker run` eval -> metrics
#   make test    the whole test suite, Docker tests included, then the built wheel's entrypoint (what .ci/run calls)
#
# Steps: make docker base-image build-runtime build-dataset build-model eval   (eval-local: no Docker)
#
# Variables (override on the command line, e.g. `make demo EPOCHS=2`):
PYTHON            ?= python3
VENV              ?= .venv
EXAMPLE           ?= examples/cifar10
EPOCHS            ?= 4
SHARED            ?= $(abspath $(CURDIR)/../shared)
CIFAR10_TAR       ?= $(SHARED)/data/cifar-10-images.tar.gz
CIFAR10_CONVERTER ?= $(SHARED)/tools/cifar10_batches.py
EVAL_OUT          ?= $(CURDIR)/out/eval
PYTEST_ARGS       ?=

PY    := $(VENV)/bin/python
SWCLI := $(VENV)/bin/swcli

.PHONY: help venv lock wheel-test docker base-image test screenshots demo data train build-runtime build-dataset build-model eval eval-local bench clean

help:
	@sed -n '2,15p' Makefile

venv: $(VENV)/.installed

# every dependency at the version requirements.lock pins (pip-tools; `make lock` refreshes it), then swcli itself;
# `pip check` fails when the lock misses a dependency of ours
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m pip check
	touch $@

# re-resolve requirements.lock from pyproject.toml (torch pinned to the CPU build in scripts/lock-constraints.txt)
lock:
	$(PYTHON) -m venv .lock-tools && .lock-tools/bin/pip install --quiet pip-tools
	.lock-tools/bin/pip-compile --quiet --strip-extras --extra dev --extra torch -c scripts/lock-constraints.txt \
		--no-emit-find-links --no-emit-index-url -o requirements.lock pyproject.toml
	rm -rf .lock-tools

# the built wheel in a clean venv (deps from the lock): the entrypoint tests run against its `swcli`
wheel-test: venv
	bash scripts/wheel-test.sh

# a Docker engine (started, or installed from Debian packages when root) and the base image built from Debian
# packages; on CI a failure here fails the run, elsewhere the Docker tests skip themselves
docker:
	bash scripts/ensure-docker.sh

base-image: docker venv
	SWCLI_PYTHON=$(abspath $(PY)) bash runtime_images/build-base.sh

test: venv
	bash scripts/ensure-test-tools.sh
	@if [ "$${CI:-}" = true ]; then $(MAKE) base-image; else $(MAKE) base-image || echo "no Docker: docker tests will skip"; fi
	bash scripts/run-tests.sh $(PYTEST_ARGS)
	$(MAKE) wheel-test

# the README's console screenshots, taken by the browser test (tests/console/test_console_browser.py)
screenshots: venv
	bash scripts/ensure-test-tools.sh
	SWCLI_SCREENSHOTS=$(CURDIR)/docs/images $(PY) -m pytest -q -p no:cacheprovider tests/console/test_console_browser.py

data: venv
	CIFAR10_TAR='$(CIFAR10_TAR)' CIFAR10_CONVERTER='$(CIFAR10_CONVERTER)' $(PY) $(EXAMPLE)/scripts/get_data.py

train: data
	cd $(EXAMPLE) && $(abspath $(PY)) -m code.train --epochs $(EPOCHS)

$(EXAMPLE)/models/cifar_net.pth:
	$(MAKE) train

build-runtime: venv base-image
	$(SWCLI) runtime build --name cifar-env --venv $(VENV)

build-dataset: data base-image
	$(SWCLI) dataset build $(EXAMPLE)

# the design card's `docker run swmp eval`: the newest model image is also tagged swmp:latest. The runtime is
# always (re)built first: unchanged it takes ~1 s, and it carries swcli's runner, so an upgraded swcli reaches
# the model image (skipping it when one existed ran yesterday's runner in the container)
build-model: build-runtime $(EXAMPLE)/models/cifar_net.pth
	$(SWCLI) model build $(EXAMPLE) --runtime cifar-env
	docker tag swmp/cifar_net:latest swmp:latest

# the model image's eval in a container, the dataset image's /dataset mounted (swcli job run does the docker run)
eval: venv
	$(SWCLI) job run --model cifar_net --dataset cifar10 --output $(EVAL_OUT)

eval-local: venv
	$(SWCLI) model eval cifar_net --dataset cifar10 --output $(EVAL_OUT)

demo: train build-dataset build-model eval
	@echo "metrics: $(EVAL_OUT)/metrics.json"

bench: data
	$(PY) benchmarks/dataset_build.py
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/image_build.py
	$(PY) benchmarks/distribution.py

clean:
	rm -rf out .pytest_cache
