"""The worker's wallet: an encrypted Ethereum V3 keystore, and the one-worker-per-wallet lock.

Two workers on one wallet would race on nonces and contribute twice to the same task, so a worker
holds an exclusive ``flock`` keyed by its wallet address for as long as it runs. The key and the
password are never printed nor logged; errors name the file, never the secret. The keystore and the
password file must be private to their owner (no group or other permission bit), and the process that
holds the key writes no core dump and cannot be attached to by other processes of the same user
(:func:`protect_process`).

The keystore is decrypted in a short-lived child process (:class:`KeystoreDecryption`): scrypt's
256 MiB go back to the system when it exits, and ``run`` starts it before it imports anything but
eth-account, so the key derivation (a floor set by the keystore's parameters, about half a second)
overlaps the worker's own imports. There the child is a fork made right after eth-account's import
(half a second that a fresh interpreter would spend again before its first scrypt round); elsewhere,
in a process that may hold threads, it is this module run as ``python -m worker.wallet``. eth-account
is imported only where a key is made or used.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import getpass
import json
import logging
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from worker.protocol.errors import ConfigurationError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from pydantic import SecretStr

log = logging.getLogger("iexec.worker.wallet")


_PRIVATE_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_PR_SET_DUMPABLE = 4  # linux/prctl.h


def protect_process() -> None:
    """No core dump of this process (it holds the wallet key), and no ptrace or /proc/<pid>/mem by peers.

    RLIMIT_CORE 0 is inherited by child processes; ``PR_SET_DUMPABLE`` 0 (Linux) also makes the
    process's /proc files root-only. Each step is best effort where the platform lacks it.
    """
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        libc_name = ctypes.util.find_library("c")
        if libc_name:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def check_private_file(path: Path, key: str) -> None:
    """Refuse a wallet secret file that its group or other users may read or write (fix in the message)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # the read that follows names the problem
    if mode & 0o077:
        raise ConfigurationError(
            f"{key}={path}: group or other users have access to it (mode {mode:04o}); a wallet secret must be "
            f"private to the worker's user: chmod 600 {path}"
        )


_ADDRESS = re.compile(r"^(0x)?[0-9a-fA-F]{40}$")


def create_wallet(path: Path, password: SecretStr) -> str:
    """Write a keystore for a fresh random key; return its lowercase address."""
    from eth_account import Account

    account: LocalAccount = Account.create()
    return _write_keystore(path, password, account.key)


def import_wallet(path: Path, password: SecretStr, private_key_hex: str) -> str:
    """Write a keystore for an existing key (``0x`` optional); return its lowercase address."""
    key = private_key_hex.strip()
    if not _PRIVATE_KEY.match(key):
        # The input is a secret even when malformed: describe it, never echo it.
        raise ConfigurationError(
            f"the private key is not 64 hex digits (got {len(key)} characters); "
            "paste the key exported from your wallet manager"
        )
    raw = bytes.fromhex(key.removeprefix("0x"))
    if not 0 < int.from_bytes(raw, "big") < _SECP256K1_ORDER:
        raise ConfigurationError("the private key is out of the secp256k1 range; check it was copied whole")
    return _write_keystore(path, password, raw)


def show_wallet(path: Path) -> str:
    """Address of a keystore, read from its JSON without decrypting it."""
    keystore = _read_keystore(path)
    address = keystore.get("address")
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise ConfigurationError(
            f"IEXEC_WORKER_WALLET_PATH={path}: the keystore has no address field; "
            "re-create it with `iexec-worker wallet import`"
        )
    return "0x" + address.removeprefix("0x").lower()


async def load_wallet(path: Path, password: SecretStr) -> LocalAccount:
    """Decrypt the keystore in a short-lived child process (see :class:`KeystoreDecryption`)."""
    decryption = KeystoreDecryption.start()
    try:
        decryption.send(path, password)
    except BaseException:
        decryption.cancel()
        raise
    return await decryption.account()


