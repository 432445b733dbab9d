"""The worker image as `make image` builds it: its base, size and cache, and what it refuses at start.

Real Docker: the image is built by `make image` (see conftest.py) and started with `docker run` on no
network (none of these starts needs one). Each refusal is an exit code 2 and one line naming the fix,
never a traceback: an orchestrator's log shows the operator what to change.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.deploy.conftest import IMAGE_BUILD_TIMEOUT, WorkerImage
from tests.support.deploy import WORKER_UID, run
from worker.wallet import create_wallet

# The first test to ask for an image builds it: minutes on a machine where no base is cached yet.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(IMAGE_BUILD_TIMEOUT)]

MAX_IMAGE_MB = 300
DEBIAN_BASE = "iexec-worker-base:"
SOCKET = "/var/run/docker.sock:/var/run/docker.sock"


async def _inspect(image: str) -> dict[str, object]:
    (details,) = json.loads((await run("docker", "image", "inspect", image)).output)
    return dict(details)


async def test_make_image_builds_the_worker_on_a_standard_or_debian_made_base(
    worker_image: WorkerImage,
) -> None:
    details = await _inspect(worker_image.tag)
    labels = details["Config"]["Labels"]  # type: ignore[index]
    base = labels["org.opencontainers.image.base.name"]
    slim_here = (await run("docker", "image", "inspect", "python:3.11-slim", check=False)).code == 0
    assert base == "python:3.11-slim" if slim_here else base.startswith(DEBIAN_BASE), base
    size_mb = int(details["Size"]) / 1e6  # type: ignore[call-overload]
    assert size_mb < MAX_IMAGE_MB, f"the image grew to {size_mb:.0f} MB"
    print(
        f"\nimage {worker_image.tag} on {base}: {size_mb:.0f} MB, `make image` took {worker_image.built.seconds:.0f} s"
    )
    version = await run("docker", "run", "--rm", "--network", "none", worker_image.tag, "--version")
    assert version.output.strip() == "0.1.0"


async def test_a_second_build_makes_neither_the_base_nor_the_wheels_again(worker_image: WorkerImage) -> None:
    tag = f"{worker_image.tag}-again"
    again = await run("scripts/image.sh", env={"IMAGE": tag}, within=600)
    try:
        assert "making iexec-worker-base" not in again.output
        assert "building the dependencies' wheels" not in again.output
        first, second = await _inspect(worker_image.tag), await _inspect(tag)
        label = "org.opencontainers.image.base.name"
        assert first["Config"]["Labels"][label] == second["Config"]["Labels"][label]  # type: ignore[index]
    finally:
        await run("docker", "image", "rm", tag, check=False)


async def test_make_image_builds_the_firewall_image_with_the_hosts_iptables_backend(
    worker_image: WorkerImage,
) -> None:
    """The compose file and the manifest name iexec-worker-firewall:0.1.0: `make image` makes it, with sh
    and an iptables that writes where the host's does (a legacy iptables beside dockerd's nf_tables rules
    would install rules no packet meets)."""
    assert "iexec-worker-firewall:0.1.0" in worker_image.built.output.splitlines()
    theirs = await run(
        "docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", "iexec-worker-firewall:0.1.0",
        "-c", "command -v iptables >/dev/null && iptables -V",
    )  # fmt: skip
    ours = await run("iptables", "-V")
    backend = ours.output.split()[-1]  # (nf_tables) or (legacy)
    assert theirs.output.split()[-1] == backend, f"firewall image: {theirs.output}; host: {ours.output}"
    size_mb = int((await _inspect("iexec-worker-firewall:0.1.0"))["Size"]) / 1e6  # type: ignore[call-overload]
    print(f"\nfirewall image: {theirs.output.strip()}, {size_mb:.0f} MB")


def _fresh(tmp_path: Path, name: str) -> Path:
    """A path that does not exist yet: Docker creates it, as root, as the source of a bind mount."""
    return tmp_path / name


def _used_by_root(tmp_path: Path) -> Path:
    folder = tmp_path / "used"
    folder.mkdir()
    (folder / "left-by-another-run").write_text("")
    return folder


def _wallet_dir(tmp_path: Path, *, readable_by_worker: bool, password: str = "right password") -> Path:
    folder = tmp_path / "wallet"
    create_wallet(folder / "wallet.json", SecretStr("right password"))
    (folder / "password").write_text(password)
    for path in (folder, folder / "wallet.json", folder / "password"):
        path.chmod(0o700 if path.is_dir() else 0o600)
        if readable_by_worker:
            os.chown(path, WORKER_UID, WORKER_UID)
    return folder


def _case(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """docker run options of each refused start, and the words of the fix the operator reads."""
    wallet_env = [
        "-e", "IEXEC_WORKER_WALLET_PATH=/run/wallet/wallet.json",
        "-e", "IEXEC_WORKER_WALLET_PASSWORD_FILE=/run/wallet/password",
        "-e", "POOL_ADDRESS=0x1111111111111111111111111111111111111111",
    ]  # fmt: skip

    def base(path: Path) -> list[str]:
        return ["-e", f"IEXEC_WORKER_BASE_DIR={path}", "-v", f"{path}:{path}"]

    if case == "no Docker socket":
        return [], "no Docker socket at /var/run/docker.sock: mount the host's socket"
    if case == "started as uid 10001 without the socket's group":
        return ["--user", f"{WORKER_UID}:{WORKER_UID}", "-v", SOCKET, *base(_fresh(tmp_path, "b"))], (
            "cannot use the Docker socket /var/run/docker.sock"
        )
    if case == "base dir inside the container":
        return ["-v", SOCKET], "IEXEC_WORKER_BASE_DIR=/var/lib/iexec-worker is not a directory of the host"
    if case == "base dir in use and owned by root":
        used = _used_by_root(tmp_path)
        return ["-v", SOCKET, *base(used)], f"IEXEC_WORKER_BASE_DIR={used} is not writable by uid 10001"
    if case == "no wallet mounted":
        return ["-v", SOCKET, *base(_fresh(tmp_path, "b")), *wallet_env], (
            "IEXEC_WORKER_WALLET_PATH=/run/wallet/wallet.json: no such file in the container: mount the wallet"
        )
    wallet = _wallet_dir(tmp_path, readable_by_worker=case == "wrong wallet password", password="wrong")
    options = ["-v", SOCKET, *base(_fresh(tmp_path, "b")), "-v", f"{wallet}:/run/wallet:ro", *wallet_env]
    if case == "wallet readable by root only":
        return options, "IEXEC_WORKER_WALLET_PATH=/run/wallet/wallet.json is not readable by uid 10001"
    assert case == "wrong wallet password"
    return options, "configuration error"  # the worker's own check, past the entry point, as uid 10001


@pytest.mark.parametrize(
    "case",
    [
        "no Docker socket",
        "started as uid 10001 without the socket's group",
        "base dir inside the container",
        "base dir in use and owned by root",
        "no wallet mounted",
        "wallet readable by root only",
        "wrong wallet password",
    ],
)
async def test_an_unusable_start_exits_2_with_the_fix_and_no_traceback(
    worker_image: WorkerImage, tmp_path: Path, case: str
) -> None:
    options, fix = await asyncio.to_thread(_case, tmp_path, case)
    started = await run(
        "docker", "run", "--rm", "--network", "none", *options, worker_image.tag, check=False, within=120
    )
    assert started.code == 2, started.output
    assert fix in started.output
    assert "Traceback" not in started.output
    fresh = tmp_path / "b"
    if fresh.exists() and case != "started as uid 10001 without the socket's group":
        # Docker created it for the mount, as root: the entry point gave it to the worker's user.
        assert fresh.stat().st_uid == WORKER_UID
