"""One streaming interface over an exported model, whatever runs it (TorchScript or ONNX Runtime).

    runner = open_runner("model.ts", threads=1)
    y = runner.process(x)          # x: (channels, buffer) float32 -> (channels, buffer)
    runner.apply(control)          # a validated OscMap Control: bias, scale, attr, reset, note
    y = runner.generate(buffer)    # no input: decode the latents held in the bias, or play the
                                   # notes held over OSC (a model with a synth method, no decode)

The engine holds no model-specific code: it hands audio and Controls to a Runner. The runner
mirrors the latent bias and scale it has set, so latent-only generation (``generate``) decodes
exactly the latents a performer has dialled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tildekit.errors import TildekitError
from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE, RESET
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.oscmap import Control
from tildekit.models.contract.synth_controls import has_synth
from tildekit.scripting.notes import NoteControls

RUNTIMES = {".ts": "torchscript", ".onnx": "onnx"}


class Runner:
    """Common state of both runtimes: the card and the latent bias/scale last set."""

    runtime = "?"

    def __init__(self, path: Path, card: ModelCard) -> None:
        self.path = path
        self.card = card
        self.bias = np.zeros(card.latent_size, dtype=np.float32)
        self.scale = np.ones(card.latent_size, dtype=np.float32)
        # a synth model without a decoder generates from notes (``/note``) instead of latents
        self.notes = NoteControls(card) if has_synth(card.methods) and "decode" not in card.methods else None

    # -- audio -------------------------------------------------------------------
    def process(self, x: np.ndarray) -> np.ndarray:
        """One buffer through ``forward``: (channels, B) float32 -> (channels, B)."""
        raise NotImplementedError

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(latent_size, frames) -> (channels, frames * compression)."""
        raise NotImplementedError

    def synth(self, controls: np.ndarray) -> np.ndarray:
        """(2, frames) f0 Hz and loudness dB -> (channels, frames * ratio) through ``synth``."""
        raise TildekitError(f"{self.path.name}: this runtime cannot play a synth method; use the .ts export")

    def generate(self, buffer: int) -> np.ndarray:
        """Generation without input: decode ``buffer // compression`` frames of the current bias, or
        for a synth model, ``buffer // ratio`` frames of the notes played so far."""
        if self.notes is not None:
            return self.synth(self.notes.controls(buffer // self.notes.ratio))
        frames = buffer // self.card.compression
        latents = np.repeat(self.bias[:, None], frames, axis=1)
        return self.decode(latents)

    def warm_up(self, buffer: int, generate: bool = False, calls: int = 3) -> None:
        """Run a few silent buffers, then reset: TorchScript optimises on its first calls, which
        would otherwise over-run the first buffers of a performance."""
        for _ in range(calls):
            if generate:
                self.generate(buffer)
            else:
                self.process(np.zeros((self.card.channels, buffer), dtype=np.float32))
        self.reset()

    # -- control -----------------------------------------------------------------
    def apply(self, control: Control) -> None:
        """Apply one parsed Control (gain is the engine's, not the model's)."""
        kind = control.kind
        if kind == "bias":
            self.bias[control.index] = control.values[0]
            self._set(LATENT_BIAS, self.bias.tolist())
        elif kind == "bias_all":
            self.bias[:] = control.values
            self._set(LATENT_BIAS, self.bias.tolist())
        elif kind == "scale":
            self.scale[control.index] = control.values[0]
            self._set(LATENT_SCALE, self.scale.tolist())
        elif kind == "scale_all":
            self.scale[:] = control.values
            self._set(LATENT_SCALE, self.scale.tolist())
        elif kind == "attr":
            if control.name == RESET:
                if control.values and control.values[0]:
                    self.reset()
                return
            if control.name == LATENT_BIAS:
                self.bias[:] = control.values
            elif control.name == LATENT_SCALE:
                self.scale[:] = control.values
            self._set(control.name, list(control.values))
        elif kind == "reset":
            self.reset()
        elif kind == "note":
            if self.notes is None:  # OscMap only parses notes for a synth; a decoder takes latents
                raise TildekitError(f"{self.path.name} plays notes only without a decode method")
            self.notes.play(*control.values)
        elif kind != "gain":
            raise ValueError(f"unknown control kind {kind!r}")

    def _set(self, name: str, values: list[Any]) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Clear the streaming state (caches, noise position); keeps bias, scale and attributes."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model (nothing to do for most runtimes)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name}, {self.card.name})"


class TorchScriptRunner(Runner):
    """An nn~ TorchScript file: tildekit's exports, or any nn~ model (its card derived).

    A foreign model has no ``latent_bias`` / ``latent_scale`` attributes: when it has
    ``encode`` and ``decode``, the runner plays it as ``decode(encode(x) * scale + bias)`` (the
    timbre-transfer patch's path) so the latent controls work; its reset reloads the file and
    sets the attributes again, as nn~'s ``[reload(`` does.
    """

    runtime = "torchscript"

    def __init__(self, path: Path, card: ModelCard, threads: int) -> None:
        import torch

        super().__init__(path, card)
        torch.set_num_threads(threads)
        self._torch = torch
        self.model = self._load()
        self._setters: dict[str, Any] = {}
        self._bind_setters()
        self._values: dict[str, list[Any]] = {}  # attributes set so far (re-set after a reload)
        methods = set(card.methods)
        from tildekit.models.contract.card import is_derived

        # a file tildekit did not write, without latent attributes: latent controls go through
        # decode(encode(x) * scale + bias); tildekit's own files always play their forward
        self.latent_path = (is_derived(card) and LATENT_BIAS not in self._setters
                            and {"encode", "decode"} <= methods and card.latent_size > 0)

    def _load(self) -> Any:
        try:
            return self._torch.jit.load(str(self.path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise TildekitError(f"{self.path}: cannot load the TorchScript model "
                                f"({' '.join(str(exc).split())[:200]}): re-export it with `tildekit export`") from None

    def _bind_setters(self) -> None:
        self._setters = {name: getattr(self.model, f"set_{name}") for name in
                         (a.name for a in self.card.attributes) if hasattr(self.model, f"set_{name}")}

    def process(self, x: np.ndarray) -> np.ndarray:
        audio = self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        with self._torch.inference_mode():
            if self.latent_path:
                z = self.model.encode(audio)
                scale = self._torch.from_numpy(self.scale)[None, :, None]
                bias = self._torch.from_numpy(self.bias)[None, :, None]
                y = self.model.decode(z * scale + bias)
            else:
                y = self.model.forward(audio)
        return y[0].numpy()

    def decode(self, latents: np.ndarray) -> np.ndarray:
        if "decode" not in self.card.methods:
            raise TildekitError(f"{self.path.name} has no decode method: latent-only generation "
                                f"needs one (methods: {', '.join(self.card.methods)})")
        with self._torch.inference_mode():
            y = self.model.decode(self._torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32))[None])
        return y[0].numpy()

    def synth(self, controls: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            y = self.model.synth(self._torch.from_numpy(np.ascontiguousarray(controls, dtype=np.float32))[None])
        return y[0].numpy()

    def _set(self, name: str, values: list[Any]) -> None:
        if self.latent_path and name in (LATENT_BIAS, LATENT_SCALE):
            return  # applied between encode and decode in process()
        setter = self._setters.get(name)
        if setter is None:
            raise TildekitError(f"{self.path.name} has no setter set_{name} although its card lists it: "
                                f"re-export the model")
        # nn~ calls set_NAME with one argument per value; a setter may also take one list.
        params = setter.schema.arguments[1:]
        takes_list = len(params) == 1 and (len(values) != 1 or str(params[0].type).startswith("List"))
        if takes_list:
            setter(list(values))
        else:
            setter(*values)
        self._values[name] = list(values)

    def reset(self) -> None:
        from tildekit.models.contract.card import is_derived

        if RESET in self._setters and not is_derived(self.card):
            self._set(RESET, [True])
        elif self.model._c._has_method("reset_state"):
            self.model.reset_state()
        else:  # a foreign file: a fresh load is its initial state; keep what was set
            self.model = self._load()
            self._bind_setters()
            for name, values in list(self._values.items()):
                self._set(name, values)


class OnnxRunner(Runner):
    """ONNX Runtime through the exporter's ``OnnxStreamer`` (it owns the explicit state)."""

    runtime = "onnx"

    def __init__(self, path: Path, card: ModelCard, threads: int) -> None:
        super().__init__(path, card)
        try:
            from tildekit.export.onnx_runtime import OnnxStreamer
        except ImportError as exc:
            raise TildekitError(f"cannot run ONNX models in this install ({exc}): "
                                f"pip install onnxruntime, or use the .ts export") from None
        self._streamer_class = OnnxStreamer
        self._threads = threads
        self.streamer = self._open(path)
        self._decoder: Any = None

    def _open(self, path: Path) -> Any:
        try:
            return self._streamer_class(path, batch=1, threads=self._threads)
        except TypeError:  # a streamer without a thread option
            return self._streamer_class(path, batch=1)

    def process(self, x: np.ndarray) -> np.ndarray:
        y = self.streamer.process(np.ascontiguousarray(x, dtype=np.float32)[None])
        return np.asarray(y)[0]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        if self._decoder is None:
            path = self.path.with_name(f"{self.path.stem}.decode.onnx")
            if not path.is_file():
                raise TildekitError(f"latent-only generation needs {path.name} beside {self.path.name}: "
                                    f"re-export the model with `tildekit export`")
            self._decoder = self._open(path)
        y = self._decoder.process(np.ascontiguousarray(latents, dtype=np.float32)[None])
        return np.asarray(y)[0]

    def _set(self, name: str, values: list[Any]) -> None:
        self.streamer.set_attribute(name, values)

    def reset(self) -> None:
        self.streamer.reset()
        if self._decoder is not None:
            self._decoder.reset()


def open_runner(path: str | Path, threads: int = 1) -> Runner:
    """A Runner for an exported ``.ts`` (nn~ TorchScript) or ``.onnx`` model file."""
    from tildekit.export.card_io import model_card, read_card

    path = Path(path)
    runtime = RUNTIMES.get(path.suffix.lower())
    if runtime is None:
        raise TildekitError(f"{path}: the engine runs .ts (TorchScript) or .onnx exports, "
                            f"not {path.suffix or 'a file without extension'!r}")
    if threads < 1:
        raise TildekitError(f"--threads must be at least 1, got {threads}")
    card = model_card(path, measure_delays=False) if runtime == "torchscript" else read_card(path)
    if path.name.endswith((".encode.onnx", ".decode.onnx")):
        raise TildekitError(f"{path.name}: pass the full model ({card.name}.onnx), not one of its halves")
    if runtime == "torchscript":
        return TorchScriptRunner(path, card, threads)
    return OnnxRunner(path, card, threads)

