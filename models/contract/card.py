"""The model card: one typed record of a model's shape, used by every consumer.

Exporters embed it in every file they write (TorchScript / `.nm` extra file ``tildekit.json``,
ONNX metadata property ``tildekit.card``); the patch generator, the OSC map, the engine and
the benchmarks read it back from the file, without the training code or the checkpoint.

Pure data: no torch import here, so reading a card is cheap.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tildekit.models.contract.card_check import MAX_CARD_BYTES, check_card_data
from tildekit.models.contract.card_format import CARD_FORMAT, NN_TYPE_CODES, CardError

CARD_FILE_NAME = "tildekit.json"  # extra file in .ts / .nm archives
CARD_ONNX_KEY = "tildekit.card"  # metadata_props key in .onnx files
DEFAULT_FAMILY = "autoencoder"  # cards without a family field


@dataclass(frozen=True)
class MethodSpec:
    """One streaming method: ``(in_channels, in_ratio, out_channels, out_ratio)`` as nn~ reads it.

    ``delay`` is the method's own streaming delay, in audio samples, between the output of
    consecutive buffers and the whole-signal output.
    """

    in_channels: int
    in_ratio: int
    out_channels: int
    out_ratio: int
    input_labels: list[str] = field(default_factory=list)
    output_labels: list[str] = field(default_factory=list)
    delay: int = 0

    @property
    def params(self) -> list[int]:
        return [self.in_channels, self.in_ratio, self.out_channels, self.out_ratio]


@dataclass(frozen=True)
class AttributeSpec:
    """A settable attribute: nn~ ``[set NAME v1 v2 ...(``, OSC ``/attr/NAME``."""

    name: str
    types: list[str]  # one of NN_TYPE_CODES per value
    default: list[Any]
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    @property
    def type_codes(self) -> list[int]:
        return [NN_TYPE_CODES[t] for t in self.types]


@dataclass(frozen=True)
class LatentDim:
    """Statistics of one latent dimension (after ordering by importance)."""

    mean: float
    std: float
    minimum: float
    maximum: float
    variance_ratio: float = 0.0  # share of the latent variance this dimension explains


@dataclass(frozen=True)
class HostRate:
    """How the nn~ export plays at one host sample rate (resampled to and from the model's).

    ``delays``: per method, host samples from input to output, the model's own delay included
    (whole numbers for audio outputs), whatever the sizes of the host's calls; ``added_ms``:
    what resampling adds to the method's own delay then. ``buffer_delays``: the same delays
    when every call brings one buffer of host samples (what hosts do), keyed by that buffer
    size as a decimal string; they are never more than ``delays``, and less when the buffer
    holds whole latent frames at the model's rate. At the model's own rate nothing is added.
    """

    rate: int
    delays: dict[str, float]
    added_ms: dict[str, float]
    buffer_delays: dict[str, dict[str, float]] = field(default_factory=dict)

    def delay(self, method: str, buffer: int | None = None) -> float:
        """Host samples from input to output of ``method`` for calls of ``buffer`` host samples
        (any sizes when None, or when the card has no figure for that buffer)."""
        table = self.buffer_delays.get(str(buffer), {}) if buffer is not None else {}
        return table.get(method, self.delays[method])


@dataclass(frozen=True)
class ModelCard:
    name: str
    sample_rate: int
    channels: int
    compression: int  # audio samples per latent frame
    latent_size: int  # latent dimensions exposed by the exported file
    methods: dict[str, MethodSpec]
    attributes: list[AttributeSpec]
    delay: int  # forward() streaming delay in samples at sample_rate
    latents: list[LatentDim] = field(default_factory=list)
    profile: str = ""
    step: int = 0
    torch_version: str = ""
    tildekit_version: str = ""
    card_format: int = CARD_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    host_rates: list[HostRate] = field(default_factory=list)  # empty: plays at sample_rate only
    # The model family ("autoencoder": encode/decode/forward over latents; others name their own
    # methods). Written only when not the autoencoder, so older readers read autoencoder cards.
    family: str = DEFAULT_FAMILY

    @property
    def highest_ratio(self) -> int:
        return max(max(m.in_ratio, m.out_ratio) for m in self.methods.values())

    @property
    def delay_ms(self) -> float:
        return 1000.0 * self.delay / self.sample_rate

    def host_rate(self, rate: int) -> HostRate | None:
        return next((h for h in self.host_rates if h.rate == rate), None)

    def attribute(self, name: str) -> AttributeSpec:
        for attr in self.attributes:
            if attr.name == name:
                return attr
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["family"] == DEFAULT_FAMILY:
            del data["family"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """A card from its JSON form, validated first (``card_check``): raises CardError."""
        check_card_data(data)
        try:
            methods = {k: MethodSpec(**v) for k, v in data["methods"].items()}
            attributes = [AttributeSpec(**a) for a in data.get("attributes", [])]
            latents = [LatentDim(**d) for d in data.get("latents", [])]
            host_rates = [HostRate(**h) for h in data.get("host_rates", [])]
            rest = {k: v for k, v in data.items()
                    if k not in ("methods", "attributes", "latents", "host_rates")}
            return cls(methods=methods, attributes=attributes, latents=latents, host_rates=host_rates,
                       **rest)
        except (KeyError, TypeError) as exc:  # not reached for a card that passed the check
            raise CardError(f"malformed model card: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        if len(text) > MAX_CARD_BYTES:
            raise CardError(f"model card is {len(text)} bytes long (a card is a few kB, at most "
                            f"{MAX_CARD_BYTES}): not a tildekit card")
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CardError(f"model card is not valid JSON: {' '.join(str(exc).split())[:200]}") from None
        except (RecursionError, ValueError) as exc:
            raise CardError(f"model card is not valid JSON ({' '.join(str(exc).split())[:200]})") from None
        return cls.from_dict(data)

    def checked(self) -> ModelCard:
        """This card if it passes the reader's validation (writers call it before embedding)."""
        check_card_data(json.loads(self.to_json()))
        return self


def _reject_constant(word: str) -> Any:
    """JSON has no NaN or Infinity; Python's reader accepts them unless told otherwise."""
    raise ValueError(f"{word} is not a JSON number")


# A card that tildekit derived from an nn~ file's own methods (export/foreign_nn.py) says so
# in ``extra["card_source"]``; every tool that shows it tells the user.
DERIVED_CARD_SOURCE = "nn~ methods"
FOREIGN_NOTE = "no tildekit card: derived from the file's nn~ methods"


def is_derived(card: ModelCard) -> bool:
    """True for a card derived from a foreign nn~ file rather than embedded by tildekit."""
    return card.extra.get("card_source") == DERIVED_CARD_SOURCE
