#!/usr/bin/env bash
# Builds the worker's container images, and the Prometheus and Alertmanager images that deploy/compose.yml
# runs where theirs cannot be pulled.
#   scripts/image.sh              the worker image and its firewall helper (make image); prints their tags
#   scripts/image.sh firewall     the firewall helper only
#   scripts/image.sh monitoring   Prometheus and Alertmanager made from Debian packages; prints
#                                 PROMETHEUS_IMAGE=... and ALERTMANAGER_IMAGE=... for compose
# Settings, from the environment:
#   BASE_IMAGE     base of the worker image. Unset: python:3.11-slim, and where that cannot be pulled a
#                  base made from the host's Debian release (debootstrap); set: that image or a failure
#   IMAGE          tag of the worker image (default iexec-worker:<version in pyproject.toml>)
#   FIREWALL_IMAGE tag of the firewall helper (default iexec-worker-firewall:<version>)
#   DEBIAN_MIRROR  where debootstrap takes the packages (default http://deb.debian.org/debian)
# An image made from Debian packages is tagged with a key of its recipe (release, architecture, mirror,
# packages and the recipe's own text): it is made once, then reused. Wheels are kept in .cache/image/
# under a key of pyproject.toml and the lock file. No network is used inside `docker build`.
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_BASE=python:3.11-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=.cache/image
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
IMAGE=${IMAGE:-iexec-worker:$VERSION}
FIREWALL_IMAGE=${FIREWALL_IMAGE:-iexec-worker-firewall:$VERSION}
mkdir -p "$CACHE"

