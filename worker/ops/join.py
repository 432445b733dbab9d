"""``iexec-worker join``: from a fresh machine to a worker in a pool, as one guided command.

In order: the pool and its scheduler; the wallet (created, imported, or an existing keystore) and
its password file; a ``.env`` holding the settings of that pool; the address to fund, then a wait
with progress until the wallet holds the ETH and the hub account the RLC stake the pool's tasks
need (RLC sent to the wallet is deposited on the way when asked); ``doctor``; then the worker is
started, or the systemd unit and compose service that start it are printed.

Interactive on a terminal (each question shows its default), or entirely from flags with
``--non-interactive``, where a missing answer is an error naming its flag.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import shutil
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr

from worker.chain import parse_rlc, rlc
from worker.config import DEFAULT_ENV_FILE, load_settings
from worker.doctor import Result, eth, eth_needed
from worker.doctor.funding import Funds, Needs, wait_for_funds
from worker.ops.doctor import DoctorOptions, run_doctor
from worker.ops.wiring import open_pool_chain
from worker.protocol.errors import ConfigurationError
from worker.wallet import create_wallet, import_wallet, load_wallet, read_private_key, show_wallet

DEFAULT_CONTRIBUTIONS = 10


@dataclass
class JoinOptions:
    pool: str | None = None
    core_url: str | None = None
    name: str | None = None
    base_dir: Path | None = None
    env_file: Path = DEFAULT_ENV_FILE
    wallet: Path | None = None
    password_file: Path | None = None
    import_key: bool = False
    key_file: Path | None = None
    deposit: str | None = None
    """RLC of the wallet to deposit as it arrives: an amount, "all", or None (ask, or do not)."""
    stake: str | None = None
    """RLC to wait for on the hub account; default: one task of the pool's recent deals per slot."""
    contributions: int = DEFAULT_CONTRIBUTIONS
    settings: list[str] = field(default_factory=list)
    """More KEY=VALUE settings written to the .env."""
    start: bool = False
    print_unit: str | None = None
    """"systemd", "compose" or "none": what to print at the end instead of starting."""
    image: str | None = None
    wait: float | None = None
    interactive: bool = True
    force: bool = False


class Console:
    """Questions and progress: on a terminal they prompt; otherwise the flags must answer."""

    def __init__(self, interactive: bool, out: TextIO = sys.stdout) -> None:
        self.interactive = interactive
        self.out = out
        self._tty = out.isatty()
        self._last, self._last_at = "", 0.0

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def ask(self, question: str, given: str | None, flag: str, default: str | None = None) -> str:
        """The flag's value when given; else the answer typed (``default`` on Enter), or an error naming the flag."""
        if given is not None:
            return given
        if not self.interactive:
            if default is None:
                raise ConfigurationError(f"{question}: pass {flag} (or run join on a terminal to be asked)")
            return default
        shown = f" [{default}]" if default else ""
        while True:
            self.out.write(f"{question}{shown}: ")
            self.out.flush()
            answer = sys.stdin.readline()
            if not answer:
                raise ConfigurationError(f"{question}: no answer (end of input); pass {flag}")
            answer = answer.strip() or (default or "")
            if answer:
                return answer

    def confirm(self, question: str, default: bool) -> bool:
        if not self.interactive:
            return default
        answer = self.ask(f"{question} ({'Y/n' if default else 'y/N'})", None, "", "y" if default else "n")
        return answer.lower().startswith("y")

    def secret(self, question: str) -> str:
        return getpass.getpass(f"{question}: ")

    def progress(self, text: str, elapsed: float) -> None:
        """One line kept up to date on a terminal; elsewhere a line when it changes, or every 30 s."""
        line = f"[{elapsed:5.0f} s] {text}"
        if self._tty:
            self.out.write("\r\x1b[2K" + line)
            self.out.flush()
        elif text != self._last or elapsed - self._last_at >= 30:
            self.say(line)
            self._last, self._last_at = text, elapsed


@dataclass(frozen=True)
class JoinOutcome:
    code: int
    env_file: Path | None = None
    start: bool = False
    """True: the caller runs the worker with ``env_file`` now."""


@dataclass(frozen=True)
class Prepared:
    env_file: Path
    address: str


