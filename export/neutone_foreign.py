"""Wrap an nn~ TorchScript file tildekit did not write (a RAVE export, ...) as a Neutone FX ``.nm``.

The file is loaded as nn~ loads it and held, unchanged, as ``w2w_base.model`` under the same
sample-queue root as tildekit's own exports (`NeutoneRoot`), so the plugin sees the SDK's whole
structure. The audio goes through the model's ``forward``. The four knobs are:

- when the model has ``encode`` / ``decode`` and ``decode(encode(x))`` is its ``forward`` (as in
  RAVE's exports; checked on generated audio): offsets of the first (up to) 4 latent
  dimensions, centre = no offset, each end = ``LATENT_SPAN_STDS`` standard deviations of that
  dimension measured on generated audio;
- otherwise: its single-value float attributes that have a getter (up to 4), centre = the
  value the file holds, range from :func:`attribute_range`.

The delay the host compensates is measured with an impulse through the wrapper itself and
written in the metadata (``calc_model_delay_samples`` and the technical description) and in the
embedded card. The result is checked the way the plugin loads it (`export_neutone`).
"""

# No ``from __future__ import annotations``: TorchScript reads the class annotations as types.
import dataclasses
import linecache
from pathlib import Path
from typing import Any, List, Optional

import torch
from torch import Tensor, nn

from tildekit import __version__
from tildekit.errors import TildekitError
from tildekit.export.card_io import MissingCardError, read_card
from tildekit.export.foreign_nn import derive_card, fresh_model, has_known_default, impulse_delay
from tildekit.export.neutone import NeutoneW2WBase
from tildekit.export.neutone_check import NeutoneCheck
from tildekit.export.neutone_metadata import (
    MAX_KNOBS,
    MAX_NAME_CHARS,
    MAX_REALTIME_SAMPLE_RATE,
    Knob,
    NeutoneInfo,
    build_metadata,
    model_type,
)
from tildekit.export.target_neutone import export_neutone
from tildekit.models.contract.card import MethodSpec, ModelCard
from tildekit.models.contract.hosts import DEFAULT_BUFFER, neutone_native_buffers

