# The README's two commands are `make demo` and `make test`; CI runs `.ci/run`, which calls `make ci`.
# lint, typecheck and test-unit need only the Python environment: no root, no Docker, no chain.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: venv bootstrap demo test test-unit lint typecheck audit audit-ci lock ci bench image clean

venv:
	@scripts/bootstrap.sh python

bootstrap:
	@scripts/bootstrap.sh

# `make demo TEE=scone|gramine|tdx` shows a trust-1 TEE task on the devnet's emulated TEE side.
demo: bootstrap
	$(PY) -m devnet.demo $(if $(TEE),--tee $(TEE))

test: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not e2e"

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	lint-imports --no-cache --no-logo

typecheck: venv
	$(PY) -m mypy

# Known vulnerabilities of every locked package, from PyPI's advisory data (needs pypi.org's JSON API);
# fails with exit 3 and says so when that service does not answer, 1 on a vulnerable package.
audit: venv
	@scripts/audit.sh

# Regenerate the hashed locks after a change of the dependencies in pyproject.toml or devnet/pyproject.toml.
lock: venv
	$(PY) -m piptools compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements/worker.lock pyproject.toml
	$(PY) -m piptools compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --extra dev -o requirements/dev.lock pyproject.toml requirements/devnet.in

# In CI an unreachable advisory service warns (the audit is reported as not done); a vulnerability fails.
audit-ci: venv
	@scripts/audit.sh --ci

ci: lint typecheck audit-ci test

# The worker's container image (deploy/Dockerfile): on python:3.11-slim, or where that cannot be pulled
# on a base made from Debian packages (see scripts/image.sh). BASE_IMAGE=... picks another base.
image: venv
	@scripts/image.sh

bench: bootstrap
	$(PY) -m bench

clean:
	rm -rf .cache .devnet .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