say() { printf '[image] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# debian_image NAME PACKAGE...: prints the tag of a minbase image of the host's Debian release with
# these packages, making it first when it does not exist yet.
debian_image() {
    local name=$1 release arch key tag root
    shift
    release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$release" ] || die "cannot tell the host's Debian release from /etc/os-release"
    arch=$(dpkg --print-architecture)
    key=$({ declare -f debian_image; echo "$release $arch $MIRROR $*"; } | sha256sum | cut -c1-12)
    tag="$name:$release-$key"
    # One maker at a time per image: a second build waits, then finds the image made.
    exec 9>"$CACHE/$name.lock"
    flock 9
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || die "making $tag runs debootstrap, which needs root: run as root"
        command -v debootstrap >/dev/null || die "debootstrap is missing: run make bootstrap (or apt-get install debootstrap)"
        root=$(mktemp -d /var/tmp/iexec-image.XXXXXX)
        say "making $tag: debootstrap --variant=minbase $release with $* (about a minute; log $CACHE/$name.log)"
        if ! debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$release" "$root" "$MIRROR" \
                >"$CACHE/$name.log" 2>&1; then
            findmnt -rn -o TARGET | grep "^$root/" | sort -r | xargs -r umount -l
            rm -rf --one-file-system "$root"
            die "debootstrap failed: see $CACHE/$name.log"
        fi
        # What a container never reads: package caches and lists, manuals, translations (copyrights stay).
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* \
            "$root"/usr/share/locale/* "$root"/usr/share/info/* "$root"/var/log/*
        find "$root"/usr/share/doc -type f ! -name copyright -delete
        tar -C "$root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
            | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
        rm -rf --one-file-system "$root"
        say "made $tag ($(size_mb "$tag") MB)"
    fi
    exec 9>&-
    echo "$tag"
}

size_mb() { echo $(( $(docker image inspect -f '{{.Size}}' "$1") / 1000000 )); }

worker_base() {
    if [ -n "${BASE_IMAGE:-}" ]; then
        docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || timeout 300 docker pull -q "$BASE_IMAGE" >&2 \
            || die "BASE_IMAGE=$BASE_IMAGE can be neither found nor pulled: pull it, or unset BASE_IMAGE"
        echo "$BASE_IMAGE"
    elif docker image inspect "$DEFAULT_BASE" >/dev/null 2>&1 \
            || timeout 300 docker pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
        echo "$DEFAULT_BASE"
    else
        say "cannot pull $DEFAULT_BASE: the base is made from Debian packages instead"
        debian_image iexec-worker-base python3 python3-venv ca-certificates
    fi
}

# The dependencies' wheels, made on the host (which reaches the package index) once per dependency set.
dependency_wheels() {
    local lock="" key dir tmp candidate
    # The worker's hashed lock file, where the project has one; else the pins of pyproject.toml.
    for candidate in requirements/worker.txt requirements/worker.lock requirements.lock; do
        if [ -f "$candidate" ] && grep -q -- '--hash=' "$candidate"; then
            lock=$candidate
            break
        fi
    done
    key=$(cat pyproject.toml ${lock:+"$lock"} | sha256sum | cut -c1-16)
    dir=$CACHE/wheels-$key
    if [ ! -d "$dir" ]; then
        tmp=$(mktemp -d "$CACHE/wheels.XXXXXX")
        if [ -n "$lock" ]; then
            say "downloading the dependencies of $lock, checking their hashes"
            .venv/bin/pip download -q --no-deps --require-hashes -r "$lock" -d "$tmp/download"
            .venv/bin/pip wheel -q --no-deps -w "$tmp" "$tmp"/download/*
            rm -rf "$tmp/download"
        else
            say "building the dependencies' wheels from pyproject.toml (no lock file)"
            .venv/bin/pip wheel -q -w "$tmp" .
            rm -f "$tmp"/iexec_worker-*.whl
        fi
        mv "$tmp" "$dir"
    fi
    echo "$dir"
}

CONTEXT=""
build_worker() {
    local base wheels ours theirs
    [ -x .venv/bin/pip ] || die "no .venv: run make venv first"
    base=$(worker_base)
    # Wheels with compiled parts are made for the Python that makes them: the base must run the same one.
    ours=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    theirs=$(docker run --rm --network none --entrypoint python3 "$base" \
        -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$ours" = "$theirs" ] || die "the wheels are made by the Python $ours of .venv but $base runs" \
        "Python $theirs: pick a base with Python $ours (BASE_IMAGE=python:$ours-slim)"
    wheels=$(dependency_wheels)
    CONTEXT=$(mktemp -d "$CACHE/context.XXXXXX")
    trap 'rm -rf "$CONTEXT"' EXIT
    cp -a "$wheels" "$CONTEXT/wheels"
    .venv/bin/pip wheel -q --no-deps --no-build-isolation -w "$CONTEXT/worker" .
    cp deploy/entrypoint.sh "$CONTEXT/entrypoint.sh"
    say "building $IMAGE on $base"
    docker build -q --network none --build-arg BASE_IMAGE="$base" \
        --label org.opencontainers.image.version="$VERSION" --label org.opencontainers.image.base.name="$base" \
        -t "$IMAGE" -f deploy/Dockerfile "$CONTEXT" >/dev/null
    say "built $IMAGE on $base: $(size_mb "$IMAGE") MB"
    echo "$IMAGE"
}

# The firewall helper that IEXEC_WORKER_FIREWALL_IMAGE names in deploy/compose.yml and deploy/k8s: sh and
# Debian's iptables. The worker image runs as uid 10001, which cannot install the app network's rules; the
# worker starts this image through the engine (root, NET_ADMIN, host network) to install them. Its
# iptables is the host release's default (nf_tables on Debian 11 and later), as dockerd's is.
build_firewall() {
    local base
    base=$(debian_image iexec-worker-firewall-base iptables)
    docker tag "$base" "$FIREWALL_IMAGE"
    say "tagged $FIREWALL_IMAGE ($(size_mb "$FIREWALL_IMAGE") MB, iptables $(docker run --rm --network none \
        --entrypoint iptables "$FIREWALL_IMAGE" -V | cut -d' ' -f2-))"
    echo "$FIREWALL_IMAGE"
}

# The monitoring images from one Debian root with both packages, each with the entry point, user and
# data folder of the upstream image it stands in for (prom/prometheus, prom/alertmanager).
build_monitoring() {
    local base suffix prometheus alertmanager
    base=$(debian_image iexec-monitoring-base prometheus prometheus-alertmanager)
    suffix=${base#*:}
    prometheus=iexec-prometheus:$suffix
    alertmanager=iexec-alertmanager:$suffix
    docker build -q --network none -t "$prometheus" - >/dev/null <<EOF
FROM $base
RUN install -d -o nobody -g nogroup /prometheus
USER nobody
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
    docker build -q --network none -t "$alertmanager" - >/dev/null <<EOF
FROM $base
RUN install -d -o nobody -g nogroup /alertmanager
USER nobody
WORKDIR /alertmanager
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
EOF
    echo "PROMETHEUS_IMAGE=$prometheus"
    echo "ALERTMANAGER_IMAGE=$alertmanager"
}

case "${1:-worker}" in
    worker) build_worker && build_firewall ;;
    firewall) build_firewall ;;
    monitoring) build_monitoring ;;
    *) die "usage: scripts/image.sh [worker|firewall|monitoring]" ;;
esac
