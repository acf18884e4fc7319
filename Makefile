# The one entry point for every developer command.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# System packages (Debian) each target needs, installed by deploy/local/system-packages when
# missing; `deploy/local/system-packages --list` says which package and why.
SYSTEM_PACKAGES := deploy/local/system-packages
PYTHON_NEEDS := python3.11 python3.11-venv
STACK_NEEDS := $(PYTHON_NEEDS) java javac mvn redis-server
# The real clients of the integration tests: node_exporter -> Prometheus -> Foresight ->
# Alertmanager, and promtool for deploy/prometheus. `foresight demo` installs the first two
# itself when it can, and runs without them when it cannot.
REAL_CLIENTS := prometheus-node-exporter prometheus promtool prometheus-alertmanager
TEST_NEEDS := $(STACK_NEEDS) chromium $(REAL_CLIENTS)

.PHONY: install demo test test-unit lint bench stack-up stack-down clean \
	python-packages stack-packages test-packages

python-packages:
	@$(SYSTEM_PACKAGES) $(PYTHON_NEEDS)

stack-packages:
	@$(SYSTEM_PACKAGES) $(STACK_NEEDS)

test-packages:
	@$(SYSTEM_PACKAGES) $(TEST_NEEDS)

$(STAMP): pyproject.toml | python-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Bring up the local stack and run the product on its local defaults.
demo: stack-packages $(STAMP)
	$(BIN)/foresight demo

## Lint, type-check, and run every test (unit and integration on the real local stack).
test: test-packages $(STAMP) lint
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: stack-packages $(STAMP)
	$(BIN)/foresight bench pipeline

stack-up: stack-packages $(STAMP)
	$(BIN)/foresight stack up

stack-down: $(STAMP)
	$(BIN)/foresight stack down

clean:
	-$(BIN)/foresight stack down --wipe
	rm -rf $(VENV) build *.egg-info
