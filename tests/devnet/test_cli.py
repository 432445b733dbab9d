"""End to end: ``iexec-devnet up`` and ``iexec-devnet buy`` as a developer runs them, in real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from devnet.contracts import Deployment, new_web3
from devnet.images import HELLO
from devnet.platform import PlatformInfo
from devnet.toolkit import Toolkit
from tests.support import until
from tests.support.devnet import devnet_cache_dir
from worker.protocol.tee import TEE_TDX_ONLY_TAG

pytestmark = pytest.mark.e2e


async def test_devnet_up_prints_the_platform_and_buy_prints_the_deal(tmp_path: Path) -> None:
    env = {**os.environ, "IEXEC_DEVNET_CACHE": str(devnet_cache_dir())}
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devnet", "up", "--dir", str(tmp_path), "--workers", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert up.stdout is not None
    try:
        lines: list[str] = []

        async def read_until_running() -> None:
            assert up.stdout is not None
            while not lines or "devnet running" not in lines[-1]:
                line = await up.stdout.readline()
                if not line:
                    raise AssertionError("devnet up exited early:\n" + "".join(lines))
                lines.append(line.decode())

        await asyncio.wait_for(read_until_running(), 60)
        text = "".join(lines)
        info = PlatformInfo.read(tmp_path)
        assert f"RPC URL:            {info.rpc_url}" in text
        assert info.hub in text
        assert info.scheduler_url in text
        assert info.result_proxy_url in text
        wallet = info.workers[0]
        assert wallet.address in text
        assert wallet.keystore in text
        assert await asyncio.to_thread(Path(wallet.keystore).is_file)

        buy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devnet", "buy", "--dir", str(tmp_path), "--image", HELLO.tag,
            "--args", "from", "cli",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(buy.communicate(), 60)
        assert buy.returncode == 0, err.decode()
        bought = json.loads(out)
        assert bought["dealId"].startswith("0x")
        assert len(bought["dealId"]) == 66
        assert len(bought["taskIds"]) == 1
    finally:
        up.send_signal(signal.SIGINT)
        await asyncio.wait_for(up.wait(), 30)
    assert up.returncode == 0
    await until(
        lambda: not (tmp_path / "platform.json").exists(), within=5, what="platform.json removed on stop"
    )


async def test_buy_without_a_running_devnet_says_how_to_start_one(tmp_path: Path) -> None:
    buy = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devnet", "buy", "--dir", str(tmp_path), "--image", HELLO.tag,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(buy.communicate(), 30)
    assert buy.returncode == 2
    assert "iexec-devnet up" in err.decode()


async def test_devnet_up_tee_serves_the_emulated_sms_and_buy_tee_makes_a_tdx_deal(tmp_path: Path) -> None:
    env = {**os.environ, "IEXEC_DEVNET_CACHE": str(devnet_cache_dir())}
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devnet", "up", "--dir", str(tmp_path), "--workers", "1", "--tee",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert up.stdout is not None
    try:
        text = ""
        while "devnet running" not in text:
            line = await asyncio.wait_for(up.stdout.readline(), 120)
            if not line:
                raise AssertionError("devnet up --tee exited early:\n" + text)
            text += line.decode()
        info = PlatformInfo.read(tmp_path)
        assert info.tee is not None
        assert f"tdx SMS:            {info.tee.sms['TDX']}  (EMULATED" in text
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{info.tee.sms['TDX']}/tee/framework") as answer,
        ):
            assert await answer.json() == "TDX"

        buy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devnet", "buy", "--dir", str(tmp_path), "--image", HELLO.tag, "--tee", "tdx",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(buy.communicate(), 60)
        assert buy.returncode == 0, err.decode()
        w3 = new_web3(info.rpc_url)
        try:
            deal = await Toolkit(w3, Deployment.from_json(json.dumps(info.deployment))).view_deal(
                json.loads(out)["dealId"]
            )
        finally:
            await w3.provider.disconnect()
        assert deal.tag == TEE_TDX_ONLY_TAG
        assert deal.trust == 1
    finally:
        up.send_signal(signal.SIGINT)
        await asyncio.wait_for(up.wait(), 30)
    assert up.returncode == 0
