"""deploy/k8s/worker.yaml against the Kubernetes schema, and the promises its head makes.

The schema checks run offline, in this process, with kubernetes-validate (the OpenAPI schemas of
Kubernetes 1.25 to 1.37, strict: an unknown field fails). There is no cluster here: the tests marked e2e
run the init containers' scripts in the real worker image with the pod's user and read-only root, and
the README's `kubectl create secret` with `--dry-run=client`.
"""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml

from devnet.core.state import TaskStatus
from devnet.images import HELLO
from devnet.platform import Platform, buy
from tests.deploy.conftest import IMAGE_BUILD_TIMEOUT, WorkerImage
from tests.support import free_port, until
from tests.support.deploy import DEPLOY, WORKER_UID, AppNetwork, readme_command, required_tool, run

MANIFEST = DEPLOY / "k8s" / "worker.yaml"
VERSIONS = ("1.25", "1.37")  # the oldest and newest schemas bundled
SECRET_COMMAND = (
    "kubectl create secret generic iexec-worker-wallets "
    "--from-file=wallet-0.json=w0.json --from-file=password-0=w0.password"
)


def _documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def _kind(kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [doc for doc in _documents() if doc["kind"] == kind]
    assert len(found) == 1, f"{MANIFEST} has {len(found)} {kind}"
    return found[0]


def _pod() -> dict[str, Any]:
    pod: dict[str, Any] = _kind("StatefulSet")["spec"]["template"]["spec"]
    return pod


def _container(name: str, *, init: bool = False) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        c for c in _pod()["initContainers" if init else "containers"] if c["name"] == name
    ]
    assert len(found) == 1, f"{MANIFEST} has {len(found)} containers named {name}"
    return found[0]


def _validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_validates_against_the_kubernetes_schema(version: str) -> None:
    documents = _documents()
    assert {doc["kind"] for doc in documents} == {"ConfigMap", "Service", "StatefulSet"}
    for doc in documents:
        _validate(doc, version)


def _unknown_field(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 60


def _wrong_type(sts: dict[str, Any]) -> None:
    sts["spec"]["replicas"] = "one"


def _probe_without_handler(sts: dict[str, Any]) -> None:
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"path": "/livez"}}


@pytest.mark.parametrize("damage", [_unknown_field, _wrong_type, _probe_without_handler])
def test_a_damaged_manifest_fails_validation(damage: Any) -> None:
    sts = copy.deepcopy(_kind("StatefulSet"))
    damage(sts)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(sts, VERSIONS[-1])


def test_one_wallet_per_worker_by_construction() -> None:
    sts = _kind("StatefulSet")
    # A StatefulSet runs at most one pod per ordinal, and the ordinal picks the wallet.
    assert sts["kind"] == "StatefulSet"
    pod = _pod()
    (secret,) = [v for v in pod["volumes"] if "secret" in v]
    mounting = [
        c["name"]
        for c in pod["initContainers"] + pod["containers"]
        if any(m["name"] == secret["name"] for m in c.get("volumeMounts", []))
    ]
    assert mounting == ["wallet"], "only the wallet init container may see every worker's wallet"
    (own,) = [v for v in pod["volumes"] if v["name"] == "wallet"]
    assert own["emptyDir"]["medium"] == "Memory"
    script = _container("wallet", init=True)["command"][-1]
    assert '"/run/wallets/wallet-$n.json"' in script
    assert 'n="${POD_NAME##*-}"' in script
    env = {e["name"]: e.get("value") for e in _container("worker")["env"]}
    assert env["IEXEC_WORKER_WALLET_PATH"] == "/run/wallet/wallet.json"
    assert env["IEXEC_WORKER_NAME"] == "$(POD_NAME)"


