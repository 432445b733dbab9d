"""EMULATED pre-compute and post-compute enclaves of the devnet (no SGX, no TDX: plain containers).

Runs inside the devnet's enclave images with the host's Python, its standard library and pycryptodome
only (no worker, no devnet import), as ``enclave.py pre`` or ``enclave.py post``. It does for the worker
what iExec's tee-worker-compute (pre-compute 0.4, post-compute 0.3) does, read from its source:

- its environment comes from the session: for SCONE from the emulated CAS (``SCONE_CAS_ADDR``,
  ``SCONE_CONFIG_ID``), for Gramine from the emulated SPS (``sps``, ``session``), for TDX straight from
  the worker (the session's environment, fetched by the secret provider agent);
- pre-compute downloads the dataset (checksum ``0x``+sha256 of the encrypted bytes, AES-256-CBC with the
  16-byte IV in front, PKCS#7) and the input files into ``IEXEC_PRE_COMPUTE_OUT``;
- post-compute computes the result digest, signs H(resultHash ‖ resultSeal) with the task's enclave
  challenge key, zips ``/iexec_out`` (optionally encrypted for the beneficiary), uploads it to the result
  proxy with the worker's token, and sends the computed file to ``http://worker:13100``;
- exit codes 0 (done), 1 (failure reported to the worker), 2 (could not report), 3 (no task id); every
  call to the worker is signed: EIP-191 of H(taskId ‖ worker) by the enclave challenge key.

``EMULATED_ENCLAVE_FAULT`` (set by the emulated SMS on request of a test) makes it misbehave on purpose:
``forge-result-signature`` sends the worker a computed file signed by a key of its own (the upload stays
genuine), ``result-proxy-unreachable`` uploads to a closed port. Nothing here is secure: keys sit in plain environment variables.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from Crypto.Cipher import AES, PKCS1_v1_5
from Crypto.Hash import keccak as _keccak
from Crypto.PublicKey import RSA
from Crypto.Util.Padding import pad, unpad

TIMEOUT = 30

# -- keccak and secp256k1 (RFC 6979 deterministic, low-s: the bytes eth_account signs) ---------------

_P = 2**256 - 2**32 - 977
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)
Point = tuple[int, int] | None


def keccak(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def keccak_hex(*parts: str) -> str:
    return "0x" + keccak(b"".join(unhex(p) for p in parts)).hex()


def _add(a: Point, b: Point) -> Point:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % _P == 0:
        return None
    if a == b:
        slope = 3 * a[0] * a[0] * pow(2 * a[1], _P - 2, _P) % _P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], _P - 2, _P) % _P
    x = (slope * slope - a[0] - b[0]) % _P
    return x, (slope * (a[0] - x) - a[1]) % _P


def _mul(point: Point, k: int) -> Point:
    result: Point = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _nonce(key: int, digest: bytes) -> int:
    x, h = key.to_bytes(32, "big"), (int.from_bytes(digest, "big") % _N).to_bytes(32, "big")
    v, k = b"\x01" * 32, b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()
        candidate = int.from_bytes(v, "big")
        if 1 <= candidate < _N:
            return candidate
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()


def sign_hash(digest: bytes, private_key: str) -> str:
    """``r ‖ s ‖ v`` (v 27/28) of a raw 32-byte hash."""
    key = int(private_key.removeprefix("0x"), 16)
    k = _nonce(key, digest)
    point = _mul(_G, k)
    assert point is not None
    r = point[0] % _N
    s = pow(k, _N - 2, _N) * (int.from_bytes(digest, "big") + r * key) % _N
    recovery = point[1] & 1
    if s > _N // 2:
        s, recovery = _N - s, recovery ^ 1
    return "0x" + (r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + recovery])).hex()


def sign_eip191(message_hash: str, private_key: str) -> str:
    return sign_hash(keccak(b"\x19Ethereum Signed Message:\n32" + unhex(message_hash)), private_key)


def address_of(private_key: str) -> str:
    point = _mul(_G, int(private_key.removeprefix("0x"), 16))
    assert point is not None
    return "0x" + keccak(point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big"))[-20:].hex()


# -- the session, the worker ------------------------------------------------------------------------


class Failure(Exception):
    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


def session_environment(service: str) -> dict[str, str]:
    """What the enclave would find in its session: from the emulated CAS/SPS, or the plain environment."""
    env = dict(os.environ)
    if env.get("SCONE_CONFIG_ID") and env.get("SCONE_CAS_ADDR"):
        url = f"http://{env['SCONE_CAS_ADDR']}/emulated-cas/sessions/{env['SCONE_CONFIG_ID']}"
    elif env.get("sps") and env.get("session"):
        url = f"http://{env['sps']}/emulated-sps/sessions/{env['session']}/{service}"
    else:
        return env
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        env.update({str(k): str(v) for k, v in json.loads(answer.read()).items()})
    return env


def _request(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


class Worker:
    def __init__(self, env: dict[str, str], task_id: str) -> None:
        self.base = "http://" + (env.get("WORKER_HOST") or "worker:13100")
        self.task_id = task_id
        self.worker = env.get("SIGN_WORKER_ADDRESS", "")
        self.key = env.get("SIGN_TEE_CHALLENGE_PRIVATE_KEY", "")

    def _authorization(self) -> str:
        return sign_eip191(keccak_hex(self.task_id, self.worker), self.key)

    def post(self, path: str, body: object) -> tuple[int, str]:
        headers = {"Content-Type": "application/json", "Authorization": self._authorization()}
        return _request(self.base + path, json.dumps(body).encode(), headers)

    def report(self, stage: str, failures: list[Failure]) -> bool:
        if not self.worker or not self.key:
            return False
        try:
            body = [{"cause": f.cause, "message": f.message} for f in failures]
            status, _ = self.post(f"/compute/{stage}/{self.task_id}/exit-causes", body)
        except (OSError, ValueError):
            return False
        return status in (200, 208)


def run(stage: str, work: Callable[[dict[str, str], Worker], list[Failure]]) -> int:
    service = "pre-compute" if stage == "pre" else "post-compute"
    try:
        env = session_environment(service)
    except (OSError, ValueError) as exc:
        print(f"emulated {service}: no session ({exc})", file=sys.stderr)
        return 2
    task_id = env.get("IEXEC_TASK_ID", "")
    if not task_id:
        print(f"emulated {service}: IEXEC_TASK_ID missing", file=sys.stderr)
        return 3
    worker = Worker(env, task_id)
    try:
        failures = work(env, worker)
    except Failure as raised:
        failures = [raised]
    except Exception as exc:  # noqa: BLE001 - every other failure is reported as the unknown issue
        failures = [Failure(f"{stage.upper()}_COMPUTE_FAILED_UNKNOWN_ISSUE", f"{type(exc).__name__}: {exc}")]
    if not failures:
        print(f"emulated {service}: done for task {task_id}")
        return 0
    for failure in failures:
        print(f"emulated {service}: {failure.cause}: {failure.message}", file=sys.stderr)
    return 1 if worker.report(stage, failures) else 2


# -- pre-compute -------------------------------------------------------------------------------------


def _required(env: dict[str, str], name: str, cause: str) -> str:
    value = env.get(name, "")
    if not value:
        raise Failure(cause, f"{name} is missing")
    return value


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        return bytes(answer.read())


def pre_compute(env: dict[str, str], worker: Worker) -> list[Failure]:
    out = Path(_required(env, "IEXEC_PRE_COMPUTE_OUT", "PRE_COMPUTE_OUTPUT_PATH_MISSING"))
    required = env.get("IS_DATASET_REQUIRED", "")
    if required not in ("true", "false"):
        raise Failure("PRE_COMPUTE_IS_DATASET_REQUIRED_MISSING", "IS_DATASET_REQUIRED is not true or false")
    dataset = None
    if required == "true":
        dataset = (
            _required(env, "IEXEC_DATASET_URL", "PRE_COMPUTE_DATASET_URL_MISSING"),
            _required(env, "IEXEC_DATASET_CHECKSUM", "PRE_COMPUTE_DATASET_CHECKSUM_MISSING"),
            _required(env, "IEXEC_DATASET_FILENAME", "PRE_COMPUTE_DATASET_FILENAME_MISSING"),
            _required(env, "IEXEC_DATASET_KEY", "PRE_COMPUTE_DATASET_KEY_MISSING"),
        )
    count = env.get("IEXEC_INPUT_FILES_NUMBER", "")
    if not count.isdigit():
        raise Failure("PRE_COMPUTE_INPUT_FILES_NUMBER_MISSING", "IEXEC_INPUT_FILES_NUMBER is missing")
    urls = [env.get(f"IEXEC_INPUT_FILE_URL_{i}", "") for i in range(1, int(count) + 1)]
    if not all(urls):
        raise Failure(
            "PRE_COMPUTE_AT_LEAST_ONE_INPUT_FILE_URL_MISSING", "an IEXEC_INPUT_FILE_URL_<i> is missing"
        )
    if not out.is_dir():
        raise Failure("PRE_COMPUTE_OUTPUT_FOLDER_NOT_FOUND", f"{out} is not a folder")
    failures: list[Failure] = []
    if dataset is not None:
        url, checksum, filename, key = dataset
        try:
            encrypted = _download(url)
        except OSError as exc:
            raise Failure("PRE_COMPUTE_DATASET_DOWNLOAD_FAILED", f"{url}: {exc}") from exc
        if "0x" + hashlib.sha256(encrypted).hexdigest() != checksum.lower():
            raise Failure("PRE_COMPUTE_INVALID_DATASET_CHECKSUM", "the dataset's sha256 is not its checksum")
        try:
            cipher = AES.new(base64.b64decode(key), AES.MODE_CBC, encrypted[:16])
            plain = unpad(cipher.decrypt(encrypted[16:]), 16)
        except ValueError as exc:
            raise Failure(
                "PRE_COMPUTE_DATASET_DECRYPTION_FAILED", f"dataset cannot be decrypted: {exc}"
            ) from exc
        try:
            (out / filename).write_bytes(plain)
        except OSError as exc:
            raise Failure("PRE_COMPUTE_SAVING_PLAIN_DATASET_FAILED", str(exc)) from exc
    for url in urls:
        try:
            (out / ("0x" + hashlib.sha256(url.encode()).hexdigest())).write_bytes(_download(url))
        except OSError as exc:
            failures.append(Failure("PRE_COMPUTE_INPUT_FILE_DOWNLOAD_FAILED", f"{url}: {exc}"))
    return failures


# -- post-compute ------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    return "0x" + hashlib.sha256(path.read_bytes()).hexdigest()


def result_digest(iexec_out: Path, computed: dict[str, object], callback: bool) -> str:
    if callback:
        data = str(computed.get("callback-data") or "")
        if not data:
            raise Failure("POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED", "callback-data is empty")
        return keccak_hex(data)
    path = str(computed.get("deterministic-output-path") or "")
    target = iexec_out / Path(path).relative_to("/iexec_out") if path.startswith("/iexec_out") else Path(path)
    if target.is_file() and target.stat().st_size:
        return _sha256_file(target)
    if target.is_dir():
        children = sorted(p for p in target.iterdir() if p.is_file())
        if children:
            return keccak_hex(*(_sha256_file(child) for child in children))
    raise Failure("POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED", f"{path} is empty or missing")


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _encrypted(zip_bytes: bytes, public_key_b64: str) -> bytes:
    try:
        public = RSA.import_key(base64.b64decode(public_key_b64))
    except (ValueError, IndexError, TypeError) as exc:
        raise Failure("POST_COMPUTE_MALFORMED_ENCRYPTION_PUBLIC_KEY", str(exc)) from exc
    key, iv = os.urandom(32), os.urandom(16)
    payload = iv + AES.new(key, AES.MODE_CBC, iv).encrypt(pad(zip_bytes, 16))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("iexec_out.zip.aes", payload)
        archive.writestr("aes-key.rsa", PKCS1_v1_5.new(public).encrypt(key))
    return buffer.getvalue()


def post_compute(env: dict[str, str], worker: Worker) -> list[Failure]:
    callback = env.get("RESULT_STORAGE_CALLBACK", "")
    if callback not in ("true", "false"):
        raise Failure("POST_COMPUTE_FAILED_UNKNOWN_ISSUE", "RESULT_STORAGE_CALLBACK is not true or false")
    _required(env, "SIGN_WORKER_ADDRESS", "POST_COMPUTE_WORKER_ADDRESS_MISSING")
    key = _required(env, "SIGN_TEE_CHALLENGE_PRIVATE_KEY", "POST_COMPUTE_TEE_CHALLENGE_PRIVATE_KEY_MISSING")
    fault = env.get("EMULATED_ENCLAVE_FAULT", "")
    iexec_out = Path("/iexec_out")
    try:
        computed = json.loads((iexec_out / "computed.json").read_text())
    except (OSError, ValueError) as exc:
        raise Failure("POST_COMPUTE_COMPUTED_FILE_NOT_FOUND", f"/iexec_out/computed.json: {exc}") from exc
    task_id = worker.task_id
    computed["task-id"] = task_id
    digest = result_digest(iexec_out, computed, callback == "true")
    message = keccak_hex(keccak_hex(task_id, digest), keccak_hex(worker.worker, task_id, digest))
    signature = sign_eip191(message, key)
    computed["result-digest"] = digest
    # The forged computed file: signed by a key of its own, the upload itself stays genuine.
    forged = fault == "forge-result-signature"
    computed["enclave-signature"] = sign_eip191(message, "0x" + os.urandom(32).hex()) if forged else signature
    if callback == "false":
        too_long = [p.name for p in iexec_out.rglob("*") if len(p.name) > 31]
        if too_long:
            raise Failure(
                "POST_COMPUTE_TOO_LONG_RESULT_FILE_NAME", f"{too_long[0]} is longer than 31 characters"
            )
        try:
            archive = _zip(iexec_out)
        except OSError as exc:
            raise Failure("POST_COMPUTE_OUT_FOLDER_ZIP_FAILED", str(exc)) from exc
        if env.get("RESULT_ENCRYPTION") == "true":
            public = env.get("RESULT_ENCRYPTION_PUBLIC_KEY", "")
            if not public:
                raise Failure(
                    "POST_COMPUTE_ENCRYPTION_PUBLIC_KEY_MISSING", "RESULT_ENCRYPTION_PUBLIC_KEY is empty"
                )
            archive = _encrypted(archive, public)
        if env.get("RESULT_STORAGE_PROVIDER") == "dropbox":
            raise Failure("POST_COMPUTE_DROPBOX_UPLOAD_FAILED", "the emulated post-compute has no Dropbox")
        proxy = env.get("RESULT_STORAGE_PROXY", "")
        if not proxy:
            raise Failure("POST_COMPUTE_FAILED_UNKNOWN_ISSUE", "RESULT_STORAGE_PROXY is empty")
        token = _required(env, "RESULT_STORAGE_TOKEN", "POST_COMPUTE_STORAGE_TOKEN_MISSING")
        if fault == "result-proxy-unreachable":
            proxy = "http://127.0.0.1:9"
        model = {
            "chainTaskId": task_id, "dealId": "0x" + "00" * 32, "taskIndex": 0, "zip": list(archive),
            "deterministHash": digest, "enclaveSignature": signature,
        }  # fmt: skip
        try:
            status, text = _request(
                proxy.rstrip("/") + "/v1/results",
                json.dumps(model).encode(),
                {"Content-Type": "application/json", "Authorization": token},
            )
        except OSError as exc:
            raise Failure("POST_COMPUTE_IPFS_UPLOAD_FAILED", f"{proxy}: {exc}") from exc
        if status != 200:
            raise Failure("POST_COMPUTE_IPFS_UPLOAD_FAILED", f"result proxy answered {status}: {text[:200]}")
    keys = (
        "deterministic-output-path",
        "callback-data",
        "task-id",
        "result-digest",
        "enclave-signature",
        "error-message",
    )
    try:
        status, text = worker.post(f"/compute/post/{task_id}/computed", {k: computed.get(k) for k in keys})
    except OSError as exc:
        raise Failure("POST_COMPUTE_SEND_COMPUTED_FILE_FAILED", f"{worker.base}: {exc}") from exc
    if status != 200:
        raise Failure("POST_COMPUTE_SEND_COMPUTED_FILE_FAILED", f"worker answered {status}: {text[:200]}")
    return []


def main(argv: list[str]) -> int:
    stage = argv[1] if len(argv) > 1 else ""
    if stage == "pre":
        return run("pre", pre_compute)
    if stage == "post":
        return run("post", post_compute)
    print("usage: enclave.py pre|post", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