def prepare(options: JoinOptions, console: Console) -> Prepared:
    """The questions, the wallet and the .env: everything before the chain is asked."""
    pool = console.ask("Workerpool address (POOL_ADDRESS)", options.pool, "--pool")
    core_url = console.ask("Scheduler URL of this pool (IEXEC_CORE_URL)", options.core_url, "--core-url")
    name = console.ask("Worker name", options.name, "--name", f"worker-{os.uname().nodename}")
    given_dir = str(options.base_dir) if options.base_dir else None
    base_dir = Path(console.ask("Working folder", given_dir, "--base-dir", str(_default_base_dir())))
    given_wallet = str(options.wallet) if options.wallet else None
    wallet = Path(
        console.ask("Wallet keystore file", given_wallet, "--wallet", str(base_dir / "wallet.json"))
    )
    password_file = options.password_file or wallet.with_name(wallet.stem + ".password")
    address = _wallet(console, options, wallet, password_file)
    env_file = _write_env(console, options, {
        "IEXEC_CORE_URL": core_url, "POOL_ADDRESS": pool, "IEXEC_WORKER_NAME": name,
        "IEXEC_WORKER_BASE_DIR": str(base_dir.resolve()), "IEXEC_WORKER_WALLET_PATH": str(wallet.resolve()),
        "IEXEC_WORKER_WALLET_PASSWORD_FILE": str(password_file.resolve()),
    })  # fmt: skip
    load_settings(env_file)  # every answer checked as `run` will check it
    console.say(f"settings written to {env_file}")
    return Prepared(env_file, address)


async def fund_and_check(options: JoinOptions, console: Console, prepared: Prepared) -> JoinOutcome:
    """Show the address, wait for its funds (depositing wallet RLC when asked), run doctor, finish."""
    say, env_file, address = console.say, prepared.env_file, prepared.address
    settings = await asyncio.to_thread(load_settings, env_file)
    async with AsyncExitStack() as stack:
        probe, config = await open_pool_chain(stack, settings)
        price = await probe.gas_price_now()
        slots = settings.available_cpu_count
        deals = await probe.recent_deal_stakes(settings.scheduler.pool_address, blocks=50_000)
        per_task = max((d.worker_stake for d in deals), default=0)
        stake = parse_rlc(options.stake) if options.stake else max(slots * per_task, 1)
        eth_wei = (
            0 if config.sidechain else eth_needed(options.contributions, price, settings.chain.gas_price_cap)
        )
        needs = Needs(eth_wei=eth_wei, stake_nrlc=stake)
        say()
        say(f"Fund the worker wallet {address}:")
        say(
            f"  - at least {eth(needs.eth_wei)} ETH for gas ({options.contributions} contributions at {price / 1e9:g} gwei)"
        )
        basis = f"{slots} slot(s) x {rlc(per_task)} RLC, the pool's recent tasks" if per_task else "any stake"
        say(f"  - at least {rlc(needs.stake_nrlc)} RLC deposited on its iExec account ({basis})")
        say(
            "    send RLC to the wallet and it is deposited here, or deposit it for this address from your own wallet"
        )
        deposit_limit = _deposit_limit(console, options)

        async def deposit(funds: Funds) -> bool:
            amount = funds.rlc_wallet if deposit_limit is None else min(funds.rlc_wallet, deposit_limit)
            if amount <= 0:
                return False
            if options.deposit is None and not console.confirm(
                f"\nDeposit the {rlc(amount)} RLC of the wallet?", True
            ):
                return False
            account = await load_wallet(settings.wallet_path, settings.wallet_password)
            paid = await probe.escrow.deposit(account, amount)
            console.say(f"\ndeposited {rlc(amount)} RLC (tx {paid.tx_hash}, block {paid.block_number})")
            return True

        def progress(funds: Funds, elapsed: float) -> None:
            short = funds.missing(needs)
            state = "ready" if not short else "waiting for " + " and ".join(short)
            console.progress(
                f"ETH {eth(funds.eth_wei)} / {eth(needs.eth_wei)} · RLC deposited {rlc(funds.stake)} / "
                f"{rlc(needs.stake_nrlc)} · RLC in wallet {rlc(funds.rlc_wallet)} · {state}",
                elapsed,
            )

        wants_deposit = options.deposit is not None or console.interactive
        await wait_for_funds(
            probe, address, needs, progress=progress, deposit=deposit if wants_deposit else None,
            give_up_after=options.wait,
        )  # fmt: skip
    say()
    say("wallet funded; checking the machine (iexec-worker doctor):")
    report = await run_doctor(
        env_file, DoctorOptions(image=options.image, contributions=options.contributions)
    )
    for line in report.lines():
        say("  " + line)
    if report.worst is Result.FAIL:
        say(f"doctor found a problem: fix it, then run `iexec-worker doctor --env-file {env_file}`")
        return JoinOutcome(2, env_file)
    return JoinOutcome(0, env_file, start=await asyncio.to_thread(_finish, console, options, env_file))


def _default_base_dir() -> Path:
    return Path("/var/lib/iexec-worker") if os.geteuid() == 0 else Path.home() / ".iexec-worker"


