"""``iexec-worker``: run the worker and manage its wallet (the operator's commands only).

Exit codes: 0 done, 1 runtime failure (an orchestrator should restart), 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from worker import __version__
from worker.protocol.errors import ConfigurationError


def _password(args: argparse.Namespace, *, confirm: bool = False) -> SecretStr:
    from worker.wallet import read_password

    env_value = os.environ.get("IEXEC_WORKER_WALLET_PASSWORD")
    file_name: str | None = args.password_file or os.environ.get("IEXEC_WORKER_WALLET_PASSWORD_FILE")
    return read_password(
        password=SecretStr(env_value) if env_value else None,
        password_file=Path(file_name) if file_name else None,
        prompt=True,
        confirm=confirm,
    )


def _wallet_path(args: argparse.Namespace) -> Path:
    value = args.wallet or os.environ.get("IEXEC_WORKER_WALLET_PATH")
    if not value:
        raise ConfigurationError("no wallet file: pass --wallet PATH or set IEXEC_WORKER_WALLET_PATH")
    return Path(value)


def cmd_run(args: argparse.Namespace) -> int:
    from worker.app import run_worker
    from worker.config import load_settings
    from worker.logs import setup_logging

    settings = load_settings(Path(args.env_file) if args.env_file else Path(".env"))
    setup_logging(settings.log.level, json_lines=settings.log.json_logs)
    return asyncio.run(run_worker(settings))


def cmd_wallet(args: argparse.Namespace) -> int:
    from worker.wallet import create_wallet, import_wallet, read_private_key, show_wallet

    path = _wallet_path(args)
    if args.wallet_command == "create":
        address = create_wallet(path, _password(args, confirm=True))
        print(f"created wallet {address} in {path}")
    elif args.wallet_command == "import":
        key = read_private_key(sys.stdin)
        address = import_wallet(path, _password(args, confirm=True), key)
        print(f"imported wallet {address} into {path}")
    else:
        print(show_wallet(path))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iexec-worker", description="iExec worker")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="join the workerpool and compute replicates")
    run.add_argument("--env-file", help="settings file (default: ./.env)")
    run.set_defaults(handler=cmd_run)

    wallet = commands.add_parser("wallet", help="create, import or show the worker wallet")
    wallet.add_argument("wallet_command", choices=["create", "import", "show"])
    wallet.add_argument("--wallet", help="keystore path (default: IEXEC_WORKER_WALLET_PATH)")
    wallet.add_argument("--password-file", help="file holding the keystore password")
    wallet.set_defaults(handler=cmd_wallet)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
