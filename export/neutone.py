"""Export a tildekit streaming autoencoder as a Neutone FX file (``.nm``), without neutone_sdk.

Structure (docs/contracts.md §2): the saved root is a `NeutoneRoot` (DAW-side queues, resampling,
delay reporting) holding the model as submodule ``w2w_base``: a `TildekitW2W`, which runs the
streaming core on model-rate, model-size buffers and applies the four knobs, as RAVE models have
them in Neutone. ``w2w_base`` exposes the SDK's whole WaveformToWaveformBase interface
(`NeutoneW2WBase`; names, signatures and semantics in export/neutone_contract.py):

- A ``chaos``: noise added to every latent dimension (0 = none);
- B ``latent dim``: which latent dimension C and D edit (0..1 spread over the dimensions);
- C ``dim scale``: gain of that dimension around its mean, 0..2 (0.5 = unchanged);
- D ``dim offset``: shift of that dimension, -3..+3 of its std (0.5 = unchanged).

The archive carries ``metadata.json`` (checked against the SDK's schema rules) and the tildekit
model card. The file is written and checked by export/target_neutone.py:
``export_neutone(TildekitW2W(ExportCore(model), card), card, "model.nm")``.
"""

# No ``from __future__ import annotations`` here: TorchScript must see the real class-level
# annotations of TildekitW2W (its metadata attributes are typed dicts of Union values).
import json
import linecache
import math
import warnings
from dataclasses import replace
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from tildekit.errors import TildekitError
from tildekit.export.exportable import Exportable, require_matches_card
from tildekit.export.neutone_contract import (
    CORE_METADATA_KEYS,
    CORE_PRESERVED_ATTRIBUTES,
    W2W_PRESERVED_ATTRIBUTES,
)
from tildekit.export.neutone_metadata import (
    Knob,
    NeutoneInfo,
    build_metadata,
    validate_metadata,
    with_sounds,
)
from tildekit.export.neutone_queue import N_PARAMS
from tildekit.models.contract.card import AttributeSpec, ModelCard
from tildekit.models.contract.hosts import neutone_native_buffers

CHAOS_MAX_STD = 2.0  # chaos at 1 adds noise of 2 latent stds
SCALE_MAX = 2.0  # dim scale knob 0..1 -> gain 0..2
OFFSET_MAX_STD = 3.0  # dim offset knob 0..1 -> -3..+3 latent stds
NOISE_TABLE_FRAMES = 4096  # latent frames of precomputed chaos noise (then it repeats)

KNOBS = [
    Knob("chaos", "Noise added to the latent: 0 = none, 1 = wild", 0.0),
    Knob("latent dim", "Which latent dimension the scale and offset knobs edit", 0.0),
    Knob("dim scale", "Gain of the chosen latent dimension (0.5 = unchanged)", 0.5),
    Knob("dim offset", "Offset of the chosen latent dimension (0.5 = unchanged)", 0.5),
]


