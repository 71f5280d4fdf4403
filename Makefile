# Set-up and everyday commands. Everything runs inside a local virtual environment (.venv).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# CPU build by default: a bare `torch` requirement would pull several GB of CUDA wheels.
# A GPU user can install their own torch in the venv first (or set TORCH_SPEC).
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv install test test-fast test-kernels demo bench docs docs-serve clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	# torch-fidelity's Inception (scoresde[metrics]) needs only torch; its declared torchvision requirement would pull
	# a CUDA torch onto CPU machines, so the tests install it without dependencies (see docs/evaluation.md)
	$(PIP) install -q --no-deps "torch-fidelity==0.4.0"
	touch $@

venv install: $(VENV)/.installed

# The whole suite (CI runs it); pytest's "no tests collected" (exit 5) fails it.
test: $(VENV)/.installed
	$(PY) -m pytest -q

# The fast tier: no tests marked slow (statistical checks with many draws, notebooks, torchrun, the docs build).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# The rounding-sensitive tests again under other CPU kernels than this machine picks: torch's portable (non-SIMD)
# kernels and MKL's compatible code path change the order and number of float32 roundings (sums, exp, log, matmul),
# as another CPU would. A bound that holds for one kernel only fails here, not on a user's machine.
KERNEL_TESTS = tests/test_likelihood.py tests/test_sampling_*.py tests/test_conversions.py tests/test_oracle.py \
	tests/test_sde.py tests/test_losses.py tests/test_parameterization.py tests/test_score.py tests/test_config.py \
	tests/test_nets.py tests/test_interop.py tests/test_training_hooks.py tests/test_guidance_condition.py \
	tests/test_oracle_conditional.py tests/test_nets_cond.py
test-kernels: $(VENV)/.installed
	ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE $(PY) -m pytest -q -p no:cacheprovider $(KERNEL_TESTS)

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
