# The README's two commands are `make demo` and `make test`; CI runs `.ci/run`, which calls `make ci`.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: bootstrap demo test lint typecheck ci bench clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m worker.devnet.demo

test: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider

lint: bootstrap
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: bootstrap
	$(PY) -m mypy

ci: lint typecheck test

bench: bootstrap
	$(PY) -m bench

clean:
	rm -rf .devnet .mypy_cache .ruff_cache .pytest_cache
