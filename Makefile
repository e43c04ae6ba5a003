# Users: `make test` (`make test-all`: with the slow tests), `make features`,
# `make probe EPS=4 [METHOD=dp_sgd OPTIONS="batch_size=256 steps=50"] [OVERWRITE=1]`,
# `make predict HEAD=features/mnist5k-scatnet.auto.eps4.npz [FEATURES=...:test] [LABELS=y.npy]`,
# `make bench`, `make bench-speed`, `make bench-scale`, `make bench-gpu [TINY=1] [SECTIONS=targets|extraction|head,fit]`,
# `make audit EPS=2 [METHOD=dp_gd STEPS=3]`. `EPS=inf` trains the non-private ceiling.
# The virtual environment is created on first use and reinstalled only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DATA ?= mnist5k
MODEL ?= scatnet
OUT ?= features/$(DATA)-$(MODEL).h5
FEATURES ?= $(OUT)
EPS ?= 4
DELTA ?=
METHOD ?=
STEPS ?=
OPTIONS ?=
OVERWRITE ?=
HEAD ?=
LABELS ?=
PREDICTIONS ?=
GPU_OUT ?=
SECTIONS ?=
TINY ?=
PYTEST_ARGS ?=

.PHONY: venv test test-all lint features probe predict bench bench-tuned bench-speed bench-scale bench-gpu gpu-wheels audit clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# `make test`: everything but the tests marked slow, with XLA compiling at optimisation level 0
# (the tests' shapes are tiny: compiling is most of their time); `make test-all`: the whole suite
# at XLA's default level, which CI runs. Idle workers steal queued tests (--dist worksteal).
test: $(STAMP)
	XLA_FLAGS="$${XLA_FLAGS:---xla_backend_optimization_level=0}" \
		$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

features: $(STAMP)
	$(PY) -m feature_extract --data $(DATA) --model $(MODEL) --out $(OUT) --skip-complete

# METHOD defaults to auto (nonprivate for EPS=inf); OPTIONS="key=value ..." passes any option;
# OVERWRITE=1 replaces a head of this method and epsilon trained with other choices.
probe: $(STAMP)
	$(PY) -m private_head --features $(FEATURES) --epsilon $(EPS) \
		--method $(or $(METHOD),$(if $(filter inf,$(EPS)),nonprivate,auto)) \
		$(if $(DELTA),--delta $(DELTA)) $(if $(STEPS),--steps $(STEPS)) \
		$(foreach option,$(OPTIONS),--option $(option)) $(if $(OVERWRITE),--overwrite)

# A saved head on rows: the accuracy when they have labels (a store's test split by default),
# else the predicted classes written to PREDICTIONS (default <features stem>.predictions.npy).
predict: $(STAMP)
	$(if $(HEAD),,$(error make predict needs HEAD=path/to/head.npz))
	$(PY) -m private_head predict --head $(HEAD) --features $(FEATURES) \
		$(if $(LABELS),--labels $(LABELS)) $(if $(PREDICTIONS),--out $(PREDICTIONS)) \
		$(if $(OVERWRITE),--overwrite)

bench: $(STAMP)
	$(PY) -m benchmarks sweep

bench-tuned: $(STAMP)
	$(PY) -m benchmarks sweep --tuned

bench-speed: $(STAMP)
	$(PY) -m benchmarks speed

bench-scale: $(STAMP)
	$(PY) -m benchmarks.scale

bench-gpu: $(STAMP)
	$(PY) -m benchmarks.gpu $(if $(GPU_OUT),--out-dir $(GPU_OUT)) \
		$(if $(SECTIONS),--sections $(SECTIONS)) $(if $(TINY),--tiny)

gpu-wheels: $(STAMP)
	PYTHON=$(PY) bash benchmarks/gpu_wheels.sh

audit: $(STAMP)
	$(PY) -m private_head.audit --method $(or $(METHOD),single_step) --epsilon $(EPS) \
		$(if $(STEPS),--steps $(STEPS)) --delta $(or $(DELTA),1e-5)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