LATENT_SPAN_STDS = 2.0  # a latent knob at either end shifts its dimension by 2 std
MIN_LATENT_SPAN = 0.1
CHAIN_TOLERANCE = 1e-5  # decode(encode(x)) vs forward(x), same seed, same buffers
PROBE_SECONDS = 2.0  # generated audio for the latent statistics and the chain check


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What ``convert_to_neutone`` wrote and decided."""

    path: Path
    card: ModelCard
    knob_mode: str  # "latent", "attributes" or "none"
    knobs: list[Knob]
    delay: int
    check: NeutoneCheck
    note: str = ""


class ForeignW2W(NeutoneW2WBase):
    """``w2w_base`` around a loaded nn~ ScriptModule: its forward, knobs on latents or attributes."""

    def __init__(self, model: nn.Module, meta: dict, knobs: List[Knob], latent_mode: bool,
                 sample_rate: int, ratio: int, delay: int) -> None:
        # Subclassed with a generated ``run_model`` (see _model_run): build through convert_to_neutone.
        defaults = torch.tensor([k.default_0to1 for k in knobs] + [0.0] * (MAX_KNOBS - len(knobs)))
        super().__init__(meta, defaults, delay, sample_rate, ratio)
        self.model = model
        self.latent_mode = latent_mode
        self.n_knobs = len(knobs)
        self.register_buffer("knob_low", torch.tensor([k.min_value for k in knobs] + [0.0] * (MAX_KNOBS - len(knobs))))
        self.register_buffer("knob_high", torch.tensor([k.max_value for k in knobs] + [0.0] * (MAX_KNOBS - len(knobs))))

    def forward(self, x: Tensor, params: Optional[Tensor] = None) -> Tensor:
        knobs = self._knob_values(x, params)
        values = self.knob_low + knobs[:self.knob_low.size(0)] * (self.knob_high - self.knob_low)
        return self.run_model(x.unsqueeze(0), values)[0]

    @torch.jit.export
    def reset(self) -> bool:
        # nn~ files have no reset convention: as the SDK's default reset_model, "not supported".
        return False


_LATENT_RUN = '''
class ModelRun:
    @torch.jit.export
    def run_model(self, audio: Tensor, values: Tensor) -> Tensor:
        z = self.model.encode(audio)
        if self.n_knobs > 0:
            z = z.clone()
            z[:, :self.n_knobs] = z[:, :self.n_knobs] + values[:self.n_knobs].view(1, -1, 1)
        return self.model.decode(z)
'''

_FORWARD_RUN = '''
class ModelRun:
    @torch.jit.export
    def run_model(self, audio: Tensor, values: Tensor) -> Tensor:
        settings: List[float] = values.tolist()
{setters}
        return self.model.forward(audio)
'''


def _model_run(latent: bool, attributes: list[str]) -> type:
    """A mixin whose ``run_model`` calls the foreign model's own methods, by name.

    TorchScript compiles every branch and calls methods by name only, so the source is
    generated for this model (latent path, or forward after ``set_NAME`` per knob attribute) and
    registered with linecache under a unique file name for the compiler to read.
    """
    setters = "\n".join(f"        self.model.set_{name}(settings[{i}])" for i, name in enumerate(attributes))
    source = _LATENT_RUN if latent else _FORWARD_RUN.format(setters=setters)
    filename = f"<tildekit-neutone-run-{'latent' if latent else '-'.join(['forward', *attributes])}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {"torch": torch, "List": List, "Tensor": Tensor}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["ModelRun"]


def attribute_range(default: float) -> tuple[float, float]:
    """A knob range around a value the file holds: [0, 1] at 0, else 0..2x (the value mid-way)."""
    if default == 0.0:
        return 0.0, 1.0
    return (0.0, 2.0 * default) if default > 0 else (2.0 * default, 0.0)


def convert_to_neutone(model_path: str | Path, out_dir: str | Path, *, sample_rate: int | None = None,
                       name: str | None = None, info: NeutoneInfo | None = None,
                       date_created: float | None = None) -> Conversion:
    """Write ``OUT_DIR/NAME.nm`` from a foreign nn~ ``.ts``; checked like every export."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    if model_path.suffix.lower() != ".ts":
        raise TildekitError(f"{model_path}: convert takes an nn~ TorchScript file (*.ts)")
    if name is not None and (Path(name).name != name or name in (".", "..") or name.startswith(".")
                             or "\\" in name or not name.strip()):
        raise TildekitError(f"--name {name!r}: give a plain file name stem (no folders, no leading dot)")
    try:
        read_card(model_path)
    except MissingCardError:
        pass
    else:
        raise TildekitError(f"{model_path} was exported by tildekit: export its run with "
                            f"`tildekit export RUN_DIR --target neutone` instead")
    card = derive_card(model_path)
    card = _with_rate(card, model_path, sample_rate)
    forward = _audio_forward(card, model_path)
    data = model_path.read_bytes()
    latent, note = _latent_mode(card, data)
    knobs, attributes = _knobs(card, data) if latent else _attribute_knobs(card)
    mode = "latent" if latent else ("attributes" if knobs else "none")
    ratio = max(forward.in_ratio, forward.out_ratio) if not latent else card.compression
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name or model_path.stem
    path = out_dir / f"{stem}.nm"

    def build(delay: int) -> tuple[nn.Module, ModelCard]:
        display = stem[:MAX_NAME_CHARS]
        nm_card = dataclasses.replace(card, name=display, delay=delay, torch_version=torch.__version__,
                                      tildekit_version=__version__,
                                      extra={**card.extra, "card_source": "converted nn~ file",
                                             "converted_from": model_path.name})
        meta = _metadata(nm_card, forward, knobs, mode, ratio, delay, info, date_created)
        cls = type("ForeignNeutone", (ForeignW2W, _model_run(latent, attributes)), {})
        return cls(fresh_model(data), meta, knobs, latent, card.sample_rate, ratio, delay), nm_card

    def make_call():
        w2w, _ = build(0)
        return lambda x: w2w.forward(x[0], None)[None]

    delay, delay_note = impulse_delay(make_call, forward)
    w2w, nm_card = build(delay)
    check = export_neutone(w2w, nm_card, path)
    notes = "; ".join(n for n in (note, delay_note) if n)
    return Conversion(path, nm_card, mode, knobs, delay, check, notes)


def _with_rate(card: ModelCard, path: Path, sample_rate: int | None) -> ModelCard:
    if sample_rate is not None:
        if not 0 < sample_rate <= MAX_REALTIME_SAMPLE_RATE:
            raise TildekitError(f"--sample-rate {sample_rate}: Neutone takes 1..{MAX_REALTIME_SAMPLE_RATE} Hz")
        return dataclasses.replace(card, sample_rate=sample_rate,
                                   extra={**card.extra, "sample_rate_source": "--sample-rate"})
    if card.extra.get("sample_rate_source", "").startswith("assumed"):
        raise TildekitError(f"{path} does not say its sample rate (no get_sample_rate() or sr "
                            f"attribute): pass --sample-rate HZ (the rate it was trained at)")
    if card.sample_rate > MAX_REALTIME_SAMPLE_RATE:
        raise TildekitError(f"{path} runs at {card.sample_rate} Hz; Neutone FX takes at most "
                            f"{MAX_REALTIME_SAMPLE_RATE} Hz")
    return card


def _audio_forward(card: ModelCard, path: Path) -> MethodSpec:
    forward = card.methods.get("forward")
    if forward is None:
        raise TildekitError(f"{path} has no forward method (methods: {', '.join(card.methods)}): "
                            f"Neutone FX plays audio in, audio out")
    if forward.in_ratio != 1 or forward.out_ratio != 1 or forward.in_channels not in (1, 2) \
            or forward.out_channels not in (1, 2):
        raise TildekitError(f"{path}: forward is {forward.params} [in_channels, in_ratio, out_channels, "
                            f"out_ratio]; Neutone FX takes mono or stereo audio in and out")
    return forward


