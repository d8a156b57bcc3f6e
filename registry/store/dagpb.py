"""dag-pb (PBNode/PBLink) and UnixFS `Data` protobufs, hand-written: a few fields, no protobuf dependency.

Encoding is byte-for-byte what go-ipfs/Kubo (go-codec-dagpb) and js-ipfs (@ipld/dag-pb) emit, since the
CID is the hash of these bytes: PBNode writes its Links (field 2) before Data (field 1); every link writes
Hash, then Name (even when empty), then Tsize; UnixFS writes Type, Data, filesize, then one unpacked
`blocksizes` entry per child. Decoding is strict about dag-pb (only its two fields; a hostile block gets a
`Malformed`, never an exception from deep inside) and tolerant of UnixFS fields it does not use (mode, mtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry.store.base import InvalidCid, Malformed
from registry.store.cid import CID, decode_varint, encode_varint

# UnixFS Data.DataType
T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT_SHARD = range(6)
TYPE_NAMES = {T_RAW: "raw", T_DIRECTORY: "directory", T_FILE: "file", T_METADATA: "metadata",
              T_SYMLINK: "symlink", T_HAMT_SHARD: "hamt-sharded directory"}


@dataclass(frozen=True, slots=True)
class Link:
    """A PBLink: the child's CID, its name ("" inside files) and Tsize, the cumulative DAG size."""

    cid: CID
    name: str
    tsize: int


@dataclass(slots=True)
class UnixFSData:
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    has_data: bool = False
    hash_type: int | None = None
    fanout: int | None = None


def _field_bytes(tag: int, payload: bytes | memoryview) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def encode_link(link: Link) -> bytes:
    name = link.name.encode("utf-8")
    body = (_field_bytes(0x0A, link.cid.to_bytes()) + _field_bytes(0x12, name)
            + b"\x18" + encode_varint(link.tsize))
    return _field_bytes(0x12, body)


def encode_node(data: bytes | None, links: list[Link] | tuple[Link, ...] = ()) -> bytes:
    """A PBNode's bytes: links in the order given (callers sort directory links), then Data when not None."""
    parts = [encode_link(link) for link in links]
    if data is not None:
        parts.append(_field_bytes(0x0A, data))
    return b"".join(parts)


def encode_unixfs(type_: int, data: bytes | memoryview | None = None, filesize: int | None = None,
                  blocksizes: list[int] | tuple[int, ...] = ()) -> bytes:
    """A UnixFS Data message; `data` None omits the field (Go's nil slice: empty files, internal nodes)."""
    out = bytearray(b"\x08")
    out += encode_varint(type_)
    if data is not None:
        out += b"\x12"
        out += encode_varint(len(data))
        out += data
    if filesize is not None:
        out += b"\x18"
        out += encode_varint(filesize)
    for size in blocksizes:
        out += b"\x20"
        out += encode_varint(size)
    return bytes(out)


def file_leaf(chunk: bytes | memoryview) -> bytes:
    """A dag-pb leaf holding one chunk, as `ipfs add` without raw leaves writes it: equal to
    `encode_node(encode_unixfs(T_FILE, chunk or None, len(chunk)))`, with the chunk copied once."""
    n = len(chunk)
    if not n:
        return encode_node(encode_unixfs(T_FILE, None, 0))
    size = encode_varint(n)
    unixfs_len = 2 + 1 + len(size) + n + 1 + len(size)
    head = b"\x0a" + encode_varint(unixfs_len) + b"\x08\x02\x12" + size
    return b"".join((head, chunk, b"\x18", size))


DIRECTORY_DATA = encode_unixfs(T_DIRECTORY)


# --- decoding -------------------------------------------------------------------------------------------

