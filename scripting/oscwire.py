"""OSC datagrams from the network, decoded strictly in one pass.

python-osc's parser is lenient (a float cut short reads as 0.0, an unknown type tag is skipped
with a warning on the root logger and the arguments after it are misread), and a receiver on a
network must not be. ``decode`` checks the framing while it reads: 4-byte alignment, UTF-8
address and strings, known type tags, argument data that exactly fills the packet, bundles and
arrays nested at most ``MAX_NESTING`` deep. It returns the messages of a datagram (bundles
flattened, time tags ignored: a live engine applies everything at the next buffer) or raises
``MalformedPacket``; it never raises anything else. Arguments come out as python-osc gives them
(int, float, str, bytes, bool, None, lists for arrays; ``t`` as the raw 64-bit time tag, ``m``
as a 4-tuple, ``r`` as an int).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

MAX_DATAGRAM = 65536  # the largest UDP payload; a listener reads this much at most
MAX_NESTING = 8  # bundles in bundles, arrays in arrays

_INT = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")
_FLOAT = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")
_CONSTANTS = {"T": True, "F": False, "N": None}


class MalformedPacket(ValueError):
    """A datagram that is not a well-framed OSC message or bundle."""


class Message(NamedTuple):
    address: str
    args: tuple[Any, ...]


# type tag -> its fixed-size field: f float32, i int32, d float64, h int64, t time tag, r RGBA
_FIXED = {"f": _FLOAT, "i": _INT, "d": _DOUBLE, "h": _INT64, "t": _UINT64, "r": _UINT32}


def _string(data: bytes, start: int, what: str) -> tuple[str, int]:
    """The NUL-terminated, 4-byte padded UTF-8 string at ``start`` and the index after it."""
    nul = data.find(b"\0", start)
    end = (nul // 4 + 1) * 4 if nul >= 0 else -1
    if nul < 0 or end > len(data):
        raise MalformedPacket(f"{what} not terminated")
    try:
        return data[start:nul].decode("utf-8"), end
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not UTF-8 text") from None


def _need(data: bytes, index: int, size: int, tags: str) -> None:
    if index + size > len(data):
        raise MalformedPacket(f"arguments ({tags[:40]}) longer than the packet")


def _message(data: bytes) -> Message:
    address, index = _string(data, 0, "address")
    if index == len(data):
        return Message(address, ())  # no type tag: an argument-less message (OSC 1.0 allows it)
    if data[index:index + 1] != b",":
        raise MalformedPacket("type tag string missing or not starting with ','")
    tags, index = _string(data, index, "type tag string")
    tags = tags[1:]
    args: list[Any] = []
    stack = [args]
    for tag in tags:
        fixed = _FIXED.get(tag)
        if fixed is not None:  # numbers, time tags, colours: one fixed-size big-endian field
            _need(data, index, fixed.size, tags)
            value: Any = fixed.unpack_from(data, index)[0]
            index += fixed.size
        elif tag == "m":
            _need(data, index, 4, tags)
            value = tuple(data[index:index + 4])
            index += 4
        elif tag == "s":
            if index >= len(data):
                raise MalformedPacket(f"arguments ({tags[:40]}) longer than the packet")
            value, index = _string(data, index, "string argument")
        elif tag == "b":
            _need(data, index, 4, tags)
            size = _INT.unpack_from(data, index)[0]
            if size < 0:
                raise MalformedPacket("negative blob size")
            _need(data, index, 4 + (size + 3) // 4 * 4, tags)
            value = data[index + 4:index + 4 + size]
            index += 4 + (size + 3) // 4 * 4
        elif tag in _CONSTANTS:
            value = _CONSTANTS[tag]
        elif tag == "[":
            if len(stack) > MAX_NESTING:
                raise MalformedPacket("arrays nested too deep")
            array: list[Any] = []
            stack[-1].append(array)
            stack.append(array)
            continue
        elif tag == "]":
            if len(stack) == 1:
                raise MalformedPacket("']' without its '['")
            stack.pop()
            continue
        else:
            raise MalformedPacket(f"unknown type tag {tag!r}")
        stack[-1].append(value)
    if len(stack) > 1:
        raise MalformedPacket("'[' without its ']'")
    if index != len(data):
        raise MalformedPacket(f"{len(data) - index} bytes after the arguments ({tags[:40]})")
    return Message(address, tuple(args))


def _collect(data: bytes, depth: int, out: list[Message]) -> None:
    if len(data) % 4 or not data:
        raise MalformedPacket(f"size {len(data)} is not a positive multiple of 4")
    if data.startswith(b"#bundle\0"):
        if depth >= MAX_NESTING:
            raise MalformedPacket("bundles nested too deep")
        if len(data) < 16:  # "#bundle\0" + 8-byte time tag
            raise MalformedPacket("bundle shorter than its header")
        index = 16
        while index < len(data):
            if index + 4 > len(data):
                raise MalformedPacket("bundle element without its size")
            size = _INT.unpack_from(data, index)[0]
            index += 4
            if size <= 0 or size % 4 or index + size > len(data):
                raise MalformedPacket(f"bundle element size {size} does not fit")
            _collect(data[index:index + size], depth + 1, out)
            index += size
        return
    if not data.startswith(b"/"):
        raise MalformedPacket("neither a message (starts with '/') nor a bundle")
    out.append(_message(data))


def decode(data: bytes) -> list[Message]:
    """The messages in one datagram, in order, or ``MalformedPacket`` saying why not."""
    if len(data) > MAX_DATAGRAM:
        raise MalformedPacket(f"{len(data)} bytes: larger than a UDP datagram")
    messages: list[Message] = []
    _collect(bytes(data), 0, messages)
    return messages


def osc_framing_problem(data: bytes) -> str | None:
    """Why ``data`` is not a well-framed OSC packet (None if it is)."""
    try:
        decode(data)
    except MalformedPacket as exc:
        return str(exc)
    return None