def _wallet(console: Console, options: JoinOptions, wallet: Path, password_file: Path) -> str:
    if wallet.exists():
        address = show_wallet(wallet)
        console.say(f"using the wallet {address} in {wallet}")
        if not password_file.exists():
            if not console.interactive:
                raise ConfigurationError(
                    f"{password_file}: no such file; pass --password-file with its password"
                )
            _write_secret(password_file, console.secret(f"Password of {wallet}"))
        return address
    importing = options.import_key or options.key_file is not None
    if console.interactive and not importing:
        answer = console.ask(
            "Create a new wallet or import a private key? (create/import)", None, "", "create"
        )
        importing = answer.lower().startswith("i")
    password = _password(console, password_file)
    if importing:
        if options.key_file is not None:
            key = options.key_file.read_text().strip()
        elif console.interactive:
            key = console.secret("Private key (not shown)")
        else:
            key = read_private_key(sys.stdin)
        address = import_wallet(wallet, password, key)
        console.say(f"imported wallet {address} into {wallet}")
    else:
        address = create_wallet(wallet, password)
        console.say(f"created wallet {address} in {wallet}; keep a copy of it and of {password_file}")
    return address


def _password(console: Console, password_file: Path) -> SecretStr:
    if password_file.exists():
        text = password_file.read_text().rstrip("\r\n")
        if not text:
            raise ConfigurationError(f"{password_file} is empty; write the wallet password in it")
        return SecretStr(text)
    if console.interactive:
        first = console.secret("New wallet password")
        if not first or console.secret("Repeat the password") != first:
            raise ConfigurationError("the passwords are empty or differ; run join again")
        secret = first
    else:
        secret = secrets.token_urlsafe(24)  # written only to the file, never shown
    _write_secret(password_file, secret)
    console.say(f"wallet password kept in {password_file} (mode 600)")
    return SecretStr(secret)


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def _write_env(console: Console, options: JoinOptions, values: dict[str, str]) -> Path:
    for item in options.settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--set {item!r}: write KEY=VALUE")
        values[key.strip()] = value.strip()
    path = options.env_file
    if path.exists() and not options.force and not console.confirm(f"{path} exists: replace it?", False):
        raise ConfigurationError(f"{path} exists: pass --force to replace it, or --env-file another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    body = "# Written by `iexec-worker join`; every key is described in .env.example.\n"
    path.write_text(body + "".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def _deposit_limit(console: Console, options: JoinOptions) -> int | None:
    """nRLC of the wallet join may deposit; None: all of it."""
    if options.deposit is None or options.deposit.lower() == "all":
        return None
    try:
        return parse_rlc(options.deposit)
    except ValueError as exc:
        raise ConfigurationError(f"--deposit: {exc}") from None


def _finish(console: Console, options: JoinOptions, env_file: Path) -> bool:
    """Whether to start the worker now; otherwise print how to start it."""
    asked = console.interactive and options.print_unit is None
    if options.start or (asked and console.confirm("Start the worker now?", True)):
        console.say(f"starting the worker: iexec-worker run --env-file {env_file}")
        return True
    kind = options.print_unit or "systemd"
    if kind == "systemd":
        console.say(systemd_unit(env_file))
    elif kind == "compose":
        console.say(compose_service(env_file))
    console.say(f"start it with: iexec-worker run --env-file {env_file}")
    return False


def systemd_unit(env_file: Path) -> str:
    command = shutil.which("iexec-worker") or f"{sys.executable} -m worker.cli"
    return (
        f"# /etc/systemd/system/iexec-worker.service, then: systemctl daemon-reload && systemctl enable --now iexec-worker\n"
        "[Unit]\nDescription=iExec worker\nAfter=network-online.target docker.service\n"
        "Wants=network-online.target\nRequires=docker.service\n\n"
        f"[Service]\nExecStart={command} run --env-file {env_file.resolve()}\n"
        f"WorkingDirectory={env_file.resolve().parent}\nRestart=on-failure\nRestartSec=10\n"
        "KillSignal=SIGTERM\nTimeoutStopSec=60\n\n[Install]\nWantedBy=multi-user.target"
    )


def compose_service(env_file: Path) -> str:
    """The README's steps for deploy/compose.yml, with this worker's files: its wallet, password and base dir."""
    values = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    wallet = values.get("IEXEC_WORKER_WALLET_PATH", "/secure/worker.json")
    password = values.get("IEXEC_WORKER_WALLET_PASSWORD_FILE", "/secure/password")
    base_dir = values.get("IEXEC_WORKER_BASE_DIR", "/var/lib/iexec-worker")
    return (
        "# with deploy/compose.yml (worker, Prometheus, Alertmanager), from the top of the repository, as root:\n"
        "make image\n"
        "install -d -m 700 deploy/wallet\n"
        f"cp {wallet} deploy/wallet/wallet.json && cp {password} deploy/wallet/password\n"
        "chown -R 10001 deploy/wallet && chmod 600 deploy/wallet/*\n"
        f"WORKER_ENV_FILE={env_file.resolve()} IEXEC_WORKER_BASE_DIR={base_dir} "
        "docker compose -f deploy/compose.yml up -d"
    )


def run_join(options: JoinOptions, console: Console | None = None) -> JoinOutcome:
    console = console or Console(options.interactive)
    prepared = prepare(options, console)
    return asyncio.run(fund_and_check(options, console, prepared))
