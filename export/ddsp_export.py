"""The DDSP family as the export targets see it (export/exportable.py, docs/ddsp.md).

:func:`exportable` adapts a streaming :class:`~tildekit.models.ddsp.model.DDSP` once: its
methods ``forward`` (audio to audio), ``features`` (audio to f0 Hz and loudness dB per frame)
and ``synth`` (f0 and loudness per frame to audio), no delay, and its four float attributes
(``models/ddsp/model.ATTRIBUTES``), which the scripted module reads on every call. nn~ gets
every method and attribute; Neutone plays ``forward`` with the attributes as its four knobs;
ONNX gets one graph per method, the attributes scalar inputs of the graphs that read them
(``forward`` and ``synth``; export/onnx_runtime.KNOB_METHODS).
"""

from __future__ import annotations

from typing import Any

from tildekit.export.exportable import StreamingExport, prepare_streaming
from tildekit.export.model_card import card_from_exportable
from tildekit.models.contract.card import AttributeSpec, MethodSpec, ModelCard
from tildekit.models.ddsp.model import ATTRIBUTES, DDSP, method_delays, method_specs

FAMILY = "ddsp"

DESCRIPTIONS = {
    "pitch_shift": "semitones added to the tracked pitch before the decoder",
    "loudness_offset": "dB added to the tracked loudness before the decoder",
    "harmonic_gain": "gain of the harmonic (pitched) part",
    "noise_gain": "gain of the filtered noise part",
}

LABELS = {
    "audio": ["audio"],
    "controls": ["f0 (Hz)", "loudness (dB)"],
}

# the methods' inputs and outputs, by name (their channels and ratios: model.method_specs)
METHOD_LABELS = {
    "forward": ("audio", "audio"),
    "features": ("audio", "controls"),
    "synth": ("controls", "audio"),
}


def method_table(model: DDSP) -> dict[str, MethodSpec]:
    specs = method_specs(model)
    delays = method_delays(model)
    table = {}
    for name, (in_channels, in_ratio, out_channels, out_ratio) in specs.items():
        inputs, outputs = METHOD_LABELS[name]
        table[name] = MethodSpec(in_channels, in_ratio, out_channels, out_ratio,
                                 list(LABELS[inputs]), list(LABELS[outputs]), delays[name])
    return table


def attribute_specs(model: DDSP) -> list[AttributeSpec]:
    specs = []
    for name, (default, low, high) in ATTRIBUTES.items():
        value = float(getattr(model, name))  # the model's current setting is the file's default
        specs.append(AttributeSpec(name, ["float"], [value if low <= value <= high else default],
                                   low, high, DESCRIPTIONS[name]))
    return specs


def exportable(model: DDSP) -> StreamingExport:
    """The DDSP family as the export targets see it (prepares ``model`` in place)."""
    model = prepare_streaming(model, DDSP, "DDSP(cfg, streaming=True)")
    return StreamingExport(family=FAMILY, module=model, methods=method_table(model),
                           attributes=attribute_specs(model), sample_rate=int(model.sample_rate),
                           channels=int(model.channels), delay=int(model.delay))


def card(export: StreamingExport, name: str, profile_name: str = "", step: int = 0,
         extra: dict[str, Any] | None = None) -> ModelCard:
    """The model card of a DDSP export (export/model_card.card_from_exportable)."""
    module: Any = export.module
    # frame_lag: frame k is analysed from samples before k * hop, so an input is heard up to one
    # hop late in every build (no streaming delay: the card's delays are 0); `tildekit check`
    # allows it when it times the first response to a burst
    facts = {"hop": int(module.hop), "n_harmonics": int(module.harmonic.n_harmonics),
             "noise_bands": int(module.noise.bands), "frame_lag": int(module.hop)}
    return card_from_exportable(export, name, profile_name, step, {**facts, **(extra or {})})
