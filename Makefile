# modelmon: `make demo` runs the monitor on simulated traffic; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv system-deps demo test test-faults test-unit test-integration bench lint format broker-start broker-stop clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use: kcat (an independent Kafka client). Java 17 and Maven must already exist.
system-deps:
	@command -v java >/dev/null || { echo "make: Java 17+ is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "make: Maven is required (apt-get install maven)"; exit 1; }
	@command -v kcat >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq kcat >/dev/null; }

demo: $(STAMP) system-deps
	$(PY) -m modelmon.demo

test: $(STAMP) system-deps
	$(PY) -m pytest tests -m "not faults"

# Fault-injection tests that are not yet stable (see docs/architecture.md §6).
test-faults: $(STAMP) system-deps
	$(PY) -m pytest tests -m faults

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) system-deps
	$(PY) -m pytest tests/integration

# Benchmarks print their figures and rewrite their sections of docs/benchmarks.md.
bench: $(STAMP) system-deps
	$(PY) bench/platform_bench.py
	$(PY) bench/throughput.py

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