def _probe(card: ModelCard, channels: int) -> Tensor:
    """Generated audio at the model's rate: a gliding tone and noise."""
    n = int(PROBE_SECONDS * card.sample_rate)
    n -= n % card.compression if card.compression > 0 else 0
    t = torch.arange(n) / card.sample_rate
    tone = 0.3 * torch.sin(2 * torch.pi * (110 + 300 * t) * t)
    noise = 0.05 * torch.randn(1, channels, n, generator=torch.Generator().manual_seed(0))
    return (tone + noise).float()


def _latent_mode(card: ModelCard, data: bytes) -> tuple[bool, str]:
    """Latent knobs when encode/decode exist and decode(encode(x)) is forward(x)."""
    encode, decode, forward = (card.methods.get(m) for m in ("encode", "decode", "forward"))
    if encode is None or decode is None or card.latent_size < 1:
        return False, ""
    if encode.in_ratio != 1 or decode.out_ratio != 1 or encode.out_channels != decode.in_channels \
            or encode.in_channels != forward.in_channels or decode.out_channels != forward.out_channels:
        return False, "encode/decode do not chain into forward's shape: knobs on attributes"
    x = _probe(card, forward.in_channels)
    step = max(DEFAULT_BUFFER - DEFAULT_BUFFER % card.compression, card.compression)  # whole frames
    chained, direct = [], []
    model = fresh_model(data)
    torch.manual_seed(0)
    with torch.inference_mode():
        for i in range(0, x.shape[-1] - step + 1, step):
            chained.append(model.decode(model.encode(x[..., i:i + step])))
    model = fresh_model(data)
    torch.manual_seed(0)
    with torch.inference_mode():
        for i in range(0, x.shape[-1] - step + 1, step):
            direct.append(model.forward(x[..., i:i + step]))
    error = float((torch.cat(chained, -1) - torch.cat(direct, -1)).abs().max())
    if error > CHAIN_TOLERANCE:
        return False, (f"decode(encode(x)) differs from forward(x) by {error:.3g}: knobs on "
                       f"attributes, audio through forward")
    return True, ""


def _knobs(card: ModelCard, data: bytes) -> tuple[list[Knob], list[str]]:
    """Latent offset knobs on the first dimensions, spans from their spread on generated audio."""
    model = fresh_model(data)
    x = _probe(card, card.channels)
    with torch.inference_mode():
        z = model.encode(x)
    std = z[0].std(dim=-1)
    count = min(MAX_KNOBS, card.latent_size)
    labels = card.methods["encode"].output_labels
    knobs = []
    for i in range(count):
        span = max(MIN_LATENT_SPAN, LATENT_SPAN_STDS * float(std[i])) if torch.isfinite(std[i]) else 1.0
        knobs.append(Knob(f"latent {i + 1}", f"Offset of latent dimension {i + 1} ({labels[i]})"[:150],
                          0.0, -span, span))
    return knobs, []


def _attribute_knobs(card: ModelCard) -> tuple[list[Knob], list[str]]:
    usable = [a for a in card.attributes if a.types == ["float"] and has_known_default(a)][:MAX_KNOBS]
    knobs = []
    for attr in usable:
        low, high = attribute_range(float(attr.default[0]))
        knobs.append(Knob(attr.name[:MAX_NAME_CHARS], f"The file's {attr.name} attribute, {low:g} to {high:g}",
                          float(attr.default[0]), low, high))
    return knobs, [a.name for a in usable]


def _metadata(card: ModelCard, forward: MethodSpec, knobs: list[Knob], mode: str, ratio: int,
              delay: int, info: NeutoneInfo | None, date_created: float | None) -> dict[str, Any]:
    source = card.extra.get("converted_from", "an nn~ file")
    what = {"latent": "knobs offset its first latent dimensions",
            "attributes": "knobs set its float attributes", "none": "no knobs"}[mode]
    info = info or NeutoneInfo(
        short_description=f"{source} (nn~ model) for Neutone FX.",
        technical_description=(f"nn~ TorchScript model {source} wrapped by tildekit: its forward at "
                               f"{card.sample_rate} Hz, {forward.in_channels} in / {forward.out_channels} "
                               f"out; {what}. Delay {delay} samples, measured with an impulse.")[:500],
        tags=("nn~", "converted", "tildekit"))
    sizes = [] if ratio == 1 else neutone_native_buffers(ratio)
    meta = build_metadata(card, knobs, info, native_sample_rates=[card.sample_rate],
                          native_buffer_sizes=sizes, pytorch_version=torch.__version__,
                          date_created=date_created)
    meta["is_input_mono"] = forward.in_channels == 1
    meta["is_output_mono"] = forward.out_channels == 1
    meta["model_type"] = model_type(meta["is_input_mono"], meta["is_output_mono"])
    return meta
