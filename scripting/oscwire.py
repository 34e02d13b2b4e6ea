"""OSC datagrams from the network: a strict framing check, then python-osc's parser.

python-osc is lenient (a float cut short reads as 0.0, an unknown type tag is skipped with a
warning on the root logger and the arguments after it are misread), so a listener checks the
framing first: 4-byte alignment, a type tag string of types python-osc reads, argument data that
exactly fills the packet, bundles and arrays nested at most ``MAX_NESTING`` deep. ``decode``
returns the messages of a datagram (bundles flattened, time tags ignored) or raises
``MalformedPacket``; it never raises anything else.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pythonosc.osc_packet import OscPacket

MAX_DATAGRAM = 65536  # the largest UDP payload; a listener reads this much at most
MAX_NESTING = 8  # bundles in bundles, arrays in arrays

# Argument sizes of the type tags python-osc reads; strings and blobs are sized from the data.
_FIXED_SIZES = {"i": 4, "f": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8,
                "T": 0, "F": 0, "N": 0, "[": 0, "]": 0}


class MalformedPacket(ValueError):
    """A datagram that is not a well-framed OSC message or bundle."""


class Message(NamedTuple):
    address: str
    args: tuple[Any, ...]


def _padded_string_end(data: bytes, start: int) -> int:
    """End of the NUL-terminated, 4-byte padded string at ``start``, or -1."""
    nul = data.find(b"\0", start)
    if nul < 0:
        return -1
    end = (nul // 4 + 1) * 4
    return end if end <= len(data) else -1


def osc_framing_problem(data: bytes, depth: int = 0) -> str | None:
    """Why ``data`` is not a well-framed OSC packet (None if it is)."""
    if len(data) % 4 or not data:
        return f"size {len(data)} is not a positive multiple of 4"
    if data.startswith(b"#bundle\0"):
        if depth >= MAX_NESTING:
            return "bundles nested too deep"
        index = 16  # "#bundle\0" + 8-byte time tag
        if len(data) < index:
            return "bundle shorter than its header"
        while index < len(data):
            if index + 4 > len(data):
                return "bundle element without its size"
            size = int.from_bytes(data[index:index + 4], "big", signed=True)
            index += 4
            if size <= 0 or size % 4 or index + size > len(data):
                return f"bundle element size {size} does not fit"
            problem = osc_framing_problem(data[index:index + size], depth + 1)
            if problem:
                return problem
            index += size
        return None
    if not data.startswith(b"/"):
        return "neither a message (starts with '/') nor a bundle"
    index = _padded_string_end(data, 0)
    if index < 0:
        return "address not terminated"
    try:
        data[:index].rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        return "address is not UTF-8 text"
    if index == len(data):
        return None  # no type tag: an argument-less message (OSC 1.0 allows it)
    tag_end = _padded_string_end(data, index)
    if tag_end < 0 or data[index:index + 1] != b",":
        return "type tag string missing or not starting with ','"
    tags = data[index + 1:data.find(b"\0", index)].decode("ascii", "replace")
    index = tag_end
    arrays = 0
    for tag in tags:
        if tag == "[":
            arrays += 1
            if arrays > MAX_NESTING:
                return "arrays nested too deep"
        elif tag == "]":
            arrays -= 1
            if arrays < 0:
                return "']' without its '['"
        if tag in _FIXED_SIZES:
            index += _FIXED_SIZES[tag]
        elif tag == "s":
            end = _padded_string_end(data, index)
            if end < 0:
                return "string argument not terminated"
            try:
                data[index:end].rstrip(b"\0").decode("utf-8")
            except UnicodeDecodeError:
                return "string argument is not UTF-8 text"
            index = end
        elif tag == "b":
            if index + 4 > len(data):
                return "blob without its size"
            size = int.from_bytes(data[index:index + 4], "big", signed=True)
            if size < 0:
                return "negative blob size"
            index += 4 + (size + 3) // 4 * 4
        else:
            return f"unknown type tag {tag!r}"
        if index > len(data):
            return f"arguments ({tags[:40]}) longer than the packet"
    if arrays:
        return "'[' without its ']'"
    if index != len(data):
        return f"{len(data) - index} bytes after the arguments ({tags[:40]})"
    return None


def decode(data: bytes) -> list[Message]:
    """The messages in one datagram, in order, or ``MalformedPacket`` saying why not."""
    if len(data) > MAX_DATAGRAM:
        raise MalformedPacket(f"{len(data)} bytes: larger than a UDP datagram")
    problem = osc_framing_problem(data)
    if problem is not None:
        raise MalformedPacket(problem)
    try:
        return [Message(timed.message.address, tuple(timed.message.params))
                for timed in OscPacket(data).messages]
    except Exception as exc:  # ParseError, but also struct/index/unicode errors
        raise MalformedPacket(" ".join(str(exc).split())[:120]) from None
