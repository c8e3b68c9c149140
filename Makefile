# Relance: the two commands are `make run` and `make test`; `make check` is what CI lints.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
PYTEST_ARGS ?=
export UV_FROZEN := 1

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

uv: ## Install uv (from PyPI) if it is missing
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@command -v $(UV) >/dev/null 2>&1 || { echo "uv is not on PATH after install"; exit 1; }

setup: uv ## Create .venv with every package and the `relance` CLI (locked)
	@$(UV) sync --frozen --all-packages --quiet

run: setup ## Run all five services in one process on 127.0.0.1:8000 (embedded mode)
	.venv/bin/relance up

infra-up: ## Fetch (cached) and start a single-node Kafka on 127.0.0.1:9092
	@bash deploy/kafka/kafka.sh up

infra-down: ## Stop the local Kafka
	@bash deploy/kafka/kafka.sh down

check: setup ## ruff, ruff format, mypy --strict, and the import rule for domain/
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy libs/events/src libs/runtime/src libs/cli/src services/ingest/src services/segmentation/src services/orchestrator/src services/sender/src services/feedback/src
	.venv/bin/lint-imports

test: setup ## Unit, integration and e2e tests on real Kafka and PostgreSQL
	@started=0; \
	if bash deploy/kafka/kafka.sh status >/dev/null 2>&1; then :; \
	elif bash deploy/kafka/kafka.sh answers; then echo "using the broker already listening on 127.0.0.1:9092"; \
	else bash deploy/kafka/kafka.sh up && started=1 || exit 1; fi; \
	.venv/bin/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$started = 1 ]; then bash deploy/kafka/kafka.sh down; fi; \
	exit $$status

test-unit: setup ## Only the pure, fast tests
	.venv/bin/pytest tests/unit $(PYTEST_ARGS)

.PHONY: help uv setup run infra-up infra-down check test test-unit

docs: setup ## Regenerate the README's configuration reference from the code
	.venv/bin/relance config --update-readme README.md
.PHONY: docs
