#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine, and starts dockerd when absent.
# Safe to run again: each step is skipped when already done.
#   scripts/bootstrap.sh          everything: Debian packages, the venv, the devnet's npm packages, dockerd
#   scripts/bootstrap.sh python   the venv only (lint, type check, unit tests: no root, no Docker)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[bootstrap] %s\n' "$*"; }

python_env() {
    # The worker with its dev tools, and the devnet beside it (its own distribution: never in a worker install).
    # Every package comes from the hashed lock (requirements/dev.lock, made by pip-compile --generate-hashes);
    # the two local distributions are then installed without resolving anything.
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import worker, devnet' >/dev/null 2>&1 \
            || [ pyproject.toml -nt .venv/.installed ] || [ devnet/pyproject.toml -nt .venv/.installed ] \
            || [ requirements/dev.lock -nt .venv/.installed ]; then
        say "creating the Python environment in .venv"
        python3 -m venv .venv
        .venv/bin/pip install -q --require-hashes -r requirements/dev.lock
        .venv/bin/pip install -q --no-deps --no-build-isolation -e '.[dev]' -e ./devnet
        touch .venv/.installed
    fi
}

if [ "${1:-all}" = python ]; then
    python_env
    exit 0
fi

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v busybox >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The status page's end-to-end test loads it in Debian's headless browser (never a downloaded one).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
need_lean=()
# The deploy tests, their tools only (without Debian's recommended extras): debootstrap for images made
# from Debian packages, Prometheus and Alertmanager with promtool and amtool, Docker Compose, and kubectl
# (its offline --dry-run=client only).
command -v debootstrap >/dev/null 2>&1 || need_lean+=(debootstrap)
command -v promtool >/dev/null 2>&1 || need_lean+=(prometheus)
command -v amtool >/dev/null 2>&1 || need_lean+=(prometheus-alertmanager)
# Debian 12 has no docker-compose-plugin: its docker-compose package (v1) reads the same compose files.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    plugin=$(apt-cache policy docker-compose-plugin 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    if [ -n "$plugin" ] && [ "$plugin" != "(none)" ]; then
        need_lean+=(docker-compose-plugin)
    else
        need_lean+=(docker-compose)
    fi
fi
command -v kubectl >/dev/null 2>&1 || need_lean+=(kubernetes-client)
if ((${#need_apt[@]} + ${#need_lean[@]})); then
    if [ "$(id -u)" != 0 ]; then
        say "missing Debian packages: ${need_apt[*]} ${need_lean[*]}; run as root or install them (apt-get install ${need_apt[*]} ${need_lean[*]})"
        exit 1
    fi
    say "installing Debian packages: ${need_apt[*]} ${need_lean[*]}"
    apt-get update -qq
    if ((${#need_apt[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
    if ((${#need_lean[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_lean[@]}" >/dev/null
    fi
fi
python_env

# docker-registry, Prometheus and Alertmanager are started by the tests that need them, never as system
# services (which would hold their default ports).
if command -v systemctl >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    for service in docker-registry prometheus prometheus-alertmanager; do
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    done
fi


if [ -L devnet/npm/node_modules ]; then
    # A link to an install shared with other checkouts: `npm ci` would empty it for all of them.
    [ -d devnet/npm/node_modules/@iexec/poco ] \
        || { say "devnet/npm/node_modules links to a folder without the chain packages"; exit 1; }
elif [ ! -d devnet/npm/node_modules/@iexec/poco ] \
        || [ devnet/npm/package-lock.json -nt devnet/npm/node_modules/.package-lock.json ]; then
    say "installing the pinned chain packages (anvil, PoCo contracts)"
    (cd devnet/npm && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        say "dockerd is not running and this user cannot start it: start Docker, then run again"
        exit 1
    fi
    say "starting dockerd (log: /var/log/iexec-dockerd.log)"
    nohup dockerd >/var/log/iexec-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { say "dockerd did not start; see /var/log/iexec-dockerd.log"; exit 1; }
fi
say "ready"
