"""What a generated patch holds, decided once from the model card and the OSC map.

Both hosts (Pure Data and Max) render the same :class:`PatchSpec`: the nn~ objects and their
inlet/outlet counts, the latent controls and their ranges, the attribute messages, the OSC
routes and the user notes. Only the spelling of objects differs per host (``build.py``).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from tildekit.errors import TildekitError
from tildekit.models.contract.card import AttributeSpec, ModelCard, is_derived
from tildekit.models.contract.hosts import DEFAULT_BUFFER, DEFAULT_OSC_HOST, DEFAULT_OSC_PORT, check_buffer
from tildekit.models.contract.names import shown
from tildekit.models.contract.nn_host import nn_host_delay
from tildekit.models.contract.oscmap import GAIN_RANGE, OscMap
from tildekit.patches.graph import ATOM_PUNCTUATION

FALLBACK_LATENT_RANGE = (-3.0, 3.0)
SCALE_SLIDER_RANGE = (-2.0, 2.0)  # a usable slider; OSC may send more (the slider clips)
# nn~ 1-in/1-out methods in Pd keep 4096-sample internal buffers unless told otherwise
# (docs/contracts.md §1): a [bufsize N( after creation makes them honour BUFFER.
PD_FIXED_BUFFER = 4096
HOSTS = ("pd", "max")


@dataclass(frozen=True)
class NnObject:
    method: str
    model_ref: str
    buffer: int
    inlets: int  # nn~ creates max(1, in_channels) signal inlets; the first takes messages
    outlets: int  # and one signal outlet per output channel
    one_in_one_out: bool

    @property
    def text(self) -> str:
        return f"nn~ {self.model_ref} {self.method} {self.buffer}"


@dataclass(frozen=True)
class LatentControl:
    index: int
    label: str
    bias_range: tuple[float, float]
    scale_range: tuple[float, float]
    bias_name: str  # send/receive name driving the bias slider
    scale_name: str


@dataclass(frozen=True)
class AttributeControl:
    name: str
    types: tuple[str, ...]
    default: tuple
    minimum: float | None
    maximum: float | None
    description: str
    receive: str

    @property
    def is_bool(self) -> bool:  # nn~ in Pd only understands the words true/false
        return self.types == ("bool",)

    @property
    def is_number(self) -> bool:
        return len(self.types) == 1 and self.types[0] in ("int", "float")

    @property
    def is_ranged(self) -> bool:
        """One float with a range: a slider plays it (a knob of an effect, a DDSP gain, ...)."""
        return (self.types == ("float",) and self.minimum is not None and self.maximum is not None
                and self.maximum > self.minimum)

    @property
    def default_message(self) -> str:
        return "set " + " ".join([self.name, *(_word(v) for v in self.default)])


@dataclass(frozen=True)
class OscRoute:
    """One OSC address and where its arguments go (send names)."""

    address: str
    path: tuple[str, ...]  # address components, e.g. ("tildekit", "tiny", "latent", "0")
    nargs: int
    targets: tuple[str, ...]  # one name: whole message; several: one argument each
    description: str


@dataclass(frozen=True)
class PatchSpec:
    card: ModelCard
    stem: str  # file-name stem of the patches (the model file's stem)
    model_ref: str
    buffer: int
    osc_port: int
    osc_host: str  # address the Pd receiver binds (Max's udpreceive cannot choose one)
    prefix: str  # of every send/receive name, unique per model
    latents: tuple[LatentControl, ...]
    attributes: tuple[AttributeControl, ...]
    gain_name: str
    reset_name: str
    gain_range: tuple[float, float]
    routes: tuple[OscRoute, ...]
    encode: NnObject | None
    decode: NnObject | None
    forward: NnObject | None

    @property
    def note_name(self) -> str:
        return note_receive(self.prefix)

    @property
    def osc_abstraction(self) -> str:
        return f"{self.stem}-osc"

    def method(self, name: str) -> NnObject | None:
        """The nn~ box of any method of the card (``encode``, ``forward``, ``synth``, ...)."""
        return nn_object(self.card, name, self.model_ref, self.buffer)

    def attribute(self, name: str) -> AttributeControl | None:
        return next((a for a in self.attributes if a.name == name), None)

    def notes(self, host: str, kind: str) -> list[str]:
        """Comments for a first-time user, in reading order."""
        sr = self.card.sample_rate
        what = "nn~ model" if is_derived(self.card) else "tildekit model"
        shape = f"{self.card.latent_size} latent dimensions, " if self.card.latent_size else ""
        lines = [f"{what} '{self.card.name}': {self.card.channels} channel(s) at {sr} Hz, "
                 f"{shape}model delay {self.card.delay_ms:.1f} ms"]
        dsp = ("turn DSP on (Media > DSP On, or Ctrl+/)" if host == "pd"
               else "turn audio on (click ezdac~ or Options > Audio Status)")
        source = "play MIDI notes (or click the note messages)" if kind == "synth" else "play into the input"
        lines.append(f"1. {dsp}, then {source}")
        lines.append(f"2. nn~ loads {self.model_ref} relative to this patch: keep the model there "
                     f"(or edit the nn~ boxes)")
        if host == "max" and "/" in self.model_ref:
            lines.append("   Max finds models by name in its search path: if nn~ cannot find it, add the "
                         "model's folder in Options > File Preferences")
        nn = [o for o in (self.encode, self.decode) if o] if kind == "transfer" else [self.method(kind)]
        latency = sum(host_latency(host, o) + self.card.methods[o.method].delay for o in nn if o)
        lines.append(f"3. buffer {self.buffer}: about {1000 * latency / sr:.0f} ms in to out. Smaller "
                     f"buffers cut latency and cost CPU (powers of two >= {self.card.highest_ratio}. "
                     f"), regenerate with: tildekit patch MODEL.ts --buffer N")
        lines.append("4. nn~ missing? install it from https://github.com/acids-ircam/nn_tilde "
                     + ("(Pd: Help > Find externals > nn~)" if host == "pd" else "(Max: Package Manager > nn~)"))
        lines.append(f"5. OSC: send to UDP port {self.osc_port} (edit the [{self.osc_abstraction} "
                     f"{self.osc_port}] box), addresses {OscMap(self.card).prefix}/...")
        if host == "pd":
            lines.append(f"   the receiver listens on {self.osc_host} only ("
                         + ("this machine" if ipaddress.ip_address(self.osc_host).is_loopback else "that interface")
                         + "): regenerate with --osc-host to change it")
        else:
            lines.append("   Max's udpreceive listens on every network interface: on a shared network, "
                         "block the port in the firewall")
        return lines


def host_latency(host: str, obj: NnObject) -> int:
    """Samples the host adds around one nn~ object (docs/contracts.md §1), block size 64 in Pd."""
    if host == "pd":
        # one-in/one-out objects get [bufsize B( from the patch, so 2B - 64 holds for all
        return nn_host_delay(obj.buffer, one_in_one_out=True, bufsize_sent=True)
    return obj.buffer


def model_reference(model_file: str | Path, patch_dir: str | Path) -> str:
    """How a patch in ``patch_dir`` names ``model_file`` for nn~ (relative, '/' separated)."""
    model_file = Path(model_file)
    if model_file.suffix.lower() in (".nm", ".onnx"):
        raise TildekitError(
            f"{model_file}: nn~ loads TorchScript .ts exports, not {model_file.suffix} files; "
            f"pass the .ts file from the same `tildekit export`")
    ref = Path(os.path.relpath(model_file.resolve(), Path(patch_dir).resolve())).as_posix()
    bad = sorted({ch for ch in ref if not (ch.isalnum() or ch in ATOM_PUNCTUATION)})
    if bad:
        raise TildekitError(
            f"model path {shown(ref)} (as seen from the patch) contains {shown(''.join(bad))}, which Pd/Max "
            f"cannot pass to nn~: rename the file or folder, or write the patch next to the model")
    return ref


def check_listen_address(host: str) -> str:
    """An IP address for the Pd receiver to bind (``--osc-host``), as Pd will read it."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise TildekitError(f"--osc-host {shown(host)}: not an IP address; use 127.0.0.1 (this machine "
                            f"only), this machine's LAN address, or 0.0.0.0 / :: (every interface)") from None


