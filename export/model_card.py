"""Derive the model card of an export from its ExportCore (or, for any other family, from its
Exportable: :func:`card_from_exportable`): the ONE place that does it.

Every exporter (nn~, Neutone, ONNX) calls :func:`card_from_core`, so the methods table, the
delays, the attribute specs and the per-dimension latent statistics are identical in every
file exported from one run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from tildekit import __version__
from tildekit.export.exportable import Exportable, StreamingExport
from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE, RESET, TEMPERATURE, TEMPERATURE_MAX
from tildekit.models.contract.card import AttributeSpec, LatentDim, MethodSpec, ModelCard
from tildekit.models.resample_plan import card_buffers, host_rate_table

if TYPE_CHECKING:
    from tildekit.export.core import ExportCore
    from tildekit.models.latent_stats import LatentStats


def channel_labels(kind: str, count: int) -> list[str]:
    """``audio in`` for one channel, ``audio in 1``.. for several; ``latent 0``.. for latents."""
    if kind == "latent":
        return [f"latent {i}" for i in range(count)]
    return [f"audio {kind}"] if count == 1 else [f"audio {kind} {i + 1}" for i in range(count)]


def methods_table(core: ExportCore) -> dict[str, MethodSpec]:
    """encode / decode / forward as nn~ reads them, with each method's streaming delay."""
    audio_in = channel_labels("in", core.channels)
    audio_out = channel_labels("out", core.channels)
    latents = channel_labels("latent", core.latent_size)
    return {
        "forward": MethodSpec(core.channels, 1, core.channels, 1, audio_in, audio_out, core.delay),
        "encode": MethodSpec(core.channels, 1, core.latent_size, core.compression, audio_in, latents,
                             core.encode_delay),
        "decode": MethodSpec(core.latent_size, core.compression, core.channels, 1, latents, audio_out,
                             core.decode_delay),
    }


def attribute_specs(latent_size: int) -> list[AttributeSpec]:
    """Attributes nn~ sets with ``[set NAME ...(`` (and OSC ``/attr/NAME``)."""
    return [
        AttributeSpec(TEMPERATURE, ["float"], [0.0], 0.0, TEMPERATURE_MAX,
                      "scale of the posterior noise in encode/forward; 0 = deterministic"),
        AttributeSpec(LATENT_BIAS, ["float"] * latent_size, [0.0] * latent_size,
                      description="per-dimension offset added between encode and decode in forward"),
        AttributeSpec(LATENT_SCALE, ["float"] * latent_size, [1.0] * latent_size,
                      description="per-dimension gain applied between encode and decode in forward"),
        AttributeSpec(RESET, ["bool"], [False],
                      description="true clears the streaming state (as a fresh load)"),
    ]


def exportable(core: ExportCore) -> StreamingExport:
    """The autoencoder family as the export targets see it (export/exportable.py)."""
    return StreamingExport("autoencoder", core, methods_table(core), attribute_specs(core.latent_size),
                           core.sample_rate, core.channels, core.delay)


def latent_dims(keep: int, stats: LatentStats | None) -> list[LatentDim]:
    """Statistics of the first ``keep`` exported dimensions (already in the PCA basis)."""
    if stats is None:
        # Identity projection, no data: the prior N(0, 1) is the best description we have.
        return [LatentDim(0.0, 1.0, -3.0, 3.0, 1.0 / keep) for _ in range(keep)]
    ratios = stats.variance_ratio
    return [LatentDim(mean=_finite(stats.dim_mean[i]), std=_finite(stats.dim_std[i], 1.0),
                      minimum=_finite(stats.dim_min[i], -3.0), maximum=_finite(stats.dim_max[i], 3.0),
                      variance_ratio=_finite(ratios[i]))
            for i in range(keep)]


def card_from_core(core: ExportCore, name: str, latent_stats: LatentStats | None,
                   profile_name: str, step: int) -> ModelCard:
    """The model card of an export of ``core`` (its projection already applied)."""
    kept_ratio = (sum(latent_stats.variance_ratio[:core.latent_size])
                  if latent_stats is not None else core.latent_size / core.full_latent_size)
    methods = methods_table(core)
    return ModelCard(
        name=name,
        sample_rate=core.sample_rate,
        channels=core.channels,
        compression=core.compression,
        latent_size=core.latent_size,
        methods=methods,
        attributes=attribute_specs(core.latent_size),
        delay=core.delay,
        latents=latent_dims(core.latent_size, latent_stats),
        profile=profile_name,
        step=step,
        torch_version=torch.__version__,
        tildekit_version=__version__,
        extra={"full_latent_size": core.full_latent_size,
               "kept_variance": round(_finite(kept_ratio, 1.0), 6),
               "latent_basis": "pca" if latent_stats is not None else "identity"},
        host_rates=host_rate_table(core.sample_rate, methods, core.compression),
    ).checked()  # what an exporter embeds passes the readers' validation


def _finite(value: float, fallback: float = 0.0) -> float:
    value = float(value)
    return value if math.isfinite(value) else fallback


RESET_SPEC = AttributeSpec(RESET, ["bool"], [False], description="true clears the streaming state (as a fresh load)")


def card_from_exportable(model: Exportable, name: str, profile_name: str = "", step: int = 0,
                         extra: dict[str, Any] | None = None) -> ModelCard:
    """The model card of any family's :class:`Exportable` (the autoencoder's is :func:`card_from_core`).

    ``latent_size`` is 0 (no latent attributes), ``compression`` the highest ratio of the
    methods (the frame the host-rate plans run whole), and ``reset`` is appended to the
    attributes unless the family lists it: every nn~ export has it.
    """
    methods = dict(model.methods)
    compression = max(max(m.in_ratio, m.out_ratio) for m in methods.values())
    attributes = list(model.attributes)
    if all(a.name != RESET for a in attributes):
        attributes.append(RESET_SPEC)
    return ModelCard(
        name=name,
        sample_rate=model.sample_rate,
        channels=model.channels,
        compression=compression,
        latent_size=0,
        methods=methods,
        attributes=attributes,
        delay=model.delay,
        profile=profile_name,
        step=step,
        torch_version=torch.__version__,
        tildekit_version=__version__,
        extra=dict(extra or {}),
        host_rates=host_rate_table(model.sample_rate, methods, compression, buffers=card_buffers(compression)),
        family=model.family,
    ).checked()
