"""Print the OSC messages that arrive on a UDP port: what a patch or the engine would receive.

Bound to 127.0.0.1 by default; ``host`` and ``allow`` follow the engine's network rules
(``netaccess``), and datagrams are decoded as strictly as the engine does (``oscwire``), so the
monitor shows what the engine would accept. Stops by itself after ``count`` messages or
``seconds``, or runs until Ctrl-C.
"""

from __future__ import annotations

import datetime
import reprlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tildekit.models.contract.hosts import DEFAULT_OSC_HOST, DEFAULT_OSC_PORT
from tildekit.models.contract.oscmap import OscMap, OscValueError
from tildekit.scripting.netaccess import AllowList, open_udp_socket
from tildekit.scripting.oscwire import MAX_DATAGRAM, MalformedPacket, decode

# How often a waiting monitor wakes up, so that Ctrl-C is prompt.
POLL_SECONDS = 0.5

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80


@dataclass(frozen=True)
class Received:
    wall_time: float  # time.time() when it arrived
    source: tuple[str, int]  # sender's host and port
    address: str
    args: tuple[Any, ...]


def _stamp(wall_time: float) -> str:
    return datetime.datetime.fromtimestamp(wall_time).strftime("%H:%M:%S.%f")[:-3]


def format_received(message: Received, problem: str | None = None) -> str:
    args = " ".join(_short.repr(a) if not isinstance(a, (int, float)) or isinstance(a, bool) else str(a)
                    for a in message.args)
    line = f"{_stamp(message.wall_time)}  {_short.repr(message.address)[1:-1]} {args}".rstrip()
    return f"{line}   <- INVALID: {problem}" if problem else line


class Monitor:
    """A UDP listener that records every message and hands a printable line to ``on_message``.

    ``osc_map`` (optional) flags messages that the model would reject. Datagrams from senders
    outside ``allow`` are counted in ``rejected``, undecodable ones in ``malformed``.
    """

    def __init__(self, host: str = DEFAULT_OSC_HOST, port: int = DEFAULT_OSC_PORT,
                 on_message: Callable[[str], None] | None = print, osc_map: OscMap | None = None,
                 allow: AllowList | Iterable[str] | None = None) -> None:
        self.allow = allow if isinstance(allow, AllowList) or allow is None else AllowList.parse(allow)
        self._sock = open_udp_socket(host, port, option="--osc-host", port_option="--port")
        self.on_message = on_message
        self.osc_map = osc_map
        self.received: list[Received] = []
        self.rejected = 0
        self.malformed = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): useful when created with port 0."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def _handle(self, data: bytes, source: tuple[str, int]) -> None:
        now = time.time()
        if self.allow is not None and not self.allow.allows(source[0]):
            self.rejected += 1
            return
        try:
            messages = decode(data)
        except MalformedPacket as exc:
            self.malformed += 1
            if self.on_message is not None:
                self.on_message(f"{_stamp(now)}  ({len(data)} bytes from {source[0]}: not OSC: {exc})")
            return
        for address, args in messages:
            message = Received(now, source, address, tuple(args))
            self.received.append(message)
            if self.on_message is None:
                continue
            problem = None
            if self.osc_map is not None:
                try:
                    self.osc_map.parse(address, args)
                except OscValueError as exc:
                    problem = str(exc)
            self.on_message(format_received(message, problem))

    def run(self, count: int | None = None, seconds: float | None = None) -> list[Received]:
        """Serve until ``count`` messages arrived or ``seconds`` passed (both None: forever)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        start = len(self.received)
        while count is None or len(self.received) - start < count:
            if deadline is None:
                self._sock.settimeout(POLL_SECONDS)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._sock.settimeout(min(remaining, POLL_SECONDS))
            try:
                data, source = self._sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            self._handle(data, (str(source[0]), int(source[1])))
        return self.received[start:]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
