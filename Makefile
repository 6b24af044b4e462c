# modelmon: `make demo` runs the monitor on simulated traffic; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv system-deps demo test profile bench-platform bench-detection test-unit test-integration test-faults bench lint format broker-start broker-stop clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The Quix Streams peer of bench/throughput.py runs in a venv of its own: quixstreams 3.28.1 needs
# confluent-kafka<2.13, the project pins a newer one. The stamp names the pin, so changing it reinstalls.
PEER_VENV  := .venv-peer
PEER_PY    := $(PEER_VENV)/bin/python
QUIX_PIN   := quixstreams==3.28.1
PEER_STAMP := $(PEER_VENV)/.installed-$(QUIX_PIN)

$(PEER_STAMP):
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install -q --upgrade pip
	$(PEER_PY) -m pip install -q '$(QUIX_PIN)'
	touch $(PEER_STAMP)

.PHONY: peer-venv
peer-venv: $(PEER_STAMP)

# Debian packages the tests use: kcat (an independent Kafka client), prometheus (promtool checks /metrics
# and deploy/prometheus) and chromium (the dashboard test drives it with Playwright; no browser download).
# Java 17 and Maven must already exist.
DEBIAN_PACKAGES := kcat:kcat prometheus:promtool chromium:chromium
system-deps:
	@command -v java >/dev/null || { echo "make: Java 17+ is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "make: Maven is required (apt-get install maven)"; exit 1; }
	@missing=""; for pc in $(DEBIAN_PACKAGES); do \
	  command -v $${pc#*:} >/dev/null || missing="$$missing $${pc%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "make: installing Debian packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# Checkers of the deployment files (tests/unit/test_deploy.py): the `docker compose` CLI plugin (for
# `docker compose config`; no Docker engine needed) and kubeconform, built from the Go module proxy at the
# versions pinned in deploy/tools/go.mod into .cache/tools/ (about 5 minutes the first time, then cached).
GO          ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
TOOLS_DIR   := .cache/tools
COMPOSE_BIN := $(TOOLS_DIR)/docker/cli-plugins/docker-compose
KUBECONFORM := $(TOOLS_DIR)/bin/kubeconform

$(COMPOSE_BIN): deploy/tools/go.mod deploy/tools/go.sum
	@command -v $(GO) >/dev/null || { echo "make: Go is required to build the deployment checkers"; exit 1; }
	cd deploy/tools && $(GO) build -trimpath -o $(abspath $@) \
	  -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$$($(GO) list -m -f '{{.Version}}' github.com/docker/compose/v5)" \
	  github.com/docker/compose/v5/cmd

$(KUBECONFORM): deploy/tools/go.mod deploy/tools/go.sum
	@command -v $(GO) >/dev/null || { echo "make: Go is required to build the deployment checkers"; exit 1; }
	cd deploy/tools && $(GO) build -trimpath -o $(abspath $@) \
	  -ldflags "-s -w -X main.version=$$($(GO) list -m -f '{{.Version}}' github.com/yannh/kubeconform)" \
	  github.com/yannh/kubeconform/cmd/kubeconform

.PHONY: deploy-tools
deploy-tools: $(COMPOSE_BIN) $(KUBECONFORM)

demo: $(STAMP) system-deps
	$(PY) -m modelmon.demo

# Every test: unit, integration and the fault suite (tests/faults: kill -9, broker outage, rebalances).
test: $(STAMP) system-deps deploy-tools
	$(PY) -m pytest tests

test-unit: $(STAMP) deploy-tools
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) system-deps
	$(PY) -m pytest tests/integration

# The fault suite alone (each test starts what it breaks: workers, and a broker of its own for outages).
test-faults: $(STAMP) system-deps
	$(PY) -m pytest tests/faults

# Benchmarks print their figures and rewrite their sections of docs/benchmarks.md.
# Throughput, freshness, memory, recovery, alert detection and API latency in about 30 minutes on 2 cores: throughput
# runs on 600k input records here (the script's default, 1 M, takes about 13 minutes by itself).
bench: $(STAMP) $(PEER_STAMP) system-deps
	$(PY) bench/throughput.py --events 600000
	$(PY) bench/freshness.py --duration 30
	$(PY) bench/memory_recovery.py
	$(PY) bench/detection.py
	$(PY) bench/api_latency.py

# Alert detection delays and false alarms (docs/benchmarks.md "Detection"); no broker, about 7 minutes.
bench-detection: $(STAMP)
	$(PY) bench/detection.py

# Broker start time and SDK produce rate (docs/benchmarks.md "Platform"); about a minute.
bench-platform: $(STAMP) system-deps
	$(PY) bench/platform_bench.py

# Where a busy worker's time goes (py-spy), written to docs/benchmarks.md; about 3 minutes.
profile: $(STAMP) system-deps
	$(PY) bench/profile_worker.py

lint: $(STAMP)
	$(PY) -m ruff check $(wildcard app tests bench)
	$(PY) -m ruff format --check $(wildcard app tests bench)

format: $(STAMP)
	$(PY) -m ruff check --fix $(wildcard app tests bench)
	$(PY) -m ruff format $(wildcard app tests bench)

broker-start: $(STAMP)
	$(VENV)/bin/modelmon broker start

broker-stop: $(STAMP)
	$(VENV)/bin/modelmon broker stop

clean:
	-$(VENV)/bin/modelmon broker stop 2>/dev/null
	rm -rf .modelmon .pytest_cache .ruff_cache
