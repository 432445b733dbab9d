"""``iexec-devnet``: a local iExec platform on loopback for the demo and the tests.

``up`` starts anvil with the real PoCo contracts, the development scheduler and the result proxy
and prints how to reach them; ``buy`` buys a task on the running platform as a requester would.
Never installed with the worker: the operator's command is ``iexec-worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

DEFAULT_DEVNET_DIR = Path(".devnet")


def cmd_up(args: argparse.Namespace) -> int:
    from devnet.platform import Platform
    from worker.logs import setup_logging

    setup_logging("WARNING")

    base = Path(args.dir).resolve()

    async def main() -> None:
        async with await Platform.up(
            base, workers=args.workers, required_worker_version=args.required_worker_version, tee=args.tee
        ) as platform:
            info = platform.info()
            print(f"RPC URL:            {info.rpc_url} (chain id {info.chain_id})")
            print(f"iExec hub:          {info.hub}")
            print(f"workerpool:         {info.workerpool}")
            print(f"scheduler:          {info.scheduler_url}")
            print(f"result proxy:       {info.result_proxy_url}")
            for wallet in info.workers:
                print(
                    f"worker wallet:      {wallet.address}  keystore {wallet.keystore}  password file {wallet.password_file}"
                )
            if info.tee is not None:
                for framework, url in info.tee.sms.items():
                    print(f"{framework.lower() + ' SMS:':<20}{url}  (EMULATED, as its enclaves)")
                print(f"TDX agent:          {info.tee.agent}  (EMULATED)")
                if info.tee.sgx_devices:
                    print(f"SGX devices:        {', '.join(info.tee.sgx_devices)}  (stand-ins, no enclave)")
            print(f"description:        {base / 'platform.json'}")
            print("devnet running; Ctrl-C stops it")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
            print("stopping devnet")

    asyncio.run(main())
    return 0


def cmd_buy(args: argparse.Namespace) -> int:
    from devnet.platform import PlatformInfo, buy
    from worker.protocol.crypto import ZERO_ADDRESS
    from worker.protocol.tee import TeeFramework

    info = PlatformInfo.read(Path(args.dir).resolve())
    purchase = asyncio.run(
        buy(
            info,
            image=args.image,
            args=" ".join(args.args or []),
            input_files=args.input_file or None,
            dataset_url=args.dataset,
            trust=args.trust,
            callback=args.callback or ZERO_ADDRESS,
            volume=args.volume,
            tee=TeeFramework(args.tee.upper()) if args.tee else None,
        )
    )
    print(
        json.dumps(
            {
                "dealId": purchase.deal_id,
                "taskIds": purchase.task_ids,
                "app": purchase.app,
                "dataset": purchase.dataset,
            },
            indent=2,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iexec-devnet", description="a local iExec platform on loopback")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start anvil with PoCo, a scheduler and a result proxy")
    up.add_argument("--dir", default=str(DEFAULT_DEVNET_DIR), help="state folder (default: .devnet)")
    up.add_argument("--workers", type=int, default=2, help="worker wallets to create and fund")
    up.add_argument(
        "--required-worker-version",
        default="",
        help="the worker version the scheduler requires (iexec-core requiredWorkerVersion; default: any)",
    )
    up.add_argument(
        "--tee",
        action="store_true",
        help="add the EMULATED TEE side: one SMS per framework, enclave images, agent",
    )
    up.set_defaults(handler=cmd_up)
    purchase = commands.add_parser("buy", help="buy a task on the running devnet")
    purchase.add_argument("--dir", default=str(DEFAULT_DEVNET_DIR))
    purchase.add_argument("--image", required=True, help="docker image of the app")
    purchase.add_argument("--args", nargs="*", help="app arguments")
    purchase.add_argument("--dataset", help="dataset URL")
    purchase.add_argument("--input-file", action="append", help="input file URL (repeatable)")
    purchase.add_argument("--trust", type=int, default=1)
    purchase.add_argument("--callback", help="callback contract address")
    purchase.add_argument("--volume", type=int, default=1)
    purchase.add_argument(
        "--tee",
        choices=["scone", "gramine", "tdx"],
        help="tag the orders with this TEE framework (trust-1 TEE task)",
    )
    purchase.set_defaults(handler=cmd_buy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
