"""End to end: the operator's commands against a real platform (anvil + PoCo, the development scheduler,
Docker): ``doctor`` on a ready worker and on an unfunded wallet, and ``account`` deposit and withdraw
through the real contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from devnet.images import HELLO
from devnet.platform import Platform, buy, worker_env, write_env_file
from tests.support.operator import ETH, RLC, iexec_worker, rlc_in_wallet, send_eth, send_rlc
from worker.chain import GAS_LIMIT_CAP
from worker.wallet import create_wallet

pytestmark = pytest.mark.e2e

PASSWORD = "operator-test-password"


def fresh_wallet_env(platform: Platform, base: Path) -> tuple[Path, str]:
    """A new wallet (no ETH, no RLC) and the .env of a worker of the devnet pool using it."""
    password = base / "wallet.password"
    password.parent.mkdir(parents=True, exist_ok=True)
    password.write_text(PASSWORD)
    password.chmod(0o600)
    wallet = base / "wallet.json"
    address = create_wallet(wallet, SecretStr(PASSWORD))
    env = worker_env(platform.info(), 0, base)
    env.update(IEXEC_WORKER_WALLET_PATH=str(wallet), IEXEC_WORKER_WALLET_PASSWORD_FILE=str(password))
    return write_env_file(base / ".env", env), address


async def test_doctor_passes_every_check_of_a_funded_worker(platform: Platform, tmp_path: Path) -> None:
    await buy(platform.info(), image=HELLO.tag, args="doctor")  # the pool has a recent deal to price stakes
    env_file = write_env_file(tmp_path / ".env", worker_env(platform.info(), 0, tmp_path))

    result = await iexec_worker("doctor", "--env-file", str(env_file), "--image", HELLO.tag, "--json")

    report = json.loads(result.stdout)
    results = {c["name"]: c["result"] for c in report["checks"]}
    assert results == {
        "cpu": "PASS", "docker": "PASS", "disk": "PASS", "wallet": "PASS", "scheduler": "PASS",
        "version": "PASS", "node": "PASS", "eth": "PASS", "stake": "PASS", "sgx": "SKIP", "clock": "PASS",
    }, report  # fmt: skip
    assert result.code == 0
    sgx = next(c for c in report["checks"] if c["name"] == "sgx")
    assert "IEXEC_WORKER_SGX_DRIVER_MODE=NONE" in sgx["summary"]
    stake = next(c for c in report["checks"] if c["name"] == "stake")
    assert "0.6 RLC per task" in stake["summary"]  # workerpool price 2 RLC x the pool's 30 %

    text = await iexec_worker("doctor", "--env-file", str(env_file), "--image", HELLO.tag)
    assert text.code == 0
    assert "PASS  docker" in text.stdout
    assert "worst: PASS" in text.stdout


async def test_doctor_fails_an_unfunded_wallet_and_says_how_to_fund_it(
    platform: Platform, tmp_path: Path
) -> None:
    env_file, address = fresh_wallet_env(platform, tmp_path)

    result = await iexec_worker("doctor", "--env-file", str(env_file), "--image", HELLO.tag, "--json")

    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert result.code == 2
    assert report["worst"] == "FAIL"
    assert checks["eth"]["result"] == "FAIL"
    assert f"to {address}" in checks["eth"]["fix"]
    assert checks["eth"]["fix"].startswith("send at least ")
    assert checks["stake"]["result"] == "FAIL"
    assert "iexec-worker account deposit" in checks["stake"]["fix"]
    assert checks["wallet"]["result"] == "PASS"  # the wallet itself is fine: only its funds are missing
    assert checks["scheduler"]["result"] == "PASS"

    text = await iexec_worker("doctor", "--env-file", str(env_file), "--image", HELLO.tag)
    assert text.code == 2
    assert "FAIL  eth" in text.stdout
    assert "fix: send at least" in text.stdout


async def test_account_deposit_and_withdraw_move_the_balances(platform: Platform, tmp_path: Path) -> None:
    env_file, address = fresh_wallet_env(platform, tmp_path)
    await send_eth(platform, address, 1 * ETH)
    await send_rlc(platform, address, 10 * RLC)

    before = json.loads((await iexec_worker("account", "show", "--env-file", str(env_file), "--json")).stdout)
    assert before == {
        "wallet": address, "ethWei": str(ETH), "rlcWalletNrlc": str(10 * RLC), "rlcDepositedNrlc": "0",
        "rlcLockedNrlc": "0", "rlcFreeNrlc": "0",
    }  # fmt: skip

    deposited = await iexec_worker("account", "deposit", "2.5", "--env-file", str(env_file))
    assert deposited.code == 0, deposited.stderr
    assert "deposit of 2.5 RLC mined in block" in deposited.stdout
    assert "free stake    2.5" in deposited.stdout
    assert await rlc_in_wallet(platform, address) == 7_500_000_000

    withdrawn = await iexec_worker("account", "withdraw", "1", "--env-file", str(env_file), "--json")
    assert withdrawn.code == 0, withdrawn.stderr
    after = json.loads(withdrawn.stdout)
    assert after["rlcFreeNrlc"] == str(1_500_000_000)
    assert after["rlcWalletNrlc"] == str(8_500_000_000)
    gas_paid = ETH - int(after["ethWei"])
    assert 0 < gas_paid <= 2 * GAS_LIMIT_CAP * 22_000_000_000  # two transactions under the cap

    too_much = await iexec_worker("account", "withdraw", "5", "--env-file", str(env_file))
    assert too_much.code == 1
    assert "withdraw at most 1.5" in too_much.stderr
