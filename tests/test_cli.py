"""The ``iexec-worker`` command as an operator types it (real processes, real keystore files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eth_account import Account

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IEXEC_")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


def test_wallet_import_then_show(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("correct horse battery staple\n")
    password.chmod(0o600)
    wallet = tmp_path / "wallet.json"
    imported = cli(
        "wallet", "import", "--wallet", str(wallet), "--password-file", str(password), stdin=KEY + "\n"
    )
    expected = Account.from_key(KEY).address.lower()
    assert imported.returncode == 0, imported.stderr
    assert expected in imported.stdout.lower()
    assert KEY[2:] not in imported.stdout + imported.stderr  # the key is never echoed

    shown = cli("wallet", "show", env={"IEXEC_WORKER_WALLET_PATH": str(wallet)})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().lower() == expected


def test_run_without_wallet_is_a_configuration_error(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("POOL_ADDRESS=0x1111111111111111111111111111111111111111\n")
    result = cli("run", "--env-file", str(env_file), env={"IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT": "2"})
    assert result.returncode == 2
    assert "IEXEC_WORKER_WALLET_PATH" in result.stderr


def test_wallet_show_names_the_missing_setting() -> None:
    result = cli("wallet", "show")
    assert result.returncode == 2
    assert "IEXEC_WORKER_WALLET_PATH" in result.stderr


def test_run_on_a_base_dir_it_cannot_write_exits_2_with_the_fix_and_no_traceback(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("correct horse battery staple\n")
    password.chmod(0o600)
    wallet = tmp_path / "wallet.json"
    imported = cli(
        "wallet", "import", "--wallet", str(wallet), "--password-file", str(password), stdin=KEY + "\n"
    )
    assert imported.returncode == 0, imported.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env_file = tmp_path / ".env"
    env_file.write_text(
        "POOL_ADDRESS=0x1111111111111111111111111111111111111111\n"
        f"IEXEC_WORKER_WALLET_PATH={wallet}\nIEXEC_WORKER_WALLET_PASSWORD_FILE={password}\n"
        f"IEXEC_WORKER_BASE_DIR={blocker}/base\nIEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT=2\n"
        "IEXEC_WORKER_HTTP_HOST=127.0.0.1\nIEXEC_WORKER_PORT=0\n"
    )
    result = cli("run", "--env-file", str(env_file))
    assert result.returncode == 2, result.stderr
    assert f"IEXEC_WORKER_BASE_DIR={blocker}/base" in result.stderr
    assert "Traceback" not in result.stderr


def _run_env(tmp_path: Path, password_file: Path, wallet: Path) -> Path:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")  # the start stops at the wallet lock, right after the decryption
    env_file = tmp_path / ".env"
    env_file.write_text(
        "POOL_ADDRESS=0x1111111111111111111111111111111111111111\n"
        f"IEXEC_WORKER_WALLET_PATH={wallet}\nIEXEC_WORKER_WALLET_PASSWORD_FILE={password_file}\n"
        f"IEXEC_WORKER_BASE_DIR={blocker}/base\nIEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT=2\n"
        "IEXEC_WORKER_HTTP_HOST=127.0.0.1\nIEXEC_WORKER_PORT=0\n"
    )
    return env_file


def _wallet(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A keystore, its password file and a file holding another password."""
    right, wrong = tmp_path / "password", tmp_path / "wrong-password"
    right.write_text("correct horse battery staple\n")
    wrong.write_text("Tr0ub4dor&3\n")
    right.chmod(0o600)
    wrong.chmod(0o600)
    wallet = tmp_path / "wallet.json"
    imported = cli(
        "wallet", "import", "--wallet", str(wallet), "--password-file", str(right), stdin=KEY + "\n"
    )
    assert imported.returncode == 0, imported.stderr
    return wallet, right, wrong


def test_run_with_a_wrong_wallet_password_exits_2_naming_the_password(tmp_path: Path) -> None:
    wallet, _, wrong = _wallet(tmp_path)

    result = cli("run", "--env-file", str(_run_env(tmp_path, wrong, wallet)))

    assert result.returncode == 2, result.stderr
    assert "wrong password for the keystore" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_decrypts_with_the_password_the_environment_names_over_the_env_file(tmp_path: Path) -> None:
    # The decryption starts before the settings are read: it must still follow their precedence.
    wallet, right, wrong = _wallet(tmp_path)

    result = cli(
        "run",
        "--env-file",
        str(_run_env(tmp_path, wrong, wallet)),
        env={"IEXEC_WORKER_WALLET_PASSWORD_FILE": str(right)},
    )

    assert result.returncode == 2, result.stderr
    assert "wrong password" not in result.stderr
    assert "IEXEC_WORKER_BASE_DIR=" in result.stderr  # decrypted: the start went on to the wallet lock
