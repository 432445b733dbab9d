#!/usr/bin/env bash
# Known vulnerabilities of every locked package: pip-audit over requirements/*.lock (PyPI's advisory data).
# Exit 0: every package audited, none vulnerable. 1: a vulnerable package (listed above the message).
# 3: the vulnerability service did not answer for some packages, which were NOT audited (listed).
#   scripts/audit.sh           as `make audit` runs it
#   scripts/audit.sh --ci      the same, but an unreachable service only warns (CI cannot fix the network)
set -uo pipefail
cd "$(dirname "$0")/.."
report=$(mktemp)
trap 'rm -f "$report"' EXIT
.venv/bin/python -m pip_audit --progress-spinner off --require-hashes --disable-pip \
    -r requirements/worker.lock -r requirements/dev.lock >"$report" 2>&1
status=$?
cat "$report"
if [ "$status" -ne 0 ]; then
    echo "audit: FAILED: a locked package has a known vulnerability (above): raise its pin in pyproject.toml," \
        "then run make lock" >&2
    exit 1
fi
skipped=$(grep -c "could not be audited" "$report" || true)
if [ "$skipped" -gt 0 ]; then
    echo "audit: NOT DONE for $skipped packages: the vulnerability service (pypi.org/pypi/<name>/<version>/json)" \
        "did not answer for them; run make audit where it is reachable" >&2
    [ "${1:-}" = --ci ] && exit 0
    exit 3
fi
echo "audit: every locked package audited, no known vulnerability"
