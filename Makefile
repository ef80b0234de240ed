# esupdater — everyday commands. `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOC := PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -I proto
CANAL_STUB := src/esupdater/canal/canal_pb2.pyi

.PHONY: install up down status test unit lint demo bench soak proto clean

install: $(STAMP)  ## create .venv and install esupdater (editable) with dev tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

up:  ## start Kafka, Elasticsearch, MariaDB and Canal on 127.0.0.1 (idempotent; waits until healthy)
	stack/stack.sh up

down:  ## stop the local stack; leaves no process behind
	stack/stack.sh down

status:
	stack/stack.sh status

test: install up  ## unit + integration tests against the local stack
	$(BIN)/pytest -q

unit: install  ## unit tests only (no servers)
	$(BIN)/pytest -q tests/unit

lint: install $(CANAL_STUB)  ## ruff + mypy --strict
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy --strict src/esupdater bench tools tests/integration/handlers

demo: install up  ## see it work: a shop's binlog through Kafka and esupdater into Elasticsearch, verified
	$(BIN)/python -m tools.demo

proto: install  ## regenerate the Canal protobuf module (committed) from proto/canal.proto
	$(PROTOC) --python_out=src/esupdater/canal proto/canal.proto
	$(MAKE) --always-make $(CANAL_STUB)

# The typed stub only serves mypy: generated here, not committed (generated code repeats
# itself, and the module it describes is committed already).
$(CANAL_STUB): proto/canal.proto $(STAMP)
	$(PROTOC) --mypy_out=src/esupdater/canal proto/canal.proto

bench: install up  ## throughput vs ceilings and the seed's shape, latency, RSS -> bench/results/
	$(BIN)/python -m bench.run $(BENCH_ARGS)

soak: install up  ## 1,000,000 Canal rows through one process, with a handler then a mapper; verifies the index, peak RSS -> bench/results/
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
	$(BIN)/python -m bench.soak --mapper $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
