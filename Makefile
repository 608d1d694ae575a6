# The two commands a newcomer runs (see README):
#   make reproduce   regenerate every notebook's results at the tiny preset into results/tiny/
#   make test        run the test suite
# Both create .venv with the pinned stack first if it is missing.
# On a Linux machine with an NVIDIA GPU: `make env GPU=1` adds the hybrid kernels (see README, "On a CUDA GPU").
PRESET ?= tiny
SECTIONS ?=
VENV ?= .venv
# pytest-xdist workers for `make test` (a test file stays on one worker: its module fixtures are built once)
TEST_WORKERS ?= 2
GPU ?=
# notebooks run side by side after the first (which trains the base the others load): 2 at tiny, where most keep
# one core busy; 1 at the GPU presets
JOBS ?= $(if $(filter tiny,$(PRESET)),2,1)
PY := $(VENV)/bin/python

.PHONY: env reproduce test test-all list clean-cache

env:
	@VENV=$(VENV) GPU=$(GPU) bash scripts/setup_env.sh

reproduce: env
	$(PY) -m falcon_h1r reproduce --preset $(PRESET) --jobs $(JOBS) $(if $(SECTIONS),--sections $(SECTIONS))

test: env
	$(PY) -m pytest -q -m "not gpu" -n $(TEST_WORKERS) --dist loadfile tests

list: env
	$(PY) -m falcon_h1r list

clean-cache:
	rm -rf results/*/_cache
