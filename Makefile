# The commands README promises. Each installs what it needs first (scripts/bootstrap.sh).
.PHONY: setup lock demo test dev docs bench bench-sales bench-softcart bench-replication bench-replication-cdc bench-history bench-cluster clean

setup:
	@scripts/bootstrap.sh

# Re-resolves requirements.lock (the exact versions the bootstrap installs) from pyproject.toml in
# a fresh virtualenv; commit it together with the pyproject.toml change.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e ".[dev,bench]"
	.lock-venv/bin/pip freeze --exclude-editable > requirements.lock
	rm -rf .lock-venv

demo: setup
	.venv/bin/dw demo

test: setup
	scripts/lint.sh
	.venv/bin/pytest

# The Dagster UI on http://127.0.0.1:3000, or another port: make dev PORT=3001.
dev: setup
	.venv/bin/dw dev $(if $(PORT),--port $(PORT))

# The docs site (docs/, mkdocs.yml) into site/; `make test` builds it with --strict (scripts/lint.sh).
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build

bench: setup
	.venv/bin/python -m benchmarks.bench_customer $(ARGS)

# One large sales blob from Azurite: 200 MiB by default; ARGS="--gb 1" for the 1 GiB run.
bench-sales: setup
	.venv/bin/python -m benchmarks.bench_sales $(ARGS)

# SoftCart: 1,000,000 sales_data rows over MariaDB ODBC and a 1,000,000-line access log into bronze
# (ARGS="--rows 200000 --lines 200000" for fewer).
bench-softcart: setup
	.venv/bin/python -m benchmarks.bench_softcart $(ARGS)

# Bulk load of a 1,000,000-row table into Iceberg next to the raw COPY of the same rows.
bench-replication: setup
	.venv/bin/python -m benchmarks.bench_replication $(ARGS)

# 200,000 changes captured and applied with the CDC sensor running in the Dagster daemon.
bench-replication-cdc: setup
	.venv/bin/python -m benchmarks.bench_replication_cdc $(ARGS)

# One customer day's whole job on 30 days vs 5 years of history (10,000 changed customers a day),
# side by side, after each history was backfilled as one run (the 5-year backfill's rows/s and peak
# RSS). ARGS="--years 1 --repeat 1" for a shorter run; the warehouses are kept (--rebuild starts over).
bench-history: setup
	.venv/bin/python -m benchmarks.bench_history $(ARGS)
# A burst of 20 sales blobs and a 7-day customer backfill in process, on 1 and on 2 Celery
# workers, side by side, with each process's CPU.
bench-cluster: setup
	.venv/bin/python -m benchmarks.bench_cluster $(ARGS)

# Removes the embedded servers' state (.dw/); stop `make dev` first.
clean:
	rm -rf .dw
