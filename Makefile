# Eddy: `make demo` runs the end-to-end demo, `make test` runs every check.
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help setup setup-dev demo test lint unit integration bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Create the virtualenv, install Eddy, get redis-server (the demo's needs)

setup-dev: $(VENV)/.installed-dev ## setup plus dev tools, chromium, java and the Kafka jars (the tests')

$(VENV)/.installed: pyproject.toml infra/bootstrap.sh
	bash infra/bootstrap.sh $(VENV)

$(VENV)/.installed-dev: pyproject.toml infra/bootstrap.sh infra/kafka/pom.xml
	bash infra/bootstrap.sh $(VENV) --dev

demo: setup ## Run the demo: embedded stack, MovieLens replay, lists before/after
	$(BIN)/eddy demo

bench: setup ## Benchmarks vs targets on the embedded stack (2-5 min): bench-latest.json
	$(BIN)/eddy bench --json bench-latest.json

lint: setup-dev ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup-dev ## Unit tests only (no services)
	$(BIN)/pytest tests/unit

integration: setup-dev ## Integration tests (start their own broker and redis-server)
	$(BIN)/pytest tests/integration

test: lint ## Everything: lint, types, unit and integration tests
	$(BIN)/pytest

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) .eddy .pytest_cache .mypy_cache .ruff_cache
