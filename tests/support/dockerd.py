"""A Docker engine of the test's own, which the test may stop, kill and restart.

The system dockerd is shared by every test on the machine and is never stopped; a test that injects an
engine fault runs its worker against this one instead (``DOCKER_HOST=<its socket>``). Everything it
holds is its own: a data root, an exec root, a pid file, a socket, a configuration file (an empty
object, so ``/etc/docker/daemon.json`` is not read), containerd namespaces, and a Linux bridge
``dkd<hex>`` on a /24 of 10.176.0.0/13 picked under a file lock so parallel runs differ. It never names
``docker0`` nor touches iptables (``--iptables=false`` and the rest): dockerd deletes or readdresses
docker0 when started with ``--bridge=none`` or an address pool, which breaks the system engine for
everyone. ``tests/support/hostnet.py`` checks after each start that the host's Docker networking is
unchanged.

Images come from the system engine by ``docker save | docker load``, which keeps their ids (the apps'
on-chain checksums are those ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support import until
from tests.support.hostnet import HostNet

POOL = ipaddress.IPv4Network("10.176.0.0/13")
LOCK = Path("/tmp/iexec-test-dockerd.lock")
START_WITHIN = 120.0
"""Seconds a (re)start may take on a shared, loaded machine."""


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for command in (["ip", "-j", "-4", "addr"], ["ip", "-j", "-4", "route"]):
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        for entry in json.loads(out or "[]"):
            for info in entry.get("addr_info", []):
                used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
            dst = entry.get("dst")
            if dst and dst != "default":
                used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return [network for network in used if isinstance(network, ipaddress.IPv4Network)]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


def create_bridge(name: str) -> ipaddress.IPv4Network:
    """Create ``name`` on the first /24 of ``POOL`` no interface or route uses; the lock keeps runs apart."""
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _used_networks()
        for subnet in POOL.subnets(new_prefix=24):
            if not any(subnet.overlaps(other) for other in used):
                break
        else:
            raise RuntimeError(f"no free /24 left in {POOL} for a test bridge")
        _ip("link", "add", name, "type", "bridge")
        try:
            _ip("addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", name)
            _ip("link", "set", name, "up")
        except subprocess.CalledProcessError:
            _ip("link", "delete", name)
            raise
        return subnet


class Dockerd:
    """One private dockerd. ``start()``, ``stop(kill=...)`` and ``start()`` again on the same data root."""

    def __init__(self, root: Path, guard: HostNet) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.bridge = f"dkd{self.tag}"
        # Short paths: the exec root holds unix sockets, whose paths are limited to 108 bytes.
        self.root = Path(f"/tmp/dkd-{self.tag}")
        self.log = root / "dockerd.log"
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.namespace = f"dkd-{self.tag}"
        self._guard = guard
        self._process: asyncio.subprocess.Process | None = None
        self.subnet: ipaddress.IPv4Network | None = None

    def _command(self) -> list[str]:
        config = self.root / "daemon.json"
        return [
            "dockerd",
            f"--bridge={self.bridge}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"-H={self.host}",
            f"--config-file={config}",
            f"--containerd-namespace={self.namespace}",
            f"--containerd-plugins-namespace={self.namespace}-plugins",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
        ]

    async def start(self) -> None:
        if self.subnet is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "daemon.json").write_text("{}\n")
            self.subnet = await asyncio.to_thread(create_bridge, self.bridge)
        with self.log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._command(), stdout=log, stderr=log, start_new_session=True
            )
        await until(
            self.answers, within=START_WITHIN, every=0.2, what=f"private dockerd {self.host} answering"
        )
        await asyncio.to_thread(self._guard.check, f"after starting the private dockerd {self.bridge}")

    async def answers(self) -> bool:
        if self._process is not None and self._process.returncode is not None:
            raise AssertionError(f"private dockerd exited {self._process.returncode}: {self.log_tail()}")
        code, _ = await self.cli("version", "--format", "{{.Server.Version}}", check=False)
        return code == 0

    async def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (dockerd stops its containers, as a service restart does) or SIGKILL of dockerd and the
        containerd it started (a crash of the service: the containers' shims live on, as they do then)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        if kill:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), START_WITHIN)
        self._process = None
        if kill:
            # The killed containerd may linger as a zombie nobody reaps here, and dockerd would wait for it
            # by its pid file: once it is dead, its pid file goes, as a service manager would clean up.
            await until(self._containerd_dead, within=START_WITHIN, every=0.1, what="killed containerd gone")
            (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def _containerd_dead(self) -> bool:
        try:
            pid = int((self.root / "exec" / "containerd" / "containerd.pid").read_text().strip())
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return True
        return state in ("Z", "X")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    async def cli(self, *args: str, check: bool = True, stdin: bytes | None = None) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            "docker", "-H", self.host, *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate(stdin)
        text = output.decode(errors="replace")
        if check and process.returncode != 0:
            raise AssertionError(f"docker -H {self.host} {' '.join(args)} failed: {text}")
        return process.returncode or 0, text

    async def copy_images(self, *images: str) -> None:
        """``docker save`` from the system engine into ``docker load`` here: same image ids."""
        for image in images:
            save = await asyncio.create_subprocess_exec(
                "docker", "save", image, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            data, error = await save.communicate()
            assert save.returncode == 0, f"docker save {image}: {error.decode()}"
            await self.cli("load", stdin=data)

    async def containers(self) -> list[str]:
        _, out = await self.cli("ps", "-a", "--format", "{{.Names}}")
        return [line for line in out.splitlines() if line]

    async def teardown(self) -> None:
        """Remove its containers and networks, stop it, delete the bridge, its containerd namespaces and folders.

        The bridge and the folders go whatever happened before: a failed start leaks nothing."""
        try:
            if not self.running and self.subnet is not None:
                # Started again only to remove what it holds through its own API.
                with contextlib.suppress(Exception):
                    await self.start()
            if self.running:
                _, names = await self.cli("ps", "-aq", check=False)
                if names.split():
                    await self.cli("rm", "-f", *names.split(), check=False)
                await self.cli("network", "prune", "-f", check=False)
                await self.stop()
        finally:
            if self.running:
                with contextlib.suppress(Exception):
                    await self.stop(kill=True)
            await asyncio.to_thread(self._remove_leftovers)

    def _remove_leftovers(self) -> None:
        for namespace in (self.namespace, f"{self.namespace}-plugins"):
            ctr = [
                "ctr",
                "--address",
                str(self.root / "exec" / "containerd" / "containerd.sock"),
                "-n",
                namespace,
            ]
            subprocess.run([*ctr, "namespaces", "remove", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        # A killed engine leaves its mounts (overlay layers, shm) under its roots: unmount before deleting.
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.root))), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.asynccontextmanager
async def private_dockerd(root: Path, *images: str) -> AsyncIterator[Dockerd]:
    """A started private engine holding ``images``, removed with everything it made at the end."""
    guard = await asyncio.to_thread(HostNet.record)
    engine = Dockerd(root, guard)
    try:
        await engine.start()
        await engine.copy_images(*images)
        yield engine
    finally:
        await engine.teardown()
        await asyncio.to_thread(guard.check, "after the private dockerd was removed")
        assert not await asyncio.to_thread(engine.root.exists), f"{engine.root} left behind"
