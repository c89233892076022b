# recur-attn: `make train` and `make test` set up .venv and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch 2.14.1 + torchvision 0.29.1 install from the machine's local wheel cache.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: setup train test test-slow test-all test-gpu gpu-check bench clean help

help:
	@echo "make train      set up .venv and run the default experiment"
	@echo "make test       set up .venv and run the default test suite (< 5 min)"
	@echo "make test-slow  the slow tests"
	@echo "make test-gpu   the CUDA tests (skipped without a GPU)"
	@echo "make gpu-check  on a GPU machine: the CUDA tests and the benchmark against cuDNN (scripts/gpu_check.sh)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_PINS)
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/recur-attn-train experiment=adding_lstm $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu $(ARGS)

gpu-check: $(STAMP)
	PYTHON=$(PY) scripts/gpu_check.sh $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache logs