def _read_len(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    n, pos = decode_varint(buf, pos)
    if pos + n > end:
        raise ValueError("length-delimited field runs past its message")
    return pos + n, pos


def _skip(buf: bytes, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return decode_varint(buf, pos)[1]
    if wire == 1:
        pos += 8
    elif wire == 2:
        pos = _read_len(buf, pos, end)[0]
    elif wire == 5:
        pos += 4
    else:
        raise ValueError(f"unsupported wire type {wire}")
    if pos > end:
        raise ValueError("field runs past its message")
    return pos


def _decode_link(buf: bytes, pos: int, end: int) -> Link:
    cid: CID | None = None
    name = ""
    tsize = 0
    while pos < end:
        key, pos = decode_varint(buf, pos)
        if key == 0x0A:
            stop, start = _read_len(buf, pos, end)
            cid = CID.from_bytes(buf[start:stop])
            pos = stop
        elif key == 0x12:
            stop, start = _read_len(buf, pos, end)
            name = buf[start:stop].decode("utf-8")
            pos = stop
        elif key == 0x18:
            tsize, pos = decode_varint(buf, pos)
        else:
            raise ValueError(f"unexpected PBLink field key {key}")
    if pos != end:
        raise ValueError("PBLink overruns")
    if cid is None:
        raise ValueError("PBLink without Hash")
    return Link(cid, name, tsize)


def decode_node(block: bytes) -> tuple[bytes | None, list[Link]]:
    """(Data or None, Links) of a dag-pb block; `Malformed` on anything that is not valid dag-pb."""
    data: bytes | None = None
    links: list[Link] = []
    pos, end = 0, len(block)
    try:
        while pos < end:
            key, pos = decode_varint(block, pos)
            if key == 0x12:
                stop, start = _read_len(block, pos, end)
                links.append(_decode_link(block, start, stop))
                pos = stop
            elif key == 0x0A:
                if data is not None:
                    raise ValueError("duplicate Data field")
                stop, start = _read_len(block, pos, end)
                data = block[start:stop]
                pos = stop
            else:
                raise ValueError(f"unexpected PBNode field key {key}")
    except InvalidCid as exc:
        raise Malformed(f"dag-pb link with an unusable CID: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"invalid dag-pb block: {exc}") from None
    return data, links


def decode_unixfs(raw: bytes) -> UnixFSData:
    """The UnixFS Data message of a dag-pb node; `Malformed` when it is missing its type or is not protobuf."""
    type_: int | None = None
    out = UnixFSData(type=-1)
    pos, end = 0, len(raw)
    try:
        while pos < end:
            key, pos = decode_varint(raw, pos)
            fnum, wire = key >> 3, key & 7
            if fnum == 1 and wire == 0:
                type_, pos = decode_varint(raw, pos)
            elif fnum == 2 and wire == 2:
                stop, start = _read_len(raw, pos, end)
                out.data, out.has_data = raw[start:stop], True
                pos = stop
            elif fnum == 3 and wire == 0:
                out.filesize, pos = decode_varint(raw, pos)
            elif fnum == 4 and wire == 0:
                size, pos = decode_varint(raw, pos)
                out.blocksizes.append(size)
            elif fnum == 4 and wire == 2:  # packed form, as some writers emit it
                stop, pos = _read_len(raw, pos, end)
                while pos < stop:
                    size, pos = decode_varint(raw, pos)
                    out.blocksizes.append(size)
                if pos != stop:
                    raise ValueError("packed blocksizes overrun")
            elif fnum == 5 and wire == 0:
                out.hash_type, pos = decode_varint(raw, pos)
            elif fnum == 6 and wire == 0:
                out.fanout, pos = decode_varint(raw, pos)
            elif fnum == 0:
                raise ValueError("field number 0")
            else:
                pos = _skip(raw, pos, end, wire)
    except ValueError as exc:
        raise Malformed(f"invalid UnixFS data: {exc}") from None
    if type_ is None:
        raise Malformed("UnixFS data without a type")
    if type_ not in TYPE_NAMES:
        raise Malformed(f"unknown UnixFS type {type_}")
    out.type = type_
    return out
