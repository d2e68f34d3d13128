# paynotify: `make run` for a first look, `make test` for the suite. Everything runs from ./.venv,
# which this Makefile creates from python3 and fills; nothing installed elsewhere is relied upon.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/paynotify/v1/*.proto)
STUB_DIR := clients/python
PYTEST_ARGS ?=
# PostgreSQL tests use this database when it is reachable and skip with the reason when it is not.
export PAYNOTIFY_TEST_POSTGRES_DSN ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: all venv run test check lint format typecheck stubs check-stubs bench chaos clean

all: check test

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e clients/python -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Generated code is never edited by hand: change the .proto and run `make stubs`.
stubs: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m grpc_tools.protoc -I proto \
	  --python_out=$(STUB_DIR) --grpc_python_out=$(STUB_DIR) \
	  --mypy_out=$(STUB_DIR) --mypy_grpc_out=$(STUB_DIR) $(PROTOS)
	rm -f $(STUB_DIR)/paynotify/v1/notification_pb2_grpc.py $(STUB_DIR)/paynotify/v1/notification_pb2_grpc.pyi

# Fails when the committed stubs differ from what the .proto files generate.
check-stubs: $(STAMP)
	@tmp=$$(mktemp -d) && \
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m grpc_tools.protoc -I proto \
	  --python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTOS) >/dev/null 2>&1 && \
	rm -f $$tmp/paynotify/v1/notification_pb2_grpc.py $$tmp/paynotify/v1/notification_pb2_grpc.pyi && \
	for f in $$tmp/paynotify/v1/*.py $$tmp/paynotify/v1/*.pyi; do \
	  cmp -s "$$f" "$(STUB_DIR)/paynotify/v1/$$(basename $$f)" || { echo "stale generated stub: $(STUB_DIR)/paynotify/v1/$$(basename $$f) (run 'make stubs')"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated stubs are up to date"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

check: check-stubs lint typecheck

# The whole suite. PostgreSQL tests run when PAYNOTIFY_TEST_POSTGRES_DSN is set (CI sets it).
test: check-stubs
	$(BIN)/pytest $(PYTEST_ARGS)

# Hub and bridge together on the embedded SQLite store, with a development key pair in ./data.
run: $(STAMP)
	$(BIN)/paynotify run

# The benchmark (docs/benchmark.md): bare Falcon/waitress limit vs the acknowledged pipeline, with wrk.
BENCH_ARGS ?=
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk (Debian package) for the benchmark"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(PY) -m bench.run $(BENCH_ARGS)

# The fault-injection suite (docs/chaos.md), ~7 minutes; restarts the local PostgreSQL cluster
# twice. A shortened run is part of `make test`.
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(PY) -m chaos.run --pg-restart $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