def test_non_root_bounded_and_probed() -> None:
    pod = _pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == WORKER_UID
    assert pod["securityContext"]["supplementalGroups"], "the Docker socket's group"
    worker = _container("worker")
    assert worker["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for container in pod["initContainers"] + pod["containers"]:
        assert container["resources"]["requests"]["memory"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
    probes = {
        kind: worker[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    assert {p["name"] for p in worker["ports"]} == {worker["livenessProbe"]["httpGet"]["port"]}


def test_the_docker_socket_mount_says_what_containerd_only_nodes_need() -> None:
    (docker,) = [v for v in _pod()["volumes"] if v["name"] == "docker"]
    assert docker["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    head = MANIFEST.read_text().split("apiVersion", 1)[0]
    assert "containerd only" in head
    assert "Install\n# Docker Engine on the nodes you label" in head


# -- run for real: the init containers in the worker image, the README's secret command -------------


def _init_script(name: str) -> str:
    script: str = _container(name, init=True)["command"][-1]
    return script


async def _pod_like_run(image: str, *options: str, script: str) -> tuple[int, str]:
    """An init container's script in the image, with the pod's user, read-only root and no capability."""
    ran = await run(
        "docker", "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", *options, "--entrypoint", "/bin/sh", image, "-c", script,
        check=False, within=60,
    )  # fmt: skip
    return ran.code, ran.output


def _wallets(folder: Path, ordinals: list[int]) -> Path:
    folder.mkdir()
    for n in ordinals:
        (folder / f"wallet-{n}.json").write_text(f'{{"wallet": {n}}}')
        (folder / f"password-{n}").write_text(f"password {n}")
    for path in [folder, *folder.iterdir()]:
        os.chown(path, 0, WORKER_UID)  # as the kubelet mounts a Secret with fsGroup: root, group 10001
        path.chmod(0o750 if path.is_dir() else 0o440)
    return folder


@pytest.mark.e2e
@pytest.mark.timeout(IMAGE_BUILD_TIMEOUT)
async def test_the_wallet_init_container_copies_its_own_pair_and_names_a_missing_one(
    worker_image: WorkerImage, tmp_path: Path
) -> None:
    wallets = _wallets(tmp_path / "wallets", [0, 1])
    own = tmp_path / "own"
    own.mkdir()
    os.chown(own, WORKER_UID, WORKER_UID)
    options = [
        "--user",
        f"{WORKER_UID}:{WORKER_UID}",
        "-v",
        f"{wallets}:/run/wallets:ro",
        "-v",
        f"{own}:/run/wallet",
    ]
    code, output = await _pod_like_run(
        worker_image.tag, *options, "-e", "POD_NAME=iexec-worker-1", script=_init_script("wallet")
    )
    assert code == 0, output
    assert sorted(p.name for p in own.iterdir()) == ["password", "wallet.json"]
    assert (own / "wallet.json").read_text() == '{"wallet": 1}'
    assert (own / "password").read_text() == "password 1"

    code, output = await _pod_like_run(
        worker_image.tag, *options, "-e", "POD_NAME=iexec-worker-2", script=_init_script("wallet")
    )
    assert code == 2
    assert "no key wallet-2.json in the Secret iexec-worker-wallets" in output


@pytest.mark.e2e
@pytest.mark.timeout(IMAGE_BUILD_TIMEOUT)
async def test_the_base_dir_init_container_gives_a_new_folder_to_the_worker_and_leaves_a_used_one(
    worker_image: WorkerImage, tmp_path: Path
) -> None:
    script = _init_script("base-dir")
    for name, used in (("new", False), ("used", True)):
        folder = tmp_path / name
        folder.mkdir()
        if used:
            (folder / "someone-else's").write_text("")
        options = ["--user", "0", "--cap-add", "CHOWN", "-v", f"{folder}:/var/lib/iexec-worker"]
        code, output = await _pod_like_run(worker_image.tag, *options, script=script)
        assert code == 0, output
        assert folder.stat().st_uid == (0 if used else WORKER_UID), name


@pytest.mark.e2e
async def test_the_readme_secret_command_makes_the_keys_pod_0_reads(tmp_path: Path) -> None:
    (tmp_path / "w0.json").write_text('{"address": "0"}')
    (tmp_path / "w0.password").write_text("password 0")
    made = await run(
        required_tool("kubectl"), *readme_command(SECRET_COMMAND).split()[1:], "--dry-run=client", "-o", "yaml",
        cwd=tmp_path,
    )  # fmt: skip
    secret = yaml.safe_load(made.output)
    _validate(secret, VERSIONS[-1])
    (volume,) = [v for v in _pod()["volumes"] if "secret" in v]
    assert secret["metadata"]["name"] == volume["secret"]["secretName"]
    assert set(secret["data"]) == {"wallet-0.json", "password-0"}


def _pod_environment(replacements: dict[str, str]) -> dict[str, str]:
    """The worker container's environment as the kubelet gives it to pod iexec-worker-0."""
    config: dict[str, str] = dict(_kind("ConfigMap")["data"])
    env = {**config}
    for item in _container("worker")["env"]:
        env[item["name"]] = item.get("value", "iexec-worker-0")  # the one fieldRef: the pod's name
    env = {name: value.replace("$(POD_NAME)", env["POD_NAME"]) for name, value in env.items()}
    for name, value in replacements.items():
        assert name in env, f"the worker container no longer sets {name}"
        env[name] = value
    return env


@pytest.mark.e2e
@pytest.mark.timeout(IMAGE_BUILD_TIMEOUT)
async def test_a_worker_with_the_pods_security_context_joins_and_completes_a_task(
    worker_image: WorkerImage, platform: Platform, tmp_path: Path
) -> None:
    """The worker container as the manifest runs it, on Docker: its user and group, read-only root,
    no capability, the socket's group as a supplementary group, its volumes and its environment."""
    pod = _pod()
    security = {**pod["securityContext"], **_container("worker")["securityContext"]}
    assert security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    name = f"e2e-{uuid.uuid4().hex[:8]}-pod"
    base, state, wallet = tmp_path / "base", tmp_path / "state", tmp_path / "wallet"
    devnet_wallet = platform.workers[0]
    for folder in (base, state, wallet):
        folder.mkdir()
        os.chown(folder, WORKER_UID, WORKER_UID)  # the init container, fsGroup, the wallet init container
    for source, target in (
        (devnet_wallet.keystore, "wallet.json"),
        (devnet_wallet.password_file, "password"),
    ):
        shutil.copy(source, wallet / target)
        os.chown(wallet / target, WORKER_UID, WORKER_UID)
        (wallet / target).chmod(0o400)
    info = platform.info()
    env = _pod_environment({
        "IEXEC_CORE_URL": info.scheduler_url, "POOL_ADDRESS": info.workerpool, "IEXEC_WORKER_NAME": name,
        "IEXEC_WORKER_BASE_DIR": str(base), "IEXEC_WORKER_HTTP_HOST": "127.0.0.1",
        "IEXEC_WORKER_PORT": str(free_port()),
    })  # fmt: skip
    # Apps on an isolated network of the worker's own, its rules installed by the ConfigMap's firewall image.
    apps = AppNetwork(f"{name}-apps")
    env["IEXEC_WORKER_DOCKER_NETWORK_NAME"] = apps.name
    env["IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT"] = "1"
    # anvil mines only for transactions: a receipt counts in its own block, as the devnet's workers do.
    env["IEXEC_WORKER_TX_CONFIRMATIONS"] = "1"
    mounts = {m["name"]: m["mountPath"] for m in _container("worker")["volumeMounts"]}
    socket_gid = (await asyncio.to_thread(os.stat, "/var/run/docker.sock")).st_gid
    options = [
        "--name", name, "--network", "host", "--user", f"{security['runAsUser']}:{security['runAsGroup']}",
        "--group-add", str(socket_gid), "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--tmpfs", mounts["tmp"],
        "-v", f"/var/run/docker.sock:{mounts['docker']}", "-v", f"{base}:{base}",
        "-v", f"{state}:{mounts['state']}", "-v", f"{wallet}:{mounts['wallet']}:ro",
    ]  # fmt: skip
    for key, value in env.items():
        options += ["-e", f"{key}={value}"]
    await run("docker", "run", "-d", *options, worker_image.tag, *_container("worker")["args"])
    try:

        def joined() -> bool:
            record = next((w for w in platform.scheduler.state.workers.values() if w.name == name), None)
            return record is not None and record.registered

        await until(joined, within=60, every=0.2, what="the pod-like worker joined")
        # The kubelet's probes, by the manifest's paths: live, and ready once joined.
        worker = _container("worker")
        port = env["IEXEC_WORKER_PORT"]
        async with aiohttp.ClientSession() as session:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):

                async def answers(path: str = worker[probe]["httpGet"]["path"]) -> bool:
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        return response.status == 200

                await until(answers, within=30, every=0.5, what=f"the {probe} answers 200")
        purchase = await buy(info, image=HELLO.tag, args="pod")
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED, within=120, every=0.2,
            what=f"{task_id} COMPLETED by the pod-like worker",
        )  # fmt: skip
        assert (state / "iexec-worker-0.sqlite3").exists(), "the journal is on the state volume"
        assert "-d 169.254.0.0/16 -j REJECT" in await apps.rules(), "no app network rules on the host"
        logs = await run("docker", "logs", name)
        assert f"isolated (helper container of {env['IEXEC_WORKER_FIREWALL_IMAGE']})" in logs.output
    finally:
        logs = await run("docker", "logs", name, check=False)
        await asyncio.to_thread((tmp_path / "worker.log").write_text, logs.output)
        await run("docker", "rm", "-f", name, check=False)
        await apps.remove()
