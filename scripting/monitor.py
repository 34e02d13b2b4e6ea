"""Print the OSC messages that arrive on a UDP port: what a patch or the engine would receive.

Bound to 127.0.0.1 by default (pass host="0.0.0.0" to listen on the network). Stops by
itself after ``count`` messages or ``seconds``, or runs until Ctrl-C.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any, Callable

from tildekit.errors import TildekitError
from tildekit.scripting.oscmap import OscMap, OscValueError


@dataclass(frozen=True)
class Received:
    wall_time: float  # time.time() when it arrived
    source: tuple[str, int]  # sender's host and port
    address: str
    args: tuple[Any, ...]


def format_received(message: Received, problem: str | None = None) -> str:
    stamp = datetime.datetime.fromtimestamp(message.wall_time).strftime("%H:%M:%S.%f")[:-3]
    args = " ".join(repr(a) if isinstance(a, str) else str(a) for a in message.args)
    line = f"{stamp}  {message.address} {args}".rstrip()
    return f"{line}   <- INVALID: {problem}" if problem else line


class Monitor:
    """A python-osc UDP server that records every message and hands it to ``on_message``.

    ``osc_map`` (optional) flags messages that the model would reject.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9000,
                 on_message: Callable[[str], None] | None = print, osc_map: OscMap | None = None) -> None:
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import BlockingOSCUDPServer

        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._handle, needs_reply_address=True)
        try:
            self._server = BlockingOSCUDPServer((host, port), dispatcher)
        except OSError as exc:
            raise TildekitError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): "
                                f"is another program using that port? try --port") from None
        self.on_message = on_message
        self.osc_map = osc_map
        self.received: list[Received] = []

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): useful when created with port 0."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _handle(self, source: tuple[str, int], address: str, *args: Any) -> None:
        message = Received(time.time(), source, address, tuple(args))
        self.received.append(message)
        if self.on_message is not None:
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
                self._server.timeout = 0.5  # wakes up now and then, so Ctrl-C is prompt
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._server.timeout = remaining
            self._server.handle_request()
        return self.received[start:]

    def close(self) -> None:
        self._server.server_close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
