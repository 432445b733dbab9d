#!/bin/sh
# Entry point of the worker image: start the worker as uid 10001 (user iexec), able to use the host's
# Docker engine, or refuse with exit 2 and one line naming the fix.
#
# Started as root (the image's default, as compose starts it), it
#   - finds the group that owns the Docker socket (the host's docker group: its gid differs from host
#     to host) and runs the worker with that group added;
#   - hands the base dir to uid 10001 when it is empty and owned by root: what Docker creates for a
#     bind-mount source that did not exist;
#   - drops to uid 10001 (setpriv), then checks as that user.
# Started as a non-root user (Kubernetes runAsUser), it only checks: the group must then be given by
# the orchestrator (securityContext.supplementalGroups).
#
# Only `run` needs Docker, the base dir and the wallet; other commands (`wallet`, `--version`) pass through.
set -eu

WORKER_UID=10001
BASE_DIR="${IEXEC_WORKER_BASE_DIR:-/var/lib/iexec-worker}"

say() { printf 'iexec-worker entrypoint: %s\n' "$*" >&2; }
refuse() {
    printf 'configuration error: %s\n' "$*" >&2
    exit 2
}

# The Docker socket: DOCKER_HOST=unix:///path, or the default path; none for a TCP engine.
case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix://*) SOCKET="${DOCKER_HOST:-unix:///var/run/docker.sock}"; SOCKET="${SOCKET#unix://}" ;;
    *) SOCKET="" ;;
esac

if [ "$(id -u)" = 0 ]; then
    groups="$WORKER_UID"
    if [ -n "$SOCKET" ] && [ -S "$SOCKET" ]; then
        groups="$groups,$(stat -c %g "$SOCKET")"
    fi
    if [ -d "$BASE_DIR" ] && [ "$(stat -c %u "$BASE_DIR")" = 0 ] && [ -z "$(ls -A "$BASE_DIR")" ]; then
        chown "$WORKER_UID:$WORKER_UID" "$BASE_DIR"
        say "gave the new, empty base dir $BASE_DIR to uid $WORKER_UID"
    fi
    exec setpriv --reuid="$WORKER_UID" --regid="$WORKER_UID" --groups="$groups" -- "$0" "$@"
fi

if [ "${1:-}" = run ]; then
    me="uid $(id -u) (groups $(id -G))"
    if [ -n "$SOCKET" ]; then
        [ -S "$SOCKET" ] || refuse "no Docker socket at $SOCKET: mount the host's socket" \
            "(-v /var/run/docker.sock:/var/run/docker.sock), or set DOCKER_HOST"
        if [ ! -r "$SOCKET" ] || [ ! -w "$SOCKET" ]; then
            refuse "$me cannot use the Docker socket $SOCKET (group $(stat -c %g "$SOCKET")):" \
                "start the container as root (the image's default) or add that group" \
                "(docker run --group-add, or the pod's securityContext.supplementalGroups)"
        fi
    fi
    [ -d "$BASE_DIR" ] || refuse "IEXEC_WORKER_BASE_DIR=$BASE_DIR does not exist: mount the host's" \
        "directory at the same path (-v $BASE_DIR:$BASE_DIR)"
    [ -w "$BASE_DIR" ] || refuse "IEXEC_WORKER_BASE_DIR=$BASE_DIR is not writable by $me:" \
        "on the host, chown $WORKER_UID $BASE_DIR"
    # Task folders are bound into app containers by the host's engine, by path: the base dir must be
    # the host's directory, not a folder of this container's own filesystem.
    mounted=0
    while read -r _ _ _ _ point _; do
        case "$BASE_DIR/" in "$point"/* | "$point/") [ "$point" = / ] || mounted=1 ;; esac
    done </proc/self/mountinfo
    [ "$mounted" = 1 ] || refuse "IEXEC_WORKER_BASE_DIR=$BASE_DIR is not a directory of the host:" \
        "mount it at the same path inside and outside (-v $BASE_DIR:$BASE_DIR)"
    for setting in IEXEC_WORKER_WALLET_PATH IEXEC_WORKER_WALLET_PASSWORD_FILE; do
        eval "file=\${$setting:-}"
        [ -z "$file" ] || [ -r "$file" ] && continue
        folder=$(dirname "$file")
        if [ -e "$file" ] || { [ -d "$folder" ] && [ ! -x "$folder" ]; }; then
            refuse "$setting=$file is not readable by $me: on the host, chown -R $WORKER_UID the wallet" \
                "folder (keep its modes: 700 for the folder, 600 for the files)"
        fi
        refuse "$setting=$file: no such file in the container: mount the wallet folder" \
            "(-v /path/to/wallet:$folder:ro)"
    done
fi

exec iexec-worker "$@"
