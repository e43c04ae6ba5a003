# Users: `make test`, `make features`, `make probe EPS=4`, `make bench`, `make bench-speed`,
# `make audit EPS=2 [METHOD=dp_gd STEPS=3]`.
# The virtual environment is created on first use and reinstalled only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DATA ?= digits
MODEL ?= pixels
OUT ?= features/$(DATA)-$(MODEL).h5
FEATURES ?= $(OUT)
EPS ?= 4
DELTA ?=
METHOD ?=
STEPS ?=
PYTEST_ARGS ?=

.PHONY: venv test lint features probe bench bench-speed audit clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

features: $(STAMP)
	$(PY) -m feature_extract --data $(DATA) --model $(MODEL) --out $(OUT) --skip-complete

probe: $(STAMP)
	$(PY) -m private_head --features $(FEATURES) --epsilon $(EPS) $(if $(METHOD),--method $(METHOD)) \
		$(if $(DELTA),--delta $(DELTA)) $(if $(STEPS),--steps $(STEPS))

bench: $(STAMP)
	$(PY) -m benchmarks sweep

bench-speed: $(STAMP)
	$(PY) -m benchmarks speed

audit: $(STAMP)
	$(PY) -m private_head.audit --method $(or $(METHOD),single_step) --epsilon $(EPS) \
		$(if $(STEPS),--steps $(STEPS)) --delta $(or $(DELTA),1e-5)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
