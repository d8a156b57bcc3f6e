"""CIDs as IPFS nodes write them, hand-written so the embedded store needs no multiformats dependency.

Supported: CIDv0 (base58btc text, "Qm..."), CIDv1 (multibase text; written as base32 lower, "b...", read also
as base32 upper, base58btc "z..." — what js-ipfs prints by default — and base16 "f..."), the sha2-256
multihash only, and the codecs raw (0x55) and dag-pb (0x70). Anything else is an `InvalidCid`: a store that
cannot verify a block's hash must not pretend to hold it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from registry.store.base import InvalidCid

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
SHA2_256_LEN = 32
CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_MH_PREFIX = bytes((SHA2_256, SHA2_256_LEN))


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128, the varint of multiformats and protobuf."""
    if n < 0:
        raise ValueError("varint of a negative number")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, next position); at most 9 bytes (63 bits), minimal encoding, as the multiformats spec asks."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and pos - start > 1:
                raise ValueError("non-minimal varint")
            return result, pos
        shift += 7
        if shift >= 63:
            raise ValueError("varint too long")


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise ValueError(f"invalid base58 character {c!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase 'b')."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    pad = "=" * (-len(text) % 8)
    return base64.b32decode(text.upper() + pad)


@dataclass(frozen=True, slots=True)
class CID:
    """A content identifier: version, codec and sha2-256 multihash. `str(cid)` is the canonical text."""

    version: int
    codec: int
    multihash: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCid(f"unsupported CID version {self.version}")
        if self.codec not in CODEC_NAMES:
            raise InvalidCid(f"unsupported codec 0x{self.codec:x} (only raw and dag-pb)")
        if self.version == 0 and self.codec != DAG_PB:
            raise InvalidCid("CIDv0 is always dag-pb")
        if len(self.multihash) != 2 + SHA2_256_LEN or self.multihash[:2] != _MH_PREFIX:
            raise InvalidCid("unsupported multihash (only sha2-256)")

    @classmethod
    def of(cls, data: bytes | memoryview, codec: int = RAW, version: int = 1) -> CID:
        """The CID of a block's bytes."""
        return cls(version, codec, _MH_PREFIX + hashlib.sha256(data).digest())

    @classmethod
    def from_digest(cls, digest: bytes, codec: int = RAW, version: int = 1) -> CID:
        return cls(version, codec, _MH_PREFIX + digest)

    @property
    def digest(self) -> bytes:
        """The raw sha256 digest the block's bytes must hash to."""
        return self.multihash[2:]

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def to_bytes(self) -> bytes:
        """Binary form, as stored in dag-pb links."""
        if self.version == 0:
            return self.multihash
        return bytes((1, self.codec)) + self.multihash

    def to_v1(self) -> CID:
        return CID(1, self.codec, self.multihash)

    def matches(self, data: bytes | memoryview) -> bool:
        return hashlib.sha256(data).digest() == self.digest

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.to_bytes())

    def __repr__(self) -> str:
        return f"CID({self})"

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> CID:
        """Parses a binary CID; the whole input must be consumed."""
        raw = bytes(raw)
        if len(raw) == 34 and raw[:2] == _MH_PREFIX:
            return cls(0, DAG_PB, raw)
        try:
            version, pos = decode_varint(raw, 0)
            if version != 1:
                raise InvalidCid(f"unsupported CID version {version}")
            codec, pos = decode_varint(raw, pos)
            mh_code, mh_pos = decode_varint(raw, pos)
            mh_len, digest_pos = decode_varint(raw, mh_pos)
        except ValueError as exc:
            raise InvalidCid(f"malformed binary CID: {exc}") from None
        if mh_code != SHA2_256 or mh_len != SHA2_256_LEN:
            raise InvalidCid(f"unsupported multihash 0x{mh_code:x}/{mh_len} (only sha2-256)")
        if len(raw) != digest_pos + mh_len:
            raise InvalidCid("binary CID has a wrong length")
        return cls(1, codec, raw[pos:])

    @classmethod
    def parse(cls, value: str | bytes | CID) -> CID:
        """A CID from its text (v0 base58 or v1 multibase), its binary form, or a CID."""
        if isinstance(value, CID):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return cls.from_bytes(value)
        text = value.strip()
        if not text:
            raise InvalidCid("empty CID")
        try:
            if len(text) == 46 and text.startswith("Qm"):
                raw = b58decode(text)
                if len(raw) != 34:
                    raise ValueError("wrong length")
                return cls(0, DAG_PB, raw)
            prefix, body = text[0], text[1:]
            if prefix == "b":
                if body != body.lower():
                    raise ValueError("mixed case base32")
                raw = b32decode(body)
            elif prefix == "B":
                if body != body.upper():
                    raise ValueError("mixed case base32")
                raw = b32decode(body)
            elif prefix == "z":
                raw = b58decode(body)
            elif prefix in "fF":
                raw = bytes.fromhex(body)
            else:
                raise ValueError(f"unsupported multibase prefix {prefix!r}")
        except (ValueError, TypeError) as exc:
            raise InvalidCid(f"not a CID: {text[:80]!r} ({exc})") from None
        if raw[:1] != b"\x01":
            raise InvalidCid(f"not a CIDv1: {text[:80]!r}")
        return cls.from_bytes(raw)