def build_spec(card: ModelCard, model_ref: str, stem: str, buffer: int = DEFAULT_BUFFER,
               osc_port: int = DEFAULT_OSC_PORT, osc_host: str = DEFAULT_OSC_HOST) -> PatchSpec:
    check_buffer(card, buffer, host="nn")
    if not 1 <= osc_port <= 65535:
        raise TildekitError(f"--osc-port {osc_port}: must be a UDP port in 1..65535")
    osc_host = check_listen_address(osc_host)
    osc = OscMap(card)
    prefix = f"tk-{osc.name}"

    def nn(method: str) -> NnObject | None:
        return nn_object(card, method, model_ref, buffer)

    latents = tuple(_latent_control(card, i, prefix) for i in range(card.latent_size))
    attributes = tuple(_attribute_control(a, prefix) for a in card.attributes)
    gain_name, reset_name = f"{prefix}-gain", f"{prefix}-reset"
    return PatchSpec(
        card=card, stem=stem, model_ref=model_ref, buffer=buffer, osc_port=osc_port, osc_host=osc_host,
        prefix=prefix,
        latents=latents, attributes=attributes, gain_name=gain_name, reset_name=reset_name,
        gain_range=GAIN_RANGE, routes=_routes(osc, latents, attributes, gain_name, reset_name, note_receive(prefix)),
        encode=nn("encode"), decode=nn("decode"), forward=nn("forward"))


