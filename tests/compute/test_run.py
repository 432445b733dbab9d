"""End-to-end tests of container runs on the real Docker engine, with the devnet busybox images."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devnet.images import CHATTY, ENV, FAIL, HELLO, SHELL, SLEEP
from tests.support import until
from tests.support.docker import container_exists, docker_cli
from worker.compute import (
    Bind,
    ContainerError,
    ContainerSpec,
    DockerEngine,
    app_environment,
    split_args,
    task_labels,
)

pytestmark = pytest.mark.e2e

TASK = "0x" + "cd" * 32


def task_dirs(tmp_path: Path) -> tuple[Path, Path, tuple[Bind, ...]]:
    input_dir, output_dir = tmp_path / "input", tmp_path / "output" / "iexec_out"
    input_dir.mkdir(parents=True)
    output_dir.mkdir(parents=True)
    return (
        input_dir,
        output_dir,
        (Bind(input_dir, "/iexec_in", read_only=True), Bind(output_dir, "/iexec_out")),
    )


async def test_hello_writes_its_result_and_the_container_is_removed(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    _, output_dir, binds = task_dirs(tmp_path)
    spec = ContainerSpec(
        name=unique,
        image=HELLO.tag,
        timeout=30,
        cmd=tuple(split_args("iExec 'big world'")),
        binds=binds,
        env={"IEXEC_TASK_ID": TASK},
    )

    result = await engine.run(spec)

    assert (result.exit_code, result.timed_out) == (0, False)
    assert (output_dir / "result.txt").read_text() == "Hello, iExec big world!\n"
    assert (
        output_dir / "computed.json"
    ).read_text() == '{"deterministic-output-path":"/iexec_out/result.txt"}\n'
    assert result.stdout == f"hello: wrote /iexec_out/result.txt for task {TASK}\n"
    assert result.stderr == ""
    assert 0 <= result.duration < 30
    assert not await container_exists(unique)


async def test_app_sees_the_iexec_environment_and_its_arguments(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    _, output_dir, binds = task_dirs(tmp_path)
    env = app_environment(
        deal_id="0x" + "ab" * 32,
        chain_task_id=TASK,
        task_index=3,
        bot_size=4,
        bot_first_index=0,
        input_file_urls=["http://127.0.0.1:1/a.txt"],
    )

    result = await engine.run(
        ContainerSpec(
            name=unique,
            image=ENV.tag,
            timeout=30,
            binds=binds,
            env=env,
            cmd=tuple(split_args("--size 3 'two words' ''")),
        )
    )

    assert result.exit_code == 0
    seen = dict(line.split("=", 1) for line in (output_dir / "env.txt").read_text().splitlines())
    assert {key: seen.get(key) for key in env} == env
    assert (output_dir / "args.txt").read_text().splitlines() == ["--size", "3", "two words", ""]


async def test_non_zero_exit_is_reported_with_stderr(engine: DockerEngine, unique: str) -> None:
    result = await engine.run(ContainerSpec(name=unique, image=FAIL.tag, timeout=30))

    assert (result.exit_code, result.timed_out) == (3, False)
    assert result.stderr == "fail: exiting with code 3 on purpose\n"
    assert not await container_exists(unique)


async def test_timeout_kills_the_container_and_reports_it(engine: DockerEngine, unique: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await engine.run(ContainerSpec(name=unique, image=SLEEP.tag, timeout=1.0, cmd=("120",)))

    assert result.timed_out
    assert result.exit_code == 137  # SIGKILL
    assert result.stdout == "sleep: sleeping 120s\n"
    assert loop.time() - started < 15
    assert 1.0 <= result.duration < 15
    assert not await container_exists(unique)


async def test_logs_keep_only_the_last_100000_characters(engine: DockerEngine, unique: str) -> None:
    result = await engine.run(ContainerSpec(name=unique, image=CHATTY.tag, timeout=30, cmd=("30000", "50")))

    full_stdout = "".join(f"{number}\n" for number in range(1, 30001))
    assert len(full_stdout) > 100_000
    assert result.stdout == full_stdout[-100_000:]
    assert result.stderr == "".join(f"{number}\n" for number in range(1, 51))


async def test_resource_limits_are_applied(engine: DockerEngine, unique: str) -> None:
    # cgroup v1 paths first, then v2: the container sees its own cgroup either way.
    script = (
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; "
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; "
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max"
    )
    spec = ContainerSpec(
        name=unique,
        image=SHELL.tag,
        timeout=30,
        cmd=(script,),
        memory_bytes=64 * 2**20,
        pids_limit=32,
        nano_cpus=500_000_000,
    )

    result = await engine.run(spec)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [str(64 * 2**20), "32", "50000"]  # half of the 100 ms CFS period


async def test_pids_limit_stops_a_process_flood(engine: DockerEngine, unique: str) -> None:
    script = "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo spawned all"
    result = await engine.run(
        ContainerSpec(name=unique, image=SHELL.tag, timeout=30, cmd=(script,), pids_limit=8)
    )

    assert "spawned all" not in result.stdout
    assert "can't fork" in result.stderr
    assert result.exit_code != 0
    assert not await container_exists(unique)


async def test_container_has_no_privileges_and_no_network_when_isolated(
    engine: DockerEngine, unique: str
) -> None:
    script = (
        "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; ls /sys/class/net; touch /rootfs-write || true"
    )
    spec = ContainerSpec(
        name=unique, image=SHELL.tag, timeout=30, cmd=(script,), network="none", read_only_rootfs=True
    )

    result = await engine.run(spec)

    lines = result.stdout.split()
    assert lines[:4] == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1"]
    assert lines[4:] == ["lo"]
    assert "Read-only file system" in result.stderr


async def test_cancellation_removes_the_running_container(engine: DockerEngine, unique: str) -> None:
    run = asyncio.create_task(engine.run(ContainerSpec(name=unique, image=SLEEP.tag, timeout=60)))
    await until(lambda: container_exists(unique), within=20, what=f"container {unique} created")

    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert not await container_exists(unique)


async def test_a_leftover_container_with_the_same_name_is_replaced(engine: DockerEngine, unique: str) -> None:
    await docker_cli("create", "--name", unique, SLEEP.tag)

    result = await engine.run(ContainerSpec(name=unique, image=FAIL.tag, timeout=30, cmd=("5",)))

    assert result.exit_code == 5
    assert not await container_exists(unique)


async def test_missing_image_is_a_container_error(engine: DockerEngine, unique: str) -> None:
    with pytest.raises(ContainerError, match="not present locally"):
        await engine.run(ContainerSpec(name=unique, image=f"{unique}/absent:1", timeout=30))
    assert not await container_exists(unique)


async def test_remove_labelled_removes_only_this_workers_containers(
    engine: DockerEngine, unique: str
) -> None:
    mine = [f"{unique}-a", f"{unique}-b"]
    other = f"{unique}-other"
    for name in mine:
        labels = task_labels(unique, name)
        await docker_cli(
            "run", "-d", "--name", name, *[f"--label={k}={v}" for k, v in labels.items()], SLEEP.tag
        )
    await docker_cli("create", "--name", other, "--label", f"iexec-worker={unique}-x", SLEEP.tag)
    try:
        removed = await engine.remove_labelled(unique)

        assert sorted(removed) == sorted(mine)
        assert [await container_exists(name) for name in mine] == [False, False]
        assert await container_exists(other)
    finally:
        await docker_cli("rm", "-f", other, *mine, check=False)


async def test_stop_and_remove_reports_whether_a_container_existed(engine: DockerEngine, unique: str) -> None:
    await docker_cli("run", "-d", "--name", unique, SLEEP.tag)

    assert await engine.stop_and_remove(unique) is True
    assert not await container_exists(unique)
    assert await engine.stop_and_remove(unique) is False


async def test_user_and_named_network_are_applied(engine: DockerEngine, unique: str) -> None:
    network = f"{unique}-net"
    spec = ContainerSpec(
        name=unique,
        image=SHELL.tag,
        timeout=30,
        cmd=("id -u; id -g; ls /sys/class/net",),
        user="1000:1000",
        network=network,
    )
    try:
        result = await engine.run(spec)

        assert result.stdout.split() == ["1000", "1000", "eth0", "lo"]
        _, driver = await docker_cli("network", "inspect", "--format", "{{.Driver}}", network)
        assert driver.strip() == "bridge"
    finally:
        await docker_cli("network", "rm", network, check=False)
