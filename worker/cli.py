"""``iexec-worker``: the operator's commands: join, doctor, run, status, account, wallet.

Exit codes: 0 done, 1 runtime failure (an orchestrator should restart), 2 configuration error.
``doctor`` exits with its worst result: 0 all pass, 1 a warning, 2 a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from worker import __version__
from worker.protocol.errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from worker.wallet import KeystoreDecryption

# asyncio, pydantic and the rest are imported by the commands that use them: ``run`` starts the keystore's
# child process before them (see main).


def _password(args: argparse.Namespace, *, confirm: bool = False) -> SecretStr:
    from pydantic import SecretStr

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
    from worker.wallet import KeystoreDecryption, protect_process

    protect_process()
    env_file = Path(args.env_file) if args.env_file else Path(".env")
    # Started by main() before anything heavy was imported (or here, when join starts the worker).
    decryption, guess = getattr(args, "decryption", None) or _start_decryption(env_file)
    try:
        from worker.config import load_settings, scrub_environment

        settings = load_settings(env_file)
        wanted = (settings.wallet_path, settings.wallet_password)
        if guess is None:
            decryption.send(*wanted)
        elif guess != wanted:  # the settings name another wallet than the early reading: theirs counts
            decryption.cancel()
            decryption = KeystoreDecryption.start()
            decryption.send(*wanted)
    except BaseException:
        decryption.cancel()
        raise
    scrub_environment()
    from worker.app import run_worker
    from worker.logs import setup_logging

    setup_logging(settings.log.level, json_lines=settings.log.json_logs)
    import asyncio

    return asyncio.run(run_worker(settings, wallet=decryption.account))


def _start_decryption(env_file: Path) -> tuple[KeystoreDecryption, tuple[Path, SecretStr] | None]:
    """The keystore decryption, started before the settings are read (they import most of the worker).

    On the wallet the settings will name, read ahead of them: a fork decrypts it at once. When that
    reading fails, a child is started that waits for the keystore the settings then give.
    """
    from worker.wallet import KeystoreDecryption

    guess = _wallet_guess(env_file)
    if guess is not None:
        try:
            return KeystoreDecryption.forked(*guess), guess
        except ConfigurationError:
            pass  # the settings name the problem in their own words
    return KeystoreDecryption.start(), None


def _wallet_guess(env_file: Path) -> tuple[Path, SecretStr] | None:
    """The keystore and password as the settings will name them (environment over the env file), read
    without the settings model; None when they cannot be (the settings then say why)."""
    from dotenv import dotenv_values
    from pydantic import SecretStr

    from worker.wallet import read_password

    try:
        values = dotenv_values(env_file) if env_file.is_file() else {}
    except (OSError, UnicodeError):
        return None

    def value(key: str) -> str | None:
        return os.environ[key] if key in os.environ else values.get(key)

    path, password = value("IEXEC_WORKER_WALLET_PATH"), value("IEXEC_WORKER_WALLET_PASSWORD")
    password_file = value("IEXEC_WORKER_WALLET_PASSWORD_FILE")
    if not path or bool(password) == bool(password_file):  # none or both: an error the settings name
        return None
    try:
        secret = read_password(
            password=SecretStr(password) if password else None,
            password_file=Path(password_file) if password_file else None,
        )
    except ConfigurationError:
        return None
    return Path(path), secret


def _env_file(args: argparse.Namespace) -> Path:
    return Path(args.env_file) if args.env_file else Path(".env")


def cmd_doctor(args: argparse.Namespace) -> int:
    import asyncio

    from worker.ops.doctor import DoctorOptions, run_doctor

    options = DoctorOptions(image=args.image, contributions=args.contributions, lookback_blocks=args.blocks)
    report = asyncio.run(run_doctor(_env_file(args), options))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(report.lines()))
        print(f"worst: {report.worst.value}")
    return report.exit_code


def cmd_account(args: argparse.Namespace) -> int:
    import asyncio

    from worker.chain import EscrowError, parse_rlc
    from worker.config import load_settings
    from worker.ops import account

    settings = load_settings(_env_file(args))
    try:
        if args.account_command == "show":
            address, balances = asyncio.run(account.show(settings))
        else:
            if args.amount is None:
                raise ConfigurationError(f"account {args.account_command}: give the AMOUNT of RLC, e.g. 2.5")
            try:
                amount = parse_rlc(args.amount)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            address, paid, balances = asyncio.run(account.move(settings, args.account_command, amount))
            if not args.json:
                print(account.paid_line(args.account_command, amount, paid))
    except EscrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(account.balances_json(address, balances), indent=2))
    else:
        print("\n".join(account.balances_lines(address, balances)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from worker.ops.status import watch, worker_url

    url = args.url or worker_url(_env_file(args))
    return asyncio.run(
        watch(url, as_json=args.json, once=args.once or not sys.stdout.isatty(), every=args.every)
    )


def cmd_join(args: argparse.Namespace) -> int:
    from worker.ops.join import JoinOptions, run_join

    options = JoinOptions(
        pool=args.pool, core_url=args.core_url, name=args.name,
        base_dir=Path(args.base_dir) if args.base_dir else None, env_file=_env_file(args),
        wallet=Path(args.wallet) if args.wallet else None,
        password_file=Path(args.password_file) if args.password_file else None,
        import_key=args.import_key, key_file=Path(args.key_file) if args.key_file else None,
        deposit=args.deposit, stake=args.stake, contributions=args.contributions, settings=args.set or [],
        start=args.start, print_unit=args.print_unit, image=args.image, wait=args.wait,
        interactive=not args.non_interactive and sys.stdin.isatty(), force=args.force,
    )  # fmt: skip
    outcome = run_join(options)
    if outcome.start and outcome.env_file is not None:
        args.env_file = str(outcome.env_file)
        return cmd_run(args)
    return outcome.code


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

    doctor = commands.add_parser(
        "doctor", help="check that this machine, wallet and pool are ready for a worker"
    )
    doctor.add_argument("--env-file", help="settings file (default: ./.env)")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--image", help="a local image to test a bounded container with (default: busybox)")
    doctor.add_argument("--contributions", type=int, default=10, help="contributions the ETH must pay for")
    doctor.add_argument(
        "--blocks", type=int, default=50_000, help="blocks of the pool's deals to read stakes from"
    )
    doctor.set_defaults(handler=cmd_doctor)

    join = commands.add_parser(
        "join", help="guided set-up: wallet, .env for a pool, funding, doctor, then start the worker"
    )
    join.add_argument("--pool", help="workerpool address (POOL_ADDRESS)")
    join.add_argument("--core-url", help="the pool's scheduler URL (IEXEC_CORE_URL)")
    join.add_argument("--name", help="worker name (IEXEC_WORKER_NAME)")
    join.add_argument("--base-dir", help="working folder (IEXEC_WORKER_BASE_DIR)")
    join.add_argument("--env-file", help="settings file to write (default: ./.env)")
    join.add_argument("--wallet", help="keystore to use, or to create (default: <base dir>/wallet.json)")
    join.add_argument(
        "--password-file", help="wallet password file (created with a random password if absent)"
    )
    join.add_argument(
        "--import-key",
        action="store_true",
        help="import a private key (read on stdin) instead of creating one",
    )
    join.add_argument("--key-file", help="file holding the private key to import")
    join.add_argument("--deposit", help="deposit the wallet's RLC as it arrives: AMOUNT or all")
    join.add_argument(
        "--stake", help="RLC to wait for on the hub account (default: the pool's recent tasks, one per slot)"
    )
    join.add_argument("--contributions", type=int, default=10, help="contributions the ETH must pay for")
    join.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="another setting for the .env (repeatable)"
    )
    join.add_argument("--start", action="store_true", help="start the worker at the end")
    join.add_argument(
        "--print", dest="print_unit", choices=["systemd", "compose", "none"], help="print how to start it"
    )
    join.add_argument("--image", help="local image for doctor's container test")
    join.add_argument(
        "--wait", type=float, help="seconds to wait for the funds before giving up (default: no limit)"
    )
    join.add_argument(
        "--non-interactive", action="store_true", help="never ask: every answer comes from the flags"
    )
    join.add_argument("--force", action="store_true", help="replace an existing settings file")
    join.set_defaults(handler=cmd_join)

    account = commands.add_parser(
        "account", help="ETH and RLC of the worker wallet; deposit or withdraw stake"
    )
    account.add_argument("account_command", choices=["show", "deposit", "withdraw"])
    account.add_argument("amount", nargs="?", help="RLC to deposit or withdraw, e.g. 2.5")
    account.add_argument("--env-file", help="settings file (default: ./.env)")
    account.add_argument("--json", action="store_true", help="print the balances as JSON")
    account.set_defaults(handler=cmd_account)

    status = commands.add_parser(
        "status", help="what the running worker does: balances, replicates, transactions"
    )
    status.add_argument("--env-file", help="settings file, to find the worker's port (default: ./.env)")
    status.add_argument("--url", help="the worker's HTTP address (default: from the settings)")
    status.add_argument("--json", action="store_true", help="print the status document as JSON, once")
    status.add_argument("--once", action="store_true", help="print once instead of refreshing")
    status.add_argument("--every", type=float, default=2.0, help="seconds between refreshes")
    status.set_defaults(handler=cmd_status)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            # The very first thing: the key derivation then runs while this process imports the worker.
            args.decryption = _start_decryption(Path(args.env_file) if args.env_file else Path(".env"))
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
