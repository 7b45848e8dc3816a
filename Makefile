# The two commands a new user needs (see README.md):
#   make run    start the service on its own embedded PostgreSQL
#   make test   run the test suite against an embedded PostgreSQL
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test migrate bench-reconcile bench-streams bench-writes bench-workers bench-http bench-queries bench-export bench-proofs bench-followers bench-ab clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ledger serve

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

migrate: $(STAMP)
	$(BIN)/ledger migrate

# Benchmarks print their figures; they are not tests (see bench/).
bench-reconcile: $(STAMP)
	$(BIN)/python -m bench.reconcile $(BENCH_ARGS)

bench-streams: $(STAMP)
	$(BIN)/python -m bench.streams $(BENCH_ARGS)

bench-writes: $(STAMP)
	$(BIN)/python -m bench.writes $(BENCH_ARGS)

# Single-transfer POSTs through `ledger serve --workers 1`, then `--workers 2`.
bench-workers: $(STAMP)
	$(BIN)/python -m bench.writes --scenarios workers $(BENCH_ARGS)

# A page of GET /v1/transfers at 10k transfers and at 1M.
bench-queries: $(STAMP)
	$(BIN)/python -m bench.queries $(BENCH_ARGS)

# ledger export over 1M events, beside a raw COPY of the rows.
bench-export: $(STAMP)
	$(BIN)/python -m bench.export $(BENCH_ARGS)

# Inclusion and consistency proofs and checkpoints at 1M events, beside a raw point read.
bench-proofs: $(STAMP)
	$(BIN)/python -m bench.proofs $(BENCH_ARGS)

# 50 followers of /v1/events under write load: delivery p50/p99.
bench-followers: $(STAMP)
	$(BIN)/python -m bench.followers $(BENCH_ARGS)

# HEAD beside another commit (BASE=rev), alternating, in one run.
bench-ab: $(STAMP)
	$(BIN)/python -m bench.ab $(BASE) $(BENCH_ARGS)

# Single-transfer POSTs with the access log off, on (text), and on (JSON), each round
# after aiohttp alone (bench/floor.py). (Writes beside full-log streams: bench-writes --scenarios streams.)
bench-http: $(STAMP)
	$(BIN)/python -m bench.writes --scenarios access-log $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
