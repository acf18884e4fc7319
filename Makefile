# The one entry point for every developer command.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit lint bench stack-up stack-down clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required: install python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Bring up the local stack and run the product on its local defaults.
demo: $(STAMP)
	$(BIN)/foresight demo

## Lint, type-check, and run every test (unit and integration on the real local stack).
test: $(STAMP) lint
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/foresight bench pipeline

stack-up: $(STAMP)
	$(BIN)/foresight stack up

stack-down: $(STAMP)
	$(BIN)/foresight stack down

clean:
	-$(BIN)/foresight stack down --wipe
	rm -rf $(VENV) build *.egg-info
