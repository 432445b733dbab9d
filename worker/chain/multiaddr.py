"""Dataset locations stored on chain as multiaddr bytes (iexec-commons-poco ``MultiAddressHelper``).

Registries store either the text of a URL (``https://…``, ``/ipfs/Qm…``) or a binary multiaddr. The
only binary form iExec tools write is ``/ipfs/<cid>`` (protocol code 421), decoded here with py-cid;
anything else is taken as text. No general multiaddr library is installed, and none is needed for
this one protocol. py-cid (and the multihash tables it loads) is imported on the first binary
multiaddr, not with the worker: most datasets never need it.
"""

from __future__ import annotations

_IPFS_CODE = 421  # "ipfs" in the multiaddr table (renamed "p2p" later; same code)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _ipfs_path(raw: bytes) -> str | None:
    try:
        code, pos = _varint(raw, 0)
        if code != _IPFS_CODE:
            return None
        size, pos = _varint(raw, pos)
        body = raw[pos : pos + size]
        if len(body) != size or pos + size != len(raw):
            return None
        import cid

        # CIDv0 is a bare sha2-256 multihash; CIDv1 starts with its version byte.
        parsed = cid.make_cid(0, "dag-pb", body) if body[:2] == b"\x12\x20" else cid.from_bytes(body)
    except ValueError:
        return None
    return f"/ipfs/{parsed}"


def multiaddr_to_uri(raw: bytes) -> str:
    """``/ipfs/<cid>`` for a binary IPFS multiaddr, otherwise the bytes read as text."""
    return _ipfs_path(raw) or raw.decode("utf-8", errors="replace")


def ipfs_multiaddr(cid_text: str) -> bytes:
    """Binary multiaddr of ``/ipfs/<cid>``: what a registry holds for an IPFS-hosted dataset."""
    import cid

    body: bytes = cid.make_cid(cid_text).buffer

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    return varint(_IPFS_CODE) + varint(len(body)) + body
