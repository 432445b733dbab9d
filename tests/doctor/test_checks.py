"""The doctor's checks driven by fakes of its ports (unit tests: no service, no process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.doctor.fakes import GWEI, NOW, POOL, RLC, WALLET, Machine
from worker import __version__
from worker.doctor import Doctor, DoctorSettings, Report, Result

SETTINGS = DoctorSettings(
    pool=POOL, core_url="http://127.0.0.1:13000", base_dir=Path("/var/lib/iexec-worker"),
    wallet_path=Path("/secure/wallet.json"), password_file=Path("/secure/password"), slots=3,
    slots_overridden=False, gas_price_cap=22 * GWEI, sgx_driver_mode="NONE",
)  # fmt: skip


async def run(machine: Machine, **changes: object) -> Report:
    settings = DoctorSettings(**{**SETTINGS.__dict__, **changes})
    return await Doctor(settings, machine.ports()).run()


def by_name(report: Report) -> dict[str, tuple[Result, str, str]]:
    return {c.name: (c.result, c.summary, c.fix) for c in report.checks}


async def test_a_ready_machine_passes_every_check_and_exits_0() -> None:
    report = await run(Machine())
    results = {name: result for name, (result, _, _) in by_name(report).items()}
    assert results == {
        "cpu": Result.PASS, "docker": Result.PASS, "disk": Result.PASS, "wallet": Result.PASS,
        "scheduler": Result.PASS, "version": Result.PASS, "node": Result.PASS, "eth": Result.PASS,
        "stake": Result.PASS, "sgx": Result.SKIP, "clock": Result.PASS,
    }  # fmt: skip
    assert report.exit_code == 0
    assert report.worst is Result.PASS


async def test_the_container_check_is_bounded_and_offline() -> None:
    machine = Machine()
    await run(machine)
    (spec,) = machine.docker.runs
    assert spec.image == "busybox:stable"
    assert (spec.memory_bytes, spec.pids_limit, spec.network) == (64 * 1024**2, 32, "none")
    assert spec.nano_cpus == 500_000_000


async def test_no_image_to_test_with_says_how_to_get_one() -> None:
    machine = Machine()
    machine.docker.images.clear()
    result, summary, fix = by_name(await run(machine))["docker"]
    assert result is Result.WARN
    assert "busybox:stable is not on this machine" in summary
    assert fix.startswith("`docker pull busybox:stable`")


async def test_an_unreachable_docker_fails_with_the_fix() -> None:
    report = await run(Machine(docker_down=True))
    result, _, fix = by_name(report)["docker"]
    assert result is Result.FAIL
    assert "start dockerd" in fix
    assert report.exit_code == 2


async def test_a_container_that_fails_is_a_failure() -> None:
    machine = Machine()
    machine.docker.exit_code = 125
    assert by_name(await run(machine))["docker"][0] is Result.FAIL


@pytest.mark.parametrize(
    ("cpus", "slots", "overridden", "expected"),
    [
        (1, 1, False, Result.FAIL),
        (1, 1, True, Result.WARN),
        (4, 8, True, Result.WARN),
        (4, 3, False, Result.PASS),
    ],
)
async def test_cpus_and_slots(cpus: int, slots: int, overridden: bool, expected: Result) -> None:
    machine = Machine()
    machine.host.cpus = cpus
    assert by_name(await run(machine, slots=slots, slots_overridden=overridden))["cpu"][0] is expected


async def test_disk_unwritable_low_and_short() -> None:
    machine = Machine()
    machine.host.blocked = "/var/lib/iexec-worker belongs to uid 0 and is not writable by uid 1000"
    result, summary, fix = by_name(await run(machine))["disk"]
    assert result is Result.FAIL
    assert "IEXEC_WORKER_BASE_DIR=/var/lib/iexec-worker" in summary
    assert "chown" in fix
    machine.host.blocked, machine.host.free = None, 512 * 1024**2
    assert by_name(await run(machine))["disk"][0] is Result.FAIL
    machine.host.free = 20 * 1024**3  # 3 slots x (10 GiB + 256 MiB) wanted
    assert by_name(await run(machine))["disk"][0] is Result.WARN


async def test_a_wrong_password_fails_with_the_fix_and_skips_what_needs_the_wallet() -> None:
    machine = Machine()
    machine.wallet.error = "IEXEC_WORKER_WALLET_PASSWORD: wrong password for the keystore x; fix the password"
    checks = by_name(await run(machine))
    assert checks["wallet"] == (
        Result.FAIL,
        "IEXEC_WORKER_WALLET_PASSWORD: wrong password for the keystore x",
        "fix the password",
    )
    assert checks["eth"][0] is Result.SKIP
    assert checks["stake"][0] is Result.SKIP


async def test_a_keystore_readable_by_others_fails_as_the_worker_refuses_it() -> None:
    machine = Machine()
    machine.host.modes[Path("/secure/wallet.json")] = 0o644
    result, _, fix = by_name(await run(machine))["wallet"]
    assert result is Result.FAIL
    assert fix == "chmod 600 /secure/wallet.json"


async def test_a_scheduler_that_is_down_skips_the_chain_checks() -> None:
    machine = Machine()
    machine.scheduler.down = True
    checks = by_name(await run(machine))
    assert checks["scheduler"][0] is Result.FAIL
    assert "IEXEC_CORE_URL" in checks["scheduler"][2]
    assert {checks[n][0] for n in ("version", "node", "eth", "stake", "clock")} == {Result.SKIP}


async def test_a_scheduler_of_another_pool_fails() -> None:
    machine = Machine()
    machine.scheduler.pool = "0x" + "99" * 20
    result, summary, fix = by_name(await run(machine))["scheduler"]
    assert result is Result.FAIL
    assert f"serves workerpool {'0x' + '99' * 20}, not {POOL}" in summary
    assert "POOL_ADDRESS" in fix


async def test_a_refused_wallet_and_a_required_version() -> None:
    machine = Machine()
    machine.scheduler.refuse_login = True
    machine.scheduler.required_version = "99.0.0"
    checks = by_name(await run(machine))
    assert checks["scheduler"][0] is Result.FAIL
    assert "401 wallet not allowed" in checks["scheduler"][1]
    assert checks["version"] == (
        Result.FAIL,
        "the scheduler requires worker version 99.0.0, this worker behaves as iexec-worker 9.2.0",
        "run a worker of version 99.0.0, or set IEXEC_WORKER_PROTOCOL_VERSION if this one implements it",
    )


async def test_the_version_a_pool_requires_is_the_iexec_worker_release_this_worker_behaves_as() -> None:
    machine = Machine()
    machine.scheduler.required_version = "9.2.0"
    assert by_name(await run(machine))["version"][0] is Result.PASS
    machine.scheduler.required_version = __version__
    assert by_name(await run(machine))["version"][0] is Result.FAIL


async def test_a_node_on_another_chain_fails_and_the_operator_nodes_come_first() -> None:
    machine = Machine()
    machine.chain.chain = 1
    checks = by_name(await run(machine, node_urls=["http://127.0.0.1:9999"]))
    assert machine.nodes_asked == [["http://127.0.0.1:9999"]]
    assert checks["node"][0] is Result.FAIL
    assert "IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS" in checks["node"][2]
    assert checks["eth"][0] is Result.SKIP


async def test_eth_below_one_transaction_at_the_cap_fails_naming_the_address() -> None:
    machine = Machine()
    machine.chain.eth_wei = 10**15  # 0.001 ETH < 1,000,000 gas x 22 gwei
    result, summary, fix = by_name(await run(machine))["eth"]
    assert result is Result.FAIL
    assert "OUT_OF_GAS" in summary
    # 10 x 600,000 gas x 2 gwei = 0.012 ETH, but never below the floor of 0.022; less the 0.001 held
    assert fix == f"send at least 0.021 ETH to {WALLET}"


async def test_eth_for_fewer_contributions_than_asked_is_a_warning() -> None:
    machine = Machine()
    machine.chain.eth_wei = 25 * 10**15  # above the floor (0.022), below 100 x 600,000 x 2 gwei = 0.12
    result, summary, _ = by_name(await run(machine, contributions=100))["eth"]
    assert result is Result.WARN
    assert "20 contribution(s) at 2 gwei" in summary


async def test_gas_is_free_on_a_sidechain() -> None:
    machine = Machine()
    machine.scheduler.sidechain = True
    machine.chain.eth_wei = 0
    assert by_name(await run(machine))["eth"][0] is Result.PASS


@pytest.mark.parametrize(
    ("stake", "expected", "fix"),
    [
        (0, Result.FAIL, "deposit 1.8 RLC: iexec-worker account deposit 1.8"),
        (RLC, Result.WARN, "deposit 0.8 RLC more: iexec-worker account deposit 0.8"),
        (2 * RLC, Result.PASS, ""),
    ],
)
async def test_stake_against_the_pool_recent_deals_one_task_per_slot(
    stake: int, expected: Result, fix: str
) -> None:
    machine = Machine()
    machine.chain.stake = stake
    result, summary, got_fix = by_name(await run(machine))["stake"]
    assert result is expected
    assert "lock up to 0.6 RLC per task" in summary
    assert got_fix.startswith(fix)


async def test_stake_without_recent_deals() -> None:
    machine = Machine()
    machine.chain.deals = []
    machine.chain.stake = 0
    result, summary, _ = by_name(await run(machine))["stake"]
    assert result is Result.FAIL
    assert "30 % of its price" in summary
    machine.chain.stake = 5 * RLC
    assert by_name(await run(machine))["stake"][0] is Result.WARN


async def test_sgx_is_checked_only_when_tee_is_on() -> None:
    machine = Machine()
    assert by_name(await run(machine, sgx_driver_mode=None))["sgx"] == (
        Result.SKIP, "this worker has no TEE setting: SGX is not checked", ""
    )  # fmt: skip
    result, summary, _ = by_name(await run(machine, sgx_driver_mode="NATIVE"))["sgx"]
    assert result is Result.FAIL
    assert "/dev/sgx_enclave or /dev/sgx/enclave" in summary
    machine.host.devices = {Path("/dev/sgx/enclave"), Path("/dev/sgx_provision")}
    assert by_name(await run(machine, sgx_driver_mode="NATIVE"))["sgx"][0] is Result.PASS
    machine.host.devices = {Path("/dev/isgx")}
    assert by_name(await run(machine, sgx_driver_mode="LEGACY"))["sgx"][0] is Result.FAIL  # no module version


@pytest.mark.parametrize(
    ("block_at", "expected"),
    [(NOW - 4, Result.PASS), (NOW + 60, Result.WARN), (NOW + 600, Result.FAIL), (NOW - 3600, Result.WARN)],
)
async def test_clock_against_the_latest_block(block_at: float, expected: Result) -> None:
    machine = Machine()
    machine.chain.block_at = block_at
    result, _, fix = by_name(await run(machine))["clock"]
    assert result is expected
    assert (fix == "") is (expected is Result.PASS)


def test_report_lines_put_the_fix_under_its_check_and_json_names_the_worst() -> None:
    from worker.doctor import Check

    report = Report([Check("cpu", Result.PASS, "4 CPUs"), Check("eth", Result.FAIL, "0 ETH", "send 1 ETH")])
    assert report.lines() == ["PASS  cpu  4 CPUs", "FAIL  eth  0 ETH", "           fix: send 1 ETH"]
    assert report.to_json()["worst"] == "FAIL"
    assert report.to_json()["exitCode"] == 2
