"""What an export target needs from a model, whatever its family.

A target sees a streaming ``torch.nn.Module`` whose named methods map ``(batch, in_channels,
T / in_ratio)`` to ``(batch, out_channels, T / out_ratio)``, keep their state between calls and
clear it with ``reset_state()``; the methods' shapes, labels and delays and the attributes'
types and ranges (the card's :class:`MethodSpec` / :class:`AttributeSpec`); the sample rate,
the audio channels and forward's delay. A model family provides one adapter that builds a
:class:`StreamingExport` from its model (the autoencoder's: ``export.model_card.exportable``).

:func:`require_matches_card` is the one check that a model and the card embedded with it agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tildekit.errors import TildekitError
from tildekit.models.contract.card import AttributeSpec, MethodSpec, ModelCard

if TYPE_CHECKING:
    from torch import nn

# The shape fields of a card that the autoencoder's streaming core also carries.
CORE_FIELDS = ("sample_rate", "channels", "compression", "latent_size")


class Exportable(Protocol):
    @property
    def family(self) -> str: ...

    @property
    def module(self) -> nn.Module: ...

    @property
    def methods(self) -> dict[str, MethodSpec]: ...

    @property
    def attributes(self) -> list[AttributeSpec]: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def delay(self) -> int: ...


@dataclass(frozen=True)
class StreamingExport:
    """The plain implementation of :class:`Exportable`."""

    family: str
    module: nn.Module
    methods: dict[str, MethodSpec]
    attributes: list[AttributeSpec] = field(default_factory=list)
    sample_rate: int = 48000
    channels: int = 1
    delay: int = 0


def require_matches_card(model: object, card: ModelCard, fields: Iterable[str] = CORE_FIELDS,
                         methods: Iterable[str] = ()) -> None:
    """Raise unless ``model`` (an Exportable or a streaming core) has the card's ``fields`` and
    the card lists ``methods``; an Exportable's method table must also be the card's."""
    wrong = [f"{name} is {getattr(model, name, None)} but the model card says {getattr(card, name)}"
             for name in fields if getattr(model, name, None) != getattr(card, name)]
    table = getattr(model, "methods", None)
    if isinstance(table, dict):
        wrong += [f"method {name} has {spec.params} but the model card says "
                  f"{card.methods[name].params if name in card.methods else 'nothing'}"
                  for name, spec in table.items()
                  if name not in card.methods or card.methods[name].params != spec.params]
    if wrong:
        raise TildekitError(f"the model card does not describe this model: {'; '.join(wrong)}: "
                            f"derive the card from the same model (export.model_card)")
    missing = [m for m in methods if m not in card.methods]
    if missing:
        raise TildekitError(f"the model card lacks the method(s) {', '.join(missing)}")
