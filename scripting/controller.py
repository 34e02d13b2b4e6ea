"""Send a model's OSC messages: every message is checked against its OscMap before it leaves.

    from tildekit.scripting.controller import Controller
    with Controller.for_model("model.ts", port=9000) as ctl:
        ctl.set_latent(0, 0.5)
        ctl.set_attr("temperature", 0.8)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tildekit.errors import TildekitError
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import DEFAULT_OSC_HOST, DEFAULT_OSC_PORT
from tildekit.models.contract.oscmap import OscMap, OscValueError
from tildekit.scripting.schedule import PlayReport, Scheduler, TimedMessage

if TYPE_CHECKING:
    from pythonosc.udp_client import SimpleUDPClient



class ControlError(OscValueError, TildekitError):
    """A message that does not fit the model's address space (the CLI prints it on one line)."""


def plain_value(value: Any) -> Any:
    """numpy scalars -> Python numbers, so validation and OSC type tags see int/float/bool."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return value


def full_address(osc_map: OscMap, address: str) -> str:
    """``latent/0`` -> ``/tildekit/NAME/latent/0``; absolute addresses are kept."""
    if address.startswith("/"):
        return address
    return f"{osc_map.prefix}/{address.strip('/')}"


def osc_args(values: Sequence[Any]) -> list[Any]:
    """Arguments as python-osc types them: int -> i, float -> f, str -> s.

    Bools go out as the words ``true`` / ``false``: Pd 0.53's ``oscparse`` drops the OSC T/F
    type tags, and every tildekit receiver (patches, engine) accepts the words.
    """
    out = []
    for value in map(plain_value, values):
        out.append(("true" if value else "false") if isinstance(value, bool) else value)
    return out


class Controller:
    """An OSC client for one model: validated setters over a UDP socket."""

    def __init__(self, host: str = DEFAULT_OSC_HOST, port: int = DEFAULT_OSC_PORT, card: ModelCard | None = None,
                 name: str | None = None) -> None:
        if card is None:
            raise TildekitError("Controller needs the model card: pass card=..., or use "
                                "Controller.for_model('model.ts')")
        if not 0 < int(port) < 65536:
            raise TildekitError(f"OSC port must be 1..65535, got {port}")
        self.card = card
        self.map = OscMap(card, name)
        self.host = host
        self.port = int(port)
        self._client = udp_client(host, self.port)

    @classmethod
    def for_model(cls, path: str | Path, host: str = DEFAULT_OSC_HOST, port: int = DEFAULT_OSC_PORT,
                  name: str | None = None) -> Controller:
        """A controller for an exported model file (.ts / .nm / .onnx), from its embedded card."""
        return cls(host, port, card=read_model_card(path), name=name)

    # -- low level ---------------------------------------------------------------------
    def validate(self, address: str, args: Sequence[Any] = ()) -> tuple[str, tuple[Any, ...]]:
        """The absolute address and the arguments to send, or ``ControlError`` saying why not.

        Arguments come back in their canonical types (latents as floats, attributes as the
        card types them), so an int typed by a user still goes out as an OSC float.
        """
        address = full_address(self.map, address)
        try:
            control = self.map.parse(address, [plain_value(a) for a in args])
        except OscValueError as exc:
            raise ControlError(str(exc)) from None
        return address, tuple(control.values)

    def send_checked(self, address: str, args: Sequence[Any]) -> None:
        """Send a message that ``validate`` already returned (no second check: hot path)."""
        try:
            self._client.send_message(address, osc_args(args))
        except OSError as exc:
            raise TildekitError(f"cannot send OSC to {self.host}:{self.port}: {exc.strerror or exc}") from None

    def send(self, address: str, *args: Any) -> None:
        """Validate and send one message; ``address`` may be relative (``latent/0``)."""
        self.send_checked(*self.validate(address, args))

    def play(self, messages: Iterable[TimedMessage], scheduler: Scheduler | None = None) -> PlayReport:
        """Validate every message first (nothing is sent if one is bad), then send them on time."""
        checked = [TimedMessage(m.time, *self.validate(m.address, m.args)) for m in messages]
        return (scheduler or Scheduler()).play(checked, self.send_checked)

    # -- the address space -------------------------------------------------------------
    def set_latent(self, index: int, value: float) -> None:
        self.send(self.map.latent(index), value)

    def set_latents(self, values: Sequence[float]) -> None:
        self.send(self.map.bias_all, *values)

    def set_scale(self, index: int, value: float) -> None:
        self.send(self.map.latent_scale(index), value)

    def set_scales(self, values: Sequence[float]) -> None:
        self.send(self.map.scale_all, *values)

    def set_attr(self, name: str, *values: Any) -> None:
        self.send(self.map.attr(name), *values)

    def set_gain(self, gain: float) -> None:
        self.send(self.map.gain, gain)

    def reset(self) -> None:
        self.send(self.map.reset)

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Controller({self.map.prefix} -> {self.host}:{self.port})"


def udp_client(host: str, port: int) -> SimpleUDPClient:
    """A python-osc UDP client, or a clear error if the host does not resolve."""
    from pythonosc.udp_client import SimpleUDPClient  # keeps `import controller` cheap

    try:
        return SimpleUDPClient(host, port)
    except OSError as exc:  # socket.gaierror for an unknown host name
        raise TildekitError(f"cannot send OSC to {host}:{port}: {exc.strerror or exc} "
                            f"(check --host)") from None


def read_model_card(path: str | Path) -> ModelCard:
    """The card embedded in an exported model file, with a clear error if there is none."""
    path = Path(path)
    if not path.is_file():
        raise TildekitError(f"model file {path} not found: pass the path of an exported model "
                            f"(tildekit export RUN_DIR writes one)")
    if path.suffix.lower() == ".ts":
        try:  # an nn~ file without a tildekit card: its card is derived from its methods (torch)
            from tildekit.export.card_io import model_card
        except ImportError as exc:
            raise TildekitError(f"cannot read nn~ TorchScript files in this install ({exc})") from None
        return model_card(path, measure_delays=False)
    try:
        from tildekit.export.card_io import read_card
    except ImportError as exc:
        raise TildekitError(f"cannot read model cards in this install ({exc})") from None
    return read_card(path)