def note_receive(prefix: str) -> str:
    """The name the synth patch receives OSC notes (pitch velocity) on."""
    return f"{prefix}-note"


def nn_object(card: ModelCard, method: str, model_ref: str, buffer: int) -> NnObject | None:
    """The nn~ box playing ``method`` of the card's model, or None when the model lacks it."""
    spec = card.methods.get(method)
    if spec is None:
        return None
    return NnObject(method, model_ref, buffer, max(1, spec.in_channels), max(1, spec.out_channels),
                    spec.in_channels == 1 and spec.out_channels == 1)


def _latent_control(card: ModelCard, index: int, prefix: str) -> LatentControl:
    lo, hi = FALLBACK_LATENT_RANGE
    if index < len(card.latents):
        stats = card.latents[index]
        if stats.maximum > stats.minimum:
            lo, hi = stats.minimum, stats.maximum
    labels = card.methods["decode"].input_labels if "decode" in card.methods else []
    label = labels[index] if index < len(labels) else f"latent {index}"
    return LatentControl(index, label, (float(lo), float(hi)), SCALE_SLIDER_RANGE,
                         f"{prefix}-bias-{index}", f"{prefix}-scale-{index}")


def _attribute_control(attr: AttributeSpec, prefix: str) -> AttributeControl:
    return AttributeControl(attr.name, tuple(attr.types), tuple(attr.default), attr.minimum,
                            attr.maximum, attr.description, f"{prefix}-attr-{attr.name}")


def _routes(osc: OscMap, latents: tuple[LatentControl, ...], attributes: tuple[AttributeControl, ...],
            gain_name: str, reset_name: str, note_name: str) -> tuple[OscRoute, ...]:
    """Every address OscMap documents, expanded per latent dimension."""
    def route(address: str, nargs: int, targets: tuple[str, ...], description: str) -> OscRoute:
        return OscRoute(address, tuple(address.strip("/").split("/")), nargs, targets, description)

    routes = []
    for lat in latents:
        routes.append(route(osc.latent(lat.index), 1, (lat.bias_name,), f"bias of {lat.label}"))
        routes.append(route(osc.latent_scale(lat.index), 1, (lat.scale_name,), f"gain of {lat.label}"))
    size = len(latents)
    if size:  # a model with no latent space (forward only) has no latent addresses
        routes.append(route(osc.bias_all, size, tuple(dim.bias_name for dim in latents), "all biases"))
        routes.append(route(osc.scale_all, size, tuple(dim.scale_name for dim in latents), "all gains"))
    for attr in attributes:
        routes.append(route(osc.attr(attr.name), len(attr.types), (attr.receive,), attr.description))
    routes.append(route(osc.gain, 1, (gain_name,), "output gain"))
    routes.append(route(osc.reset, 0, (reset_name,), "clear the streaming state"))
    if osc.plays_notes:  # the synth patch receives them (``patches/synth.py``)
        routes.append(route(osc.note, 2, (note_name,), "a note: MIDI pitch, velocity (0 = note off)"))
    return tuple(routes)


def _word(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)
