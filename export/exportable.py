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
from typing import Any, Protocol, TypeVar

from torch import nn
from torch.nn.utils import parametrize

from tildekit.errors import TildekitError
from tildekit.models.contract.card import AttributeSpec, MethodSpec, ModelCard

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


ModelT = TypeVar("ModelT", bound=nn.Module)


def fold_parametrizations(module: nn.Module) -> None:
    """Bake every parametrization (weight norm) into a plain weight: scripted hosts run it once."""
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            names: Any = sub.parametrizations
            for name in list(names.keys()):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)


def prepare_streaming(model: nn.Module, family_class: type[ModelT], built_by: str,
                      reset: str = "reset_state") -> ModelT:
    """``model`` ready to script, in place: of ``family_class`` and built streaming (``built_by``
    says how), eval, no gradients, parametrizations folded, its state cleared by ``reset``."""
    if not isinstance(model, family_class):
        raise TildekitError(f"this export adapter takes a {family_class.__name__}, not {type(model).__name__}")
    if not getattr(model, "streaming", False):
        raise TildekitError(f"export a streaming {family_class.__name__}: build it with {built_by}")
    fold_parametrizations(model)
    model.eval().requires_grad_(False)
    getattr(model, reset)()
    return model


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
