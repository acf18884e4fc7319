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
TEST_NEEDS := $(STACK_NEEDS) chromium kcat $(REAL_CLIENTS)
# The Helm chart's tests (tests/deploy/test_helm.py) render it with Helm, built from its Go module
# (about 7 minutes on a new machine, once), and validate it against the operators' CRDs.
HELM_VERSION := v3.22.0
# What Helm's own release build stamps in: its version, and the Kubernetes of its client-go
# (1.37), which `helm template` assumes when not told.
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	$(foreach pkg,pkg/chartutil pkg/lint/rules,-X helm.sh/helm/v3/$(pkg).k8sVersionMajor=1 \
	-X helm.sh/helm/v3/$(pkg).k8sVersionMinor=37)
HELM := $(BIN)/helm
CRDS := $(VENV)/k8s-crds

.PHONY: install demo test test-unit lint bench stack-up stack-down clean k8s-tools \
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

$(HELM): | $(STAMP)
	@command -v go >/dev/null || { echo "make: Helm is built with Go (1.21 or newer fetches the toolchain Helm needs); install Go, then run make again" >&2; exit 1; }
	GOBIN=$(abspath $(BIN)) go install -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(CRDS)/.complete: deploy/helm/crd-schemas | $(STAMP)
	@$(SYSTEM_PACKAGES) java javac mvn
	deploy/helm/crd-schemas $(CRDS)

## Helm and the CRDs the chart's custom resources are validated against.
k8s-tools: $(HELM) $(CRDS)/.complete

## Bring up the local stack and run the product on its local defaults.
demo: stack-packages $(STAMP)
	$(BIN)/foresight demo

## Lint, type-check, and run every test (unit and integration on the real local stack).
test: test-packages $(STAMP) k8s-tools lint
	$(BIN)/pytest -q

test-unit: $(STAMP) k8s-tools
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