class NeutoneW2WBase(nn.Module):
    """The SDK's ``WaveformToWaveformBase`` interface, as the plugin and the SDK's tools reach it.

    Holds the metadata (spread over typed attributes), the knob defaults and the model's shape,
    and answers every query with the SDK's semantics (see export/neutone_contract.py).
    Subclasses hold the model as ``self.model`` and define ``forward`` (starting with
    :meth:`_knob_values`) and ``reset``; the model streams at ``sample_rate`` in buffers of whole
    ``block``-sample blocks (a latent frame, or a method's ratio).
    """

    # TorchScript takes a class's own annotations, or, when it declares none, its nearest base's:
    # subclasses declare no field annotations of their own, so these hold for all of them.
    knob_metadata: Dict[str, Dict[str, Union[int, float, str, bool, List[str], List[int]]]]
    text_fields: Dict[str, str]
    flag_fields: Dict[str, bool]
    number_fields: Dict[str, float]
    int_fields: Dict[str, int]
    text_list_fields: Dict[str, List[str]]
    int_list_fields: Dict[str, List[int]]
    technical_links: Dict[str, str]
    native_rates: List[int]
    buffer_sizes: List[int]  # empty: any buffer (the SDK's convention)
    neutone_parameter_names: List[str]

    def __init__(self, meta: dict[str, Any], default_params: Tensor, delay: int, sample_rate: int,
                 block: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.block = block
        self.model_bs = block
        validate_metadata(with_sounds(meta))
        self.realtime = True
        self.use_debug_mode = False  # the SDK turns its debug asserts off before scripting
        self.MAX_N_PARAMS = N_PARAMS
        self.SDK_VERSION = str(meta["sdk_version"])
        self.CURRENT_TIME = float(meta["date_created"])
        self.in_n_ch = 1 if meta["is_input_mono"] else 2
        self.out_n_ch = 1 if meta["is_output_mono"] else 2
        self.native_rates = list(meta["native_sample_rates"])
        self.buffer_sizes = list(meta["native_buffer_sizes"])
        self.delay = delay
        self.n_neutone_parameters = len(meta["neutone_parameters"])
        self.neutone_parameter_names = [meta["neutone_parameters"][f"p{i + 1}"]["name"]
                                        for i in range(self.n_neutone_parameters)]
        self.core_preserved_attributes = list(CORE_PRESERVED_ATTRIBUTES)
        self.preserved_attributes = list(W2W_PRESERVED_ATTRIBUTES)
        self.core_metadata_keys = list(CORE_METADATA_KEYS)
        self.register_buffer("default_params", default_params.reshape(-1, 1).to(torch.float32))
        self._store_metadata(meta)
        self.metadata_json = json.dumps(meta, sort_keys=True)

    def _store_metadata(self, meta: dict[str, Any]) -> None:
        """Spread the metadata over typed attributes: TorchScript has no attribute of type Any."""
        self.knob_metadata = meta["neutone_parameters"]
        self.technical_links = meta["technical_links"]
        self.text_fields, self.flag_fields, self.number_fields = {}, {}, {}
        self.int_fields, self.text_list_fields, self.int_list_fields = {}, {}, {}
        for key, value in meta.items():
            if key in ("neutone_parameters", "technical_links"):
                continue
            if isinstance(value, bool):
                self.flag_fields[key] = value
            elif isinstance(value, str):
                self.text_fields[key] = value
            elif isinstance(value, int):
                self.int_fields[key] = value
            elif isinstance(value, float):
                self.number_fields[key] = value
            elif key in ("native_sample_rates", "native_buffer_sizes"):
                self.int_list_fields[key] = list(value)
            else:
                self.text_list_fields[key] = list(value)

    # -- WaveformToWaveformBase interface --------------------------------------------------------

    @torch.jit.export
    def is_input_mono(self) -> bool:
        return self.in_n_ch == 1

    @torch.jit.export
    def is_output_mono(self) -> bool:
        return self.out_n_ch == 1

    @torch.jit.export
    def get_native_sample_rates(self) -> List[int]:
        return list(self.native_rates)

    @torch.jit.export
    def get_native_buffer_sizes(self) -> List[int]:
        return list(self.buffer_sizes)

    @torch.jit.export
    def calc_model_delay_samples(self) -> int:
        return self.delay

    @torch.jit.export
    def is_resampling(self) -> bool:
        # As the SDK's: the wrapped model never resamples; the root resamples around it.
        return False

    @torch.jit.export
    def set_daw_sample_rate_and_buffer_size(self, daw_sr: int, daw_buffer_size: int,
                                            model_sr: Optional[int] = None,
                                            model_buffer_size: Optional[int] = None) -> None:
        """The SDK's testing shortcut: forwards (daw_sr, daw_buffer_size) to the model setter.

        A rate or buffer the model does not take is refused there (returns False, nothing
        changes) rather than raised; playing at such a rate is the root's resampling path.
        """
        self.set_sample_rate_and_buffer_size(daw_sr, daw_buffer_size)

    @torch.jit.export
    def set_sample_rate_and_buffer_size(self, sample_rate: int, n_samples: int) -> bool:
        """True (and kept as the model buffer) for the model's own rate and whole blocks."""
        ok = sample_rate == self.sample_rate and n_samples > 0 and n_samples % self.block == 0
        if ok:
            self.model_bs = n_samples
        return ok

    def _knob_values(self, x: Tensor, params: Optional[Tensor]) -> Tensor:
        """Check that ``x`` holds whole blocks; the knobs in [0, 1], averaged over the buffer."""
        if x.size(1) % self.block != 0:
            raise ValueError("tildekit: model buffers must hold whole blocks of "
                             + str(self.block) + " samples, got " + str(x.size(1)))
        if params is None:
            return self.default_params[:, 0]
        return params.mean(dim=1).clamp(0.0, 1.0)

    @torch.jit.export
    def reset(self) -> bool:
        return False

    @torch.jit.export
    def get_core_preserved_attributes(self) -> List[str]:
        return list(self.core_preserved_attributes)

    @torch.jit.export
    def get_preserved_attributes(self) -> List[str]:
        return list(self.preserved_attributes)

    @torch.jit.export
    def get_neutone_parameters_metadata(
            self) -> Dict[str, Dict[str, Union[int, float, str, bool, List[str], List[int]]]]:
        return self.knob_metadata

    @torch.jit.export
    def get_numerical_params_default_values_0to1(self) -> Tensor:
        return self.default_params

    @torch.jit.export
    def get_wet_default_value(self) -> float:
        return self.number_fields["wet_default_value"]

    @torch.jit.export
    def get_dry_default_value(self) -> float:
        return self.number_fields["dry_default_value"]

    @torch.jit.export
    def get_input_gain_default_value(self) -> float:
        return self.number_fields["input_gain_default_value"]

    @torch.jit.export
    def get_output_gain_default_value(self) -> float:
        return self.number_fields["output_gain_default_value"]

    @torch.jit.export
    def to_core_metadata(self) -> Dict[str, Any]:
        """The fields of the model itself (to_metadata without the realtime fields)."""
        full = self.to_metadata()
        out: Dict[str, Any] = {}
        for key in self.core_metadata_keys:
            out[key] = full[key]
        return out

    @torch.jit.export
    def to_metadata(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key, text in self.text_fields.items():
            out[key] = text
        for key, flag in self.flag_fields.items():
            out[key] = flag
        for key, number in self.number_fields.items():
            out[key] = number
        for key, count in self.int_fields.items():
            out[key] = count
        for key, texts in self.text_list_fields.items():
            out[key] = texts
        for key, counts in self.int_list_fields.items():
            out[key] = counts
        out["technical_links"] = self.technical_links
        out["neutone_parameters"] = self.knob_metadata
        return out

    @torch.jit.export
    def get_metadata_json(self) -> str:
        return self.metadata_json


class TildekitW2W(NeutoneW2WBase):
    """The SDK's WaveformToWaveformBase over a tildekit streaming core, with 4 latent knobs.

    ``core`` is a scriptable tildekit.export.core.ExportCore, or anything with its interface:
    ``encode``, ``decode_from(z, input_delay)``, ``reset_state`` and the int attributes
    ``compression``, ``latent_size``, ``sample_rate``, ``channels``, ``encoder_frames_delay``.
    """

    def __init__(self, core: nn.Module, card: ModelCard, info: NeutoneInfo | None = None, *,
                 seed: int = 0, date_created: float | None = None) -> None:
        _check_core_matches_card(core, card)
        meta = build_metadata(card, KNOBS, info or NeutoneInfo(),
                              native_sample_rates=[card.sample_rate],
                              native_buffer_sizes=neutone_native_buffers(card.compression),
                              pytorch_version=torch.__version__, date_created=date_created)
        defaults = torch.tensor([k.default_0to1 for k in KNOBS], dtype=torch.float32)
        super().__init__(meta, defaults, card.delay, card.sample_rate, card.compression)
        self.model = core
        self.compression = card.compression
        self.latent_size = card.latent_size
        self.channels = card.channels
        self.chaos_max_std = CHAOS_MAX_STD
        self.scale_max = SCALE_MAX
        self.offset_max_std = OFFSET_MAX_STD
        self.frame = 0  # latent frames streamed since reset: indexes the chaos noise table

        mean, std = _latent_stats(card)
        self.register_buffer("latent_mean", mean)
        self.register_buffer("latent_std", std)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("noise_table", torch.randn(
            NOISE_TABLE_FRAMES, card.latent_size, generator=generator))

    # -- audio -------------------------------------------------------------------------------

    def forward(self, x: Tensor, params: Optional[Tensor] = None) -> Tensor:
        """(channels, model_bs) -> (channels, model_bs); knob rows are averaged over the buffer."""
        knobs = self._knob_values(x, params)
        z = self.model.encode(x.unsqueeze(0))
        z = self.edit_latent(z, knobs)
        # As ExportCore.forward does: tell the decoder how many frames late the latent is, so
        # with neutral knobs this is exactly the core's (and the nn~ file's) forward.
        return self.model.decode_from(z, self.model.encoder_frames_delay)[0]

    @torch.jit.export
    def edit_latent(self, z: Tensor, knobs: Tensor) -> Tensor:
        """Apply chaos to all dimensions, then scale/offset the chosen one. Neutral knobs: exact no-op."""
        frames = z.size(2)
        chaos = float(knobs[0].item())
        if chaos > 0.0:
            index = (torch.arange(frames) + self.frame) % self.noise_table.size(0)
            noise = self.noise_table.index_select(0, index).t().unsqueeze(0)
            z = z + noise * (chaos * self.chaos_max_std) * self.latent_std.view(1, -1, 1)
        self.frame = (self.frame + frames) % self.noise_table.size(0)
        dim = min(int(math.floor(float(knobs[1].item()) * self.latent_size)), self.latent_size - 1)
        scale = float(knobs[2].item()) * self.scale_max
        offset = (2.0 * float(knobs[3].item()) - 1.0) * self.offset_max_std
        if scale != 1.0 or offset != 0.0:
            z = z.clone()
            mean = self.latent_mean[dim]
            shift = mean * (1.0 - scale) + offset * self.latent_std[dim]
            z[:, dim] = z[:, dim] * scale + shift
        return z

    @torch.jit.export
    def reset(self) -> bool:
        self.model.reset_state()
        self.frame = 0
        return True


def _check_core_matches_card(core: nn.Module, card: ModelCard) -> None:
    require_matches_card(core, card)
    if card.channels not in (1, 2):
        raise TildekitError(f"Neutone FX takes mono or stereo models; {card.name} has {card.channels} channels")


def _latent_stats(card: ModelCard) -> tuple[Tensor, Tensor]:
    """Per-dimension latent mean and std from the card (0 and 1 when the card has none)."""
    if len(card.latents) == card.latent_size:
        mean = torch.tensor([d.mean for d in card.latents], dtype=torch.float32)
        std = torch.tensor([d.std if d.std > 0 else 1.0 for d in card.latents], dtype=torch.float32)
        return mean, std
    return torch.zeros(card.latent_size), torch.ones(card.latent_size)


def knob_attributes(card: ModelCard) -> tuple[list[AttributeSpec], list[str]]:
    """The attributes the Neutone knobs drive: single floats with a range, the first four; and
    the names of the other such attributes, which no knob reaches."""
    ranged = [a for a in card.attributes if a.types == ["float"] and a.minimum is not None
              and a.maximum is not None and a.maximum > a.minimum]
    return ranged[:N_PARAMS], [a.name for a in ranged[N_PARAMS:]]


_KNOBS_TEMPLATE = '''
class KnobSetters:
    def apply_knobs(self, knobs: Tensor) -> None:
        pass
{lines}'''


def _knob_setters(knobs: list[AttributeSpec]) -> type:
    """A mixin whose ``apply_knobs`` maps knob i in [0, 1] to attribute i's range (generated:
    TorchScript sets attributes by name only)."""
    lines = [f"        self.model.{a.name} = {float(a.minimum)!r} + {float(a.maximum) - float(a.minimum)!r} "
             f"* float(knobs[{i}].item())\n" for i, a in enumerate(knobs)]
    source = _KNOBS_TEMPLATE.format(lines="".join(lines))
    filename = f"<tildekit-neutone-knobs-{'-'.join(a.name for a in knobs)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: Dict[str, Any] = {"torch": torch, "Tensor": Tensor}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["KnobSetters"]


class GenericW2WBase(NeutoneW2WBase):
    """The SDK's WaveformToWaveformBase over any family's streaming module with an audio ->
    audio ``forward``: up to four float attributes are the knobs (range mapped to [0, 1]).

    Built by :func:`generic_w2w`; ``apply_knobs`` comes from a generated mixin.
    """

    def __init__(self, module: nn.Module, card: ModelCard, knobs: list[AttributeSpec],
                 info: NeutoneInfo, date_created: float | None = None) -> None:
        meta = build_metadata(card, [Knob(a.name, a.description or a.name, float(a.default[0]),
                                          float(a.minimum or 0.0), float(a.maximum or 1.0)) for a in knobs],
                              info, native_sample_rates=[card.sample_rate],
                              native_buffer_sizes=neutone_native_buffers(card.compression),
                              pytorch_version=torch.__version__, date_created=date_created)
        defaults = torch.tensor([(float(a.default[0]) - float(a.minimum or 0.0))
                                 / (float(a.maximum or 1.0) - float(a.minimum or 0.0)) for a in knobs],
                                dtype=torch.float32)
        super().__init__(meta, defaults, card.delay, card.sample_rate, card.compression)
        self.model = module

    def forward(self, x: Tensor, params: Optional[Tensor] = None) -> Tensor:
        """(channels, model_bs) -> (channels, model_bs); knob rows are averaged over the buffer."""
        self.apply_knobs(self._knob_values(x, params))
        return self.model.forward(x.unsqueeze(0))[0]

    def apply_knobs(self, knobs: Tensor) -> None:  # generated per model (_knob_setters)
        raise NotImplementedError

    @torch.jit.export
    def reset(self) -> bool:
        self.model.reset_state()
        return True


def generic_w2w(model: Exportable, card: ModelCard, info: NeutoneInfo | None = None, *,
                date_created: float | None = None) -> NeutoneW2WBase:
    """The ``w2w_base`` of a family other than the autoencoder (see :class:`GenericW2WBase`)."""
    require_matches_card(model, card, fields=("sample_rate", "channels"), methods=("forward",))
    if card.channels not in (1, 2):
        raise TildekitError(f"Neutone FX takes mono or stereo models; {card.name} has {card.channels} channels")
    forward = card.methods["forward"]
    if forward.params != [card.channels, 1, card.channels, 1]:
        raise TildekitError(f"{card.name}: Neutone FX plays audio to audio; forward is {forward.params}")
    knobs, left = knob_attributes(card)
    if left:
        warnings.warn(f"{card.name}: Neutone FX has {N_PARAMS} knobs: the .nm file plays "
                      f"{', '.join(a.name for a in knobs)} and leaves {', '.join(left)} at their defaults "
                      f"(nn~ and OSC reach every attribute)", stacklevel=2)
    info = info or NeutoneInfo()
    if not info.technical_description:
        shown = ", ".join(a.name for a in knobs) or "none"
        text = (f"{model.family} model trained with tildekit ({card.sample_rate} Hz, {card.channels} ch, "
                f"delay {card.delay} samples). Knobs: {shown}"
                + (f"; not on a knob (Neutone has four): {', '.join(left)}" if left else "") + ".")
        info = replace(info, technical_description=text[:500])
    cls = type(f"TildekitW2W_{model.family}", (_knob_setters(knobs), GenericW2WBase),
               {"__annotations__": dict(GenericW2WBase.__annotations__)})
    return cls(model.module, card, knobs, info, date_created)
