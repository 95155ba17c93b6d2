# Two commands set up a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= demo_out

# CPU machines pin torch to the CPU build so no install ever pulls a multi-GB CUDA torch.
# On a GPU machine install your CUDA torch into .venv first; the pin is then skipped.
HAVE_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
TORCH_CONSTRAINT ?= $(if $(HAVE_GPU),,$(CURDIR)/constraints/cpu.txt)
PIP_ENV := $(if $(TORCH_CONSTRAINT),PIP_CONSTRAINT=$(TORCH_CONSTRAINT),)

# Stamps are keyed on the files that decide what gets installed, so a repeat `make` installs nothing.
# The runtime (`make demo`) and the development extras (`make test`, `make bench`) have one each, so
# the demo never installs ruff, mypy or pytest.
KEY           := $(shell cat pyproject.toml constraints/cpu.txt | sha1sum | cut -c1-12)
RUNTIME_STAMP := $(VENV)/.installed-runtime-$(KEY)
DEV_STAMP     := $(VENV)/.installed-dev-$(KEY)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONDONTWRITEBYTECODE := 1
export MPLBACKEND := Agg

.PHONY: install install-dev demo test lint typecheck pytest bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml constraints/cpu.txt | $(PY)
	rm -f $(VENV)/.installed-runtime-*
	$(PIP_ENV) $(PY) -m pip install -q -e .
	$(PY) -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	rm -f $(VENV)/.installed-dev-*
	$(PIP_ENV) $(PY) -m pip install -q -e '.[test,bench]'
	touch $@

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

demo: install
	$(PY) jobs/demo.py --out $(OUT)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy pipeline captioner trainer analysis synthetic jobs bench

pytest: install-dev
	$(PY) -m pytest -q --timeout 1200 --durations 15

test: lint typecheck pytest

bench: install-dev
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache *.egg-info
