"""Unit tests of worker.wallet with real keystore files and a real second process for the lock."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import SecretStr

from worker.protocol.errors import ConfigurationError
from worker.wallet import (
    KeystoreDecryption,
    WalletLock,
    child_environment,
    create_wallet,
    import_wallet,
    load_wallet,
    read_password,
    read_private_key,
    show_wallet,
)

PASSWORD = SecretStr("correct horse battery staple")
# Anvil's well-known first development key: public, never used on a real chain.
KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDRESS = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"


async def test_create_then_load_gives_the_shown_address(tmp_path: Path) -> None:
    path = tmp_path / "keystore" / "wallet.json"
    address = create_wallet(path, PASSWORD)

    assert address == address.lower()
    assert show_wallet(path) == address
    assert path.stat().st_mode & 0o777 == 0o600
    account = await load_wallet(path, PASSWORD)
    assert account.address.lower() == address


async def test_import_round_trip_and_secrets_stay_out_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    assert import_wallet(path, PASSWORD, KEY) == ADDRESS

    text = path.read_text()
    assert KEY.removeprefix("0x") not in text
    assert PASSWORD.get_secret_value() not in text
    assert json.loads(text)["version"] == 3
    account = await load_wallet(path, PASSWORD)
    assert account.address.lower() == ADDRESS
    assert account.key.hex().removeprefix("0x") == KEY.removeprefix("0x")


def test_keystore_written_here_opens_with_eth_account_too(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    import_wallet(path, PASSWORD, KEY.removeprefix("0x"))
    assert Account.decrypt(path.read_text(), PASSWORD.get_secret_value()).hex().removeprefix("0x") == KEY[2:]


async def test_wrong_password_is_a_clear_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    import_wallet(path, PASSWORD, KEY)
    with pytest.raises(ConfigurationError, match="IEXEC_WORKER_WALLET_PASSWORD: wrong password") as caught:
        await load_wallet(path, SecretStr("Tr0ub4dor&3"))
    assert "Tr0ub4dor&3" not in str(caught.value)


async def test_missing_or_foreign_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"IEXEC_WORKER_WALLET_PATH=.*: no such file"):
        await load_wallet(tmp_path / "none.json", PASSWORD)
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}')
    other.chmod(0o600)
    with pytest.raises(ConfigurationError, match="not an encrypted V3 keystore"):
        show_wallet(other)


def test_existing_keystore_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    import_wallet(path, PASSWORD, KEY)
    before = path.read_text()
    with pytest.raises(ConfigurationError, match="already exists"):
        create_wallet(path, PASSWORD)
    assert path.read_text() == before


def test_bad_private_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    bad = "0x" + "zz" * 32
    with pytest.raises(ConfigurationError, match="not 64 hex digits") as caught:
        import_wallet(tmp_path / "wallet.json", PASSWORD, bad)
    assert bad not in str(caught.value)
    with pytest.raises(ConfigurationError, match="secp256k1 range"):
        import_wallet(tmp_path / "wallet.json", PASSWORD, "00" * 32)
    assert not (tmp_path / "wallet.json").exists()


def test_private_key_and_password_sources(tmp_path: Path) -> None:
    assert read_private_key(io.StringIO(KEY + "\n")) == KEY
    with pytest.raises(ConfigurationError, match="no private key on stdin"):
        read_private_key(io.StringIO(""))

    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    assert read_password(password_file=secret).get_secret_value() == "from-file"
    assert read_password(password=PASSWORD, password_file=secret) == PASSWORD
    with pytest.raises(ConfigurationError, match="no wallet password"):
        read_password(prompt=False)


_HOLDER = """
import sys
from pathlib import Path
from worker.wallet import WalletLock
with WalletLock(Path(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_second_worker_on_the_same_wallet_is_refused(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), ADDRESS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"

            with pytest.raises(
                ConfigurationError, match=rf"{ADDRESS} is already used by another worker \(pid {holder.pid}\)"
            ):
                WalletLock(tmp_path, ADDRESS.upper().replace("0X", "0x")).acquire()
            # A different wallet is not affected.
            with WalletLock(tmp_path, "0x" + "11" * 20) as other:
                assert other.held
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)

    # The kernel released the holder's lock when it exited: this process can now take the wallet.
    with WalletLock(tmp_path, ADDRESS) as lock:
        assert lock.held
    assert not lock.held


def test_a_base_dir_the_worker_cannot_write_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the base dir should be")
    with pytest.raises(ConfigurationError, match=rf"IEXEC_WORKER_BASE_DIR={blocker}/base: cannot write"):
        WalletLock(blocker / "base", ADDRESS).acquire()


@pytest.mark.parametrize("mode", [0o640, 0o604])
async def test_wallet_files_open_to_group_or_others_are_refused_with_the_fix(
    tmp_path: Path, mode: int
) -> None:
    keystore = tmp_path / "wallet.json"
    import_wallet(keystore, PASSWORD, KEY)
    password = tmp_path / "password"
    password.write_text(PASSWORD.get_secret_value())
    password.chmod(0o600)
    keystore.chmod(mode)
    with pytest.raises(ConfigurationError, match=rf"IEXEC_WORKER_WALLET_PATH=.*: .*chmod 600 {keystore}"):
        await load_wallet(keystore, PASSWORD)
    keystore.chmod(0o600)
    password.chmod(mode)
    with pytest.raises(
        ConfigurationError, match=rf"IEXEC_WORKER_WALLET_PASSWORD_FILE=.*chmod 600 {password}"
    ):
        read_password(password_file=password)
    password.chmod(0o400)
    assert read_password(password_file=password) == PASSWORD


def test_keystores_the_worker_writes_are_private(tmp_path: Path) -> None:
    keystore = tmp_path / "wallet.json"
    import_wallet(keystore, PASSWORD, KEY)
    assert keystore.stat().st_mode & 0o077 == 0


def test_a_protected_process_writes_no_core_dump_and_is_not_dumpable() -> None:
    """In a child process, so the test runner itself is left as it was."""
    probe = (
        "import resource, ctypes, ctypes.util\n"
        "from worker.wallet import protect_process\n"
        "protect_process()\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "print(resource.getrlimit(resource.RLIMIT_CORE), libc.prctl(3, 0, 0, 0, 0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "(0, 0) 0"  # PR_GET_DUMPABLE (3) answers 0


async def test_the_key_derivation_is_logged_on_its_own_line_with_the_keystore_parameters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wallet.json"
    import_wallet(path, PASSWORD, KEY)
    caplog.set_level("INFO", logger="iexec.worker.wallet")

    await load_wallet(path, PASSWORD)

    [line] = [r.getMessage() for r in caplog.records if "key derivation" in r.getMessage()]
    assert "scrypt n=262144" in line
    assert PASSWORD.get_secret_value() not in line
    assert KEY[2:] not in line


def test_a_decryption_given_nothing_to_decrypt_ends_its_child() -> None:
    decryption = KeystoreDecryption.start()

    decryption.cancel()

    assert decryption.exit_code == 0


def test_the_decrypting_child_starts_without_the_worker_settings_in_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Started before the settings are read and scrubbed from the environment: it must not inherit them.
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PASSWORD", PASSWORD.get_secret_value())
    monkeypatch.setenv("UNRELATED_SETTING", "kept")

    environment = child_environment()

    assert environment["UNRELATED_SETTING"] == "kept"
    assert not [k for k in environment if k.startswith("IEXEC_")]
