# swcli: build, test and demo entry points. Everything runs from the project's own files on a fresh machine.
#
#   make demo    the CIFAR-10 tutorial end to end: data -> train -> dataset -> model -> eval -> metrics
#   make test    the whole test suite (what .ci/run calls)
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
# the torch wheel this machine's pip config serves from local disk (CPU build)
TORCH ?= torch==2.13.0

.PHONY: help venv test demo data train build-dataset build-model eval bench clean

help:
	@sed -n '2,12p' Makefile

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' '$(TORCH)' pillow
	touch $@

test: venv
	bash scripts/run-tests.sh $(PYTEST_ARGS)

data: venv
	CIFAR10_TAR='$(CIFAR10_TAR)' CIFAR10_CONVERTER='$(CIFAR10_CONVERTER)' $(PY) $(EXAMPLE)/scripts/get_data.py

train: data
	cd $(EXAMPLE) && $(abspath $(PY)) -m code.train --epochs $(EPOCHS)

$(EXAMPLE)/models/cifar_net.pth:
	$(MAKE) train

build-dataset: data
	$(SWCLI) dataset build $(EXAMPLE)

build-model: venv $(EXAMPLE)/models/cifar_net.pth
	$(SWCLI) model build $(EXAMPLE)

eval: venv
	$(SWCLI) model eval cifar_net --dataset cifar10 --output $(EVAL_OUT)

demo: train build-dataset build-model eval
	@echo "metrics: $(EVAL_OUT)/metrics.json"

bench: data
	$(PY) benchmarks/dataset_build.py
	$(PY) benchmarks/eval_throughput.py

clean:
	rm -rf out .pytest_cache