class KeystoreDecryption:
    """A keystore decryption in a child process of its own: started first, handed the keystore later.

    scrypt takes about half a second of CPU and, with the standard parameters, 256 MiB of memory by
    design. In a child process that memory is returned to the system at once instead of setting the
    worker's peak resident size for its whole life (what container memory limits are sized on), and
    the derivation runs beside whatever the worker does meanwhile. The child imports eth-account
    while the caller reads its settings; :meth:`send` then gives it the keystore and the password on
    its stdin, and it answers the key on its stdout (pipes: nothing on disk, in the environment or on
    a command line). The child runs with no ``IEXEC_`` variable and, like the worker, writes no core
    dump and cannot be attached to.
    """

    def __init__(self, process: subprocess.Popen[bytes] | _Fork) -> None:
        self._process = process
        self._path: Path | None = None
        self._kdf = "?"
        self.derivation_seconds: float | None = None
        """How long the key derivation itself took in the child, once :meth:`account` returned."""

    @classmethod
    def start(cls) -> KeystoreDecryption:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.wallet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_environment(),
        )
        return cls(process)

    @classmethod
    def forked(cls, path: Path, password: SecretStr) -> KeystoreDecryption:
        """The decryption of ``path`` in a fork of this process, which then has nothing left to import.

        Only while this process has a single thread (the first steps of ``run``): otherwise a child is
        started as :meth:`start` does. Raises ConfigurationError when the keystore cannot be read.
        """
        keystore = _read_keystore(path)
        if threading.active_count() > 1:
            decryption = cls.start()
            decryption.send(path, password)
            return decryption
        import eth_account  # noqa: F401 - before the fork: the child finds it imported

        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: decrypt, answer, and leave without running any of the parent's exit code
            code = 1
            try:
                os.close(read_end)
                protect_process()
                answer = json.dumps(_decrypted(keystore, password.get_secret_value())).encode()
                while answer:
                    answer = answer[os.write(write_end, answer) :]
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        decryption = cls(_Fork(pid, os.fdopen(read_end, "rb")))
        decryption._note(path, keystore)
        return decryption

    def _note(self, path: Path, keystore: dict[str, Any]) -> None:
        self._path = path
        crypto = keystore.get("crypto") or keystore.get("Crypto") or {}
        with contextlib.suppress(AttributeError, TypeError):
            params = crypto.get("kdfparams") or {}
            self._kdf = f"{crypto.get('kdf')} n={params.get('n', params.get('c'))}"

    def send(self, path: Path, password: SecretStr) -> None:
        """Read the keystore here (its errors name the file) and hand it to the child with the password."""
        keystore = _read_keystore(path)
        self._note(path, keystore)
        request = json.dumps({"keystore": keystore, "password": password.get_secret_value()}).encode()
        stdin = self._process.stdin
        assert stdin is not None  # a pipe, opened by start()
        try:
            # A keystore is a few hundred bytes: the pipe takes it whole without waiting for the child.
            stdin.write(request)
            stdin.close()
        except BrokenPipeError:
            pass  # the child died: account() says so

    def cancel(self) -> None:
        """Nothing to decrypt after all: the child sees its stdin closed and exits (is stopped if it had a keystore)."""
        if self._path is not None and self._process.poll() is None:
            self._process.kill()
        for pipe in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self._process.wait()

    @property
    def exit_code(self) -> int | None:
        """The child's exit code once it ended, else None."""
        return self._process.poll()

    async def account(self) -> LocalAccount:
        """The decrypted account; ConfigurationError for a wrong password or a damaged keystore."""
        path = self._path
        assert path is not None, "send() the keystore first"
        import asyncio  # here: the child, which runs this module, has no use for it

        answer = await asyncio.to_thread(self._answer)
        if "key" not in answer:
            message = str(answer.get("error") or "the decryption process failed")
            # eth_account says "MAC mismatch" for a wrong password; other errors are damaged files.
            if "MAC mismatch" in message:
                raise ConfigurationError(
                    f"IEXEC_WORKER_WALLET_PASSWORD: wrong password for the keystore {path}; "
                    "fix the password (or IEXEC_WORKER_WALLET_PASSWORD_FILE)"
                )
            raise ConfigurationError(
                f"IEXEC_WORKER_WALLET_PATH={path}: the keystore cannot be decrypted ({message}); "
                "re-create it with `iexec-worker wallet import`"
            )
        from eth_account import Account

        account: LocalAccount = Account.from_key(bytes.fromhex(str(answer["key"])))
        self.derivation_seconds = float(answer.get("seconds") or 0.0)
        # The floor of every start: set by the keystore's KDF parameters, not by the worker.
        log.info("wallet %s decrypted: key derivation %.2f s (%s)", path, self.derivation_seconds, self._kdf)
        return account

    def _answer(self) -> dict[str, Any]:
        stdout = self._process.stdout
        assert stdout is not None  # a pipe, opened by start()
        with stdout:
            text = stdout.read()
        self._process.wait()
        try:
            answer = json.loads(text)
        except ValueError:
            return {"error": f"exit code {self._process.returncode}"}
        return answer if isinstance(answer, dict) else {}


class _Fork:
    """A forked child, as the part of ``subprocess.Popen`` that KeystoreDecryption uses: its answer pipe."""

    stdin: IO[bytes] | None = None

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _decrypted(keystore: dict[str, Any], password: str) -> dict[str, Any]:
    """eth-account's decryption of ``keystore``: the key (hex) and the seconds it took, or the error."""
    from eth_account import Account

    try:
        started = time.perf_counter()
        key = bytes(Account.decrypt(keystore, password))
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        return {"error": str(exc) or type(exc).__name__}
    return {"key": key.hex(), "seconds": round(time.perf_counter() - started, 3)}


