# INFaaS-py: the two Quick-start commands (`make run`, `make test`) and their helpers.
# Each target creates or updates the virtual environment at .venv by itself.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
RUN_DIR ?= runs/quickstart

.PHONY: run test venv lint typecheck pytest clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "INFaaS-py needs Python >= 3.11 (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[real,dev,ray]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

## The main job: the default simulation, INFaaS beside its baselines, printed as one table.
run: $(STAMP)
	$(BIN)/infaas-sim --multirun policy=infaas,infaas_cost,infaas_no_model_autoscale,clipper_plus,sagemaker_plus hydra.sweep.dir=$(RUN_DIR)
	$(BIN)/infaas-sim-report $(RUN_DIR)

lint: $(STAMP)
	$(BIN)/ruff check infaas_core infaas_sim infaas_real infaas_edge tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@$(BIN)/python -m pytest tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

## The whole test suite: lint, type check, then every test (slow ones included).
test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache runs outputs multirun
