"""Identifiers, hashes and signatures of the iExec protocol, bit-identical to the Java stack.

Pure functions over hex strings (``0x``-prefixed); keys are eth_account ``LocalAccount`` objects
or raw private keys. Formulas: iexec-core ``ChallengeService`` and iexec-commons-poco ``SignatureUtils``
(login); iexec-commons-poco ``HashUtils`` and ``ChainUtils``, PoCo ``IexecPoco2Facet`` (task ids, result
hash and seal, authorization).
"""

from __future__ import annotations

import base64
import binascii
import re

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.datatypes import PrivateKey, Signature
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_BYTES32 = "0x" + "00" * 32


def to_bytes(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str.removeprefix("0x").removeprefix("0X"))


def to_hex(data: bytes) -> str:
    return "0x" + data.hex()


def keccak_hex(*parts: str) -> str:
    """``keccak256(abi.encodePacked(parts...))`` for hex-encoded parts (addresses, bytes32)."""
    return to_hex(keccak(b"".join(to_bytes(p) for p in parts)))


def uint256(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def deal_id(request_order_hash: str, first_index: int = 0) -> str:
    return keccak_hex(request_order_hash, uint256(first_index))


def chain_task_id(deal: str, index: int) -> str:
    return keccak_hex(deal, uint256(index))


def authorization_hash(worker: str, task_id: str, enclave_challenge: str = ZERO_ADDRESS) -> str:
    return keccak_hex(worker, task_id, enclave_challenge)


def result_hash(task_id: str, result_digest: str) -> str:
    return keccak_hex(task_id, result_digest)


def result_seal(worker: str, task_id: str, result_digest: str) -> str:
    return keccak_hex(worker, task_id, result_digest)


def callback_digest(callback_data: str) -> str:
    return keccak_hex(callback_data)


def sign_eip191(message_hash: str, private_key: bytes | str) -> str:
    """EIP-191 personal signature of a 32-byte hash: ``r ‖ s ‖ v`` with v in {27, 28}."""
    signed = Account.sign_message(encode_defunct(primitive=to_bytes(message_hash)), private_key)
    return to_hex(bytes(signed.signature))


def recover_eip191(message_hash: str, signature: str) -> str:
    """Signer of an EIP-191 signature, lowercase; raises ValueError when it cannot be recovered."""
    try:
        signer = Account.recover_message(
            encode_defunct(primitive=to_bytes(message_hash)), signature=signature
        )
    except (ValueError, TypeError, BadSignature, ValidationError) as exc:
        raise ValueError(f"signature cannot be recovered: {exc}") from exc
    return str(signer).lower()


def java_hex_decode(text: str) -> bytes:
    """web3j ``Numeric.hexStringToByteArray``, including its treatment of non-hex characters.

    The scheduler's login challenge is Base64 text, yet the Java worker decodes it as hex: every
    character that is not a hex digit counts as -1, and each pair is truncated to a byte.
    """

    def digit(c: str) -> int:
        return int(c, 16) if c in "0123456789abcdefABCDEF" else -1

    clean = text[2:] if text.startswith("0x") else text
    out = bytearray()
    start = 0
    if len(clean) % 2 == 1:
        out.append(digit(clean[0]) & 0xFF)
        start = 1
    for i in range(start, len(clean), 2):
        out.append(((digit(clean[i]) << 4) + digit(clean[i + 1])) & 0xFF)
    return bytes(out)


# iexec-core ``ChallengeService``: standard Base64, with padding, of 32 random bytes.
LOGIN_CHALLENGE_BYTES = 32
_LOGIN_CHALLENGE = re.compile(r"^[A-Za-z0-9+/]{43}=$")


class NotALoginChallenge(ValueError):
    """The text to sign at login is not shaped like a scheduler challenge; nothing was signed."""


def is_login_challenge(text: str) -> bool:
    """True for exactly what the scheduler issues: 44 characters of canonical Base64 of 32 bytes.

    The login signature is raw (no EIP-191 prefix), so the worker's key would sign any 32-byte hash
    a scheduler chose. Hashing a 44-character Base64 string the web3j way gives keccak of 22 bytes,
    which can be neither a transaction (its RLP holds a 20-byte address and more) nor an EIP-191 or
    EIP-712 message (2-byte prefix plus at least 32 bytes): the shape check is what makes the raw
    signature harmless.
    """
    if not _LOGIN_CHALLENGE.match(text):
        return False
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    # Canonical only: the unused low bits of the last character must be zero.
    return len(raw) == LOGIN_CHALLENGE_BYTES and base64.b64encode(raw).decode() == text


def login_hash(challenge: str) -> str:
    return to_hex(keccak(java_hex_decode(challenge)))


def sign_login_challenge(challenge: str, private_key: bytes | str) -> str:
    """Raw secp256k1 signature over keccak256(javaHexDecode(challenge)): no EIP-191 prefix.

    Raises ``NotALoginChallenge`` (and signs nothing) unless ``challenge`` has the scheduler's shape.
    """
    if not is_login_challenge(challenge):
        raise NotALoginChallenge(
            f"login challenge of {len(challenge)} characters is not Base64 of {LOGIN_CHALLENGE_BYTES} bytes"
        )
    key = PrivateKey(to_bytes(private_key) if isinstance(private_key, str) else private_key)
    sig = key.sign_msg_hash(to_bytes(login_hash(challenge)))
    return to_hex(sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27]))


def login_signature_matches(challenge: str, signature: str, address: str) -> bool:
    """The scheduler's check: recovery ids 0..3 from r, s only, compared case-insensitively."""
    raw = to_bytes(signature)
    if len(raw) != 65:
        return False
    msg_hash = to_bytes(login_hash(challenge))
    for v in (0, 1):
        try:
            recovered = Signature(vrs=(v, int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")))
            public = recovered.recover_public_key_from_msg_hash(msg_hash)
        except (BadSignature, ValidationError):
            continue
        if public.to_checksum_address().lower() == address.lower():
            return True
    return False


def checksum(address: str) -> str:
    return str(to_checksum_address(address))
