# Set-up and everyday commands. Everything runs inside a local virtual environment (.venv).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# CPU build by default: a bare `torch` requirement would pull several GB of CUDA wheels.
# A GPU user can install their own torch in the venv first (or set TORCH_SPEC).
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv install test demo bench docs docs-serve clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	touch $@

venv install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(VENV)/bin/scoresde demo

bench: $(VENV)/.installed
	$(PY) benchmarks/sampler_accuracy.py
	$(PY) benchmarks/sampler_overhead.py
	$(PY) benchmarks/likelihood_speed.py

docs: $(VENV)/.installed
	$(PY) -m mkdocs build --strict

docs-serve: $(VENV)/.installed
	$(PY) -m mkdocs serve

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