def child_environment() -> dict[str, str]:
    """This process's environment without the worker's settings (``IEXEC_*``: the password among them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IEXEC_")}


def _decrypt_child() -> int:
    """``python -m worker.wallet``: one keystore and password on stdin, the key (hex) on stdout."""
    protect_process()
    import eth_account  # noqa: F401 - while the parent reads its settings

    request = sys.stdin.buffer.read()
    if not request:
        return 0  # cancelled
    try:
        data = json.loads(request)
        answer = _decrypted(data["keystore"], data["password"])
    except (ValueError, KeyError, TypeError) as exc:
        answer = {"error": str(exc) or type(exc).__name__}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


def read_password(
    *,
    password: SecretStr | None = None,
    password_file: Path | None = None,
    prompt: bool = False,
    confirm: bool = False,
) -> SecretStr:
    """The keystore password, from a value, a file, or the terminal (in that order)."""
    from pydantic import SecretStr

    if password is not None:
        return password
    if password_file is not None:
        check_private_file(password_file, "IEXEC_WORKER_WALLET_PASSWORD_FILE")
        try:
            text = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigurationError(
                f"IEXEC_WORKER_WALLET_PASSWORD_FILE={password_file}: cannot read it ({exc.strerror}); fix the path"
            ) from exc
        if not text:
            raise ConfigurationError(
                f"IEXEC_WORKER_WALLET_PASSWORD_FILE={password_file}: the file is empty; write the password in it"
            )
        return SecretStr(text)
    if not prompt or not sys.stdin.isatty():
        raise ConfigurationError(
            "no wallet password: set IEXEC_WORKER_WALLET_PASSWORD_FILE (or IEXEC_WORKER_WALLET_PASSWORD), "
            "or run from a terminal to type it"
        )
    first = getpass.getpass("Wallet password: ")
    if not first:
        raise ConfigurationError("the wallet password is empty; type a non-empty password")
    if confirm and getpass.getpass("Repeat the password: ") != first:
        raise ConfigurationError("the two passwords differ; run the command again")
    return SecretStr(first)


def read_private_key(stream: IO[str] | None = None) -> str:
    """The private key to import, from stdin (prompted without echo when it is a terminal)."""
    source = stream if stream is not None else sys.stdin
    key = getpass.getpass("Private key: ") if stream is None and source.isatty() else source.readline()
    if not key.strip():
        raise ConfigurationError(
            "no private key on stdin; pipe it in, e.g. `iexec-worker wallet import < key.txt`"
        )
    return key.strip()


class WalletLock:
    """Exclusive, process-wide claim on a wallet: a second worker on the same wallet refuses to start.

    The lock file sits in ``directory`` (the worker base dir) and is named after the address, so
    workers with different names but the same wallet still exclude each other. The kernel drops a
    ``flock`` when its holder dies, so a crash never leaves a stale lock behind.
    """

    def __init__(self, directory: Path, address: str) -> None:
        self.path = directory / f".wallet-{address.lower()}.lock"
        self.address = address.lower()
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            # The first write in the base dir: a directory created by root (Docker creates a missing
            # bind-mount source so) stops the start here, with the fix rather than a traceback.
            raise ConfigurationError(
                f"IEXEC_WORKER_BASE_DIR={self.path.parent}: cannot write the wallet lock there "
                f"({exc.strerror}); make the directory writable by uid {os.getuid()} "
                f"(e.g. chown {os.getuid()} {self.path.parent})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise ConfigurationError(
                f"wallet {self.address} is already used by another worker{holder} (lock {self.path}); "
                "run one worker per wallet: stop the other one or give this one its own wallet"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Unlock before close so the next holder never reads our pid as its own.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WalletLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def _read_keystore(path: Path) -> dict[str, Any]:
    check_private_file(path, "IEXEC_WORKER_WALLET_PATH")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(
            f"IEXEC_WORKER_WALLET_PATH={path}: no such file; "
            "create one with `iexec-worker wallet create` or fix the path"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"IEXEC_WORKER_WALLET_PATH={path}: cannot read it ({exc.strerror}); fix the file's permissions"
        ) from exc
    try:
        keystore = json.loads(text)
    except json.JSONDecodeError:
        keystore = None
    if not isinstance(keystore, dict) or ("crypto" not in keystore and "Crypto" not in keystore):
        raise ConfigurationError(
            f"IEXEC_WORKER_WALLET_PATH={path}: not an encrypted V3 keystore (JSON with a crypto section); "
            "point to the keystore file, or import the key with `iexec-worker wallet import`"
        )
    return keystore


def _write_keystore(path: Path, password: SecretStr, key: bytes) -> str:
    secret = password.get_secret_value()
    if not secret:
        raise ConfigurationError("the wallet password is empty; choose a non-empty password")
    if path.exists():
        raise ConfigurationError(f"{path} already exists; choose another path or move the old keystore away")
    from eth_account import Account

    keystore = Account.encrypt(key, secret)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a crash never leaves a half-written keystore under the final name.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(keystore, out)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # unlike rename, refuses to replace a keystore that appeared meanwhile
    except FileExistsError:
        raise ConfigurationError(
            f"{path} already exists; choose another path or move the old keystore away"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return "0x" + str(keystore["address"]).removeprefix("0x").lower()


if __name__ == "__main__":
    sys.exit(_decrypt_child())
