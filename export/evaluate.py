"""`tildekit eval`: play sound files through a streaming model as a host would, and measure
how well the output follows the input (figures defined in :mod:`tildekit.models.metrics`).

::

    MODEL (run dir | .ts | .onnx) ─► the streaming model, reset before each file
    AUDIO ─► the dataset's reading policy (decode, mix/duplicate channels, resample to the model)
          ─► + `delay` samples of silence ─► host-sized buffers ─► forward ─► drop the first `delay`
          ─► figures of the output, of the input low-passed at 4 kHz and of silence, per file and mean
          ─► OUT/report.md, report.json, NN-name.png (input vs output), NN-name.input/output.wav

A run dir is turned into its streaming build exactly as ``tildekit export`` does (ExportCore with
every latent dimension kept); an exported file runs in its host's runtime (TorchScript, ONNX
Runtime), so the figures of a run and of its exports agree up to float rounding.

The output folder is written whole or not at all: everything is computed first, written into a
hidden sibling and renamed into place. An existing folder is replaced only when it holds an
earlier ``tildekit eval`` report (or is empty).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from tildekit.errors import TildekitError
from tildekit.export.card_io import model_card
from tildekit.models import metrics
from tildekit.models.contract.card import FOREIGN_NOTE, ModelCard, is_derived
from tildekit.models.contract.hosts import DEFAULT_BUFFER, check_buffer

REPORT_FORMAT = "tildekit-eval"
REPORT_VERSION = 1
MIN_SECONDS = 0.1  # a few loudness frames
MAX_SECONDS = 600.0  # longer files are evaluated on their first ten minutes (memory stays bounded)
EXCERPT_SECONDS = 4.0
PLOT_SECONDS = 20.0
SYSTEMS = ("model", "lowpass_4k", "silence")
SYSTEM_LABELS = {
    "model": "model",
    "lowpass_4k": "reference: input low-passed at 4 kHz",
    "silence": "reference: silence",
}
MODEL_SUFFIXES = (".ts", ".onnx")


# ----------------------------------------------------------------------------- models


class StreamingModel(Protocol):
    """What the evaluation needs from a model: its card, one buffer at a time, a reset."""

    card: ModelCard
    kind: str

    def process(self, block: np.ndarray) -> np.ndarray:
        """``(channels, buffer)`` float32 -> ``(channels, buffer)``, ``card.delay`` samples late."""

    def reset(self) -> None:
        """Back to the state of a fresh load."""


class _CoreModel:
    """A run dir's newest checkpoint, built for streaming as the exporters build it."""

    kind = "run"

    def __init__(self, run_dir: Path) -> None:
        import torch

        from tildekit.export.prepare import core_from_run

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # no latent statistics: identity, exact here
            self.core, self.card = core_from_run(run_dir)
        self._torch = torch

    def process(self, block: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.core(self._torch.from_numpy(block)[None])[0].numpy()

    def reset(self) -> None:
        self.core.reset_state()


class _TorchScriptModel:
    """An nn~ file, loaded as nn~ loads it: tildekit's exports, or any nn~ model (RAVE's exports)
    whose card is derived from the file, its delay measured with an impulse (export/foreign_nn.py)."""

    kind = "torchscript"

    def __init__(self, path: Path) -> None:
        import torch

        from tildekit.export.nn_load import load_like_nn

        self.card = model_card(path)
        self.foreign = is_derived(self.card)
        self._path = path
        self.module = load_like_nn(path)
        self._torch = torch

    def process(self, block: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.module.forward(self._torch.from_numpy(block)[None])[0].numpy()

    def reset(self) -> None:
        if self.foreign:  # nn~ has no reset convention: a fresh load, as nn~'s [reload( does
            from tildekit.export.nn_load import load_like_nn

            self.module = load_like_nn(self._path)
        else:
            self.module.set_reset(True)


class _OnnxModel:
    """An ONNX export in ONNX Runtime, its state carried between buffers."""

    kind = "onnx"

    def __init__(self, path: Path, buffer: int) -> None:
        from tildekit.export.onnx_runtime import OnnxStreamer

        self.streamer = OnnxStreamer(path, batch=1, threads=1)
        self.card = self.streamer.card
        if self.streamer.method != "forward":
            raise TildekitError(f"{path.name} is the model's {self.streamer.method} half: evaluate "
                                f"{self.card.name}.onnx (forward)")
        quantum = self.streamer.quantum
        if buffer % quantum:
            raise TildekitError(f"--buffer {buffer}: {path.name} takes buffers of {quantum} samples "
                                f"(or multiples): pass --buffer {quantum}, or re-export with --buffer {buffer}")

    def process(self, block: np.ndarray) -> np.ndarray:
        return self.streamer.process(block[None])[0]

    def reset(self) -> None:
        self.streamer.reset()


def open_model(path: str | Path, buffer: int = DEFAULT_BUFFER) -> StreamingModel:
    """The streaming model of a run dir, an nn~ ``.ts`` or an ``.onnx`` export."""
    path = Path(path)
    if path.is_dir():
        model: StreamingModel = _CoreModel(path)
    elif not path.exists():
        raise TildekitError(f"{path} does not exist: pass a run dir, or a .ts / .onnx export")
    elif path.suffix.lower() == ".ts":
        model = _TorchScriptModel(path)
    elif path.suffix.lower() == ".onnx":
        model = _OnnxModel(path, buffer)
    elif path.suffix.lower() == ".nm":
        raise TildekitError(f"{path}: a Neutone file resamples and rebuffers as its plugin does: "
                            f"evaluate the run dir or the .ts / .onnx exported from it")
    else:
        raise TildekitError(f"{path}: cannot evaluate a {path.suffix or 'suffix-less'} file: pass a run "
                            f"dir, or a .ts / .onnx export")
    check_buffer(model.card, buffer)
    return model


def play(model: StreamingModel, audio: np.ndarray, buffer: int,
         on_buffer: Callable[[int], None] | None = None) -> np.ndarray:
    """``(channels, N)`` through the model in buffers of ``buffer``, after a reset; returns the
    ``(channels, N)`` output aligned with the input (the model's delay removed, as a host's delay
    compensation does: ``delay`` samples of silence are played after the file)."""
    delay = model.card.delay
    total = audio.shape[1] + delay
    padded = np.zeros((audio.shape[0], -(-total // buffer) * buffer), dtype=np.float32)
    padded[:, :audio.shape[1]] = audio
    model.reset()
    outputs = []
    for start in range(0, padded.shape[1], buffer):
        outputs.append(np.asarray(model.process(np.ascontiguousarray(padded[:, start:start + buffer])),
                                  dtype=np.float32))
        if on_buffer is not None:
            on_buffer(buffer)
    return np.concatenate(outputs, axis=1)[:, delay:delay + audio.shape[1]]


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class FileResult:
    path: str  # as given
    stem: str  # prefix of the files written for it
    seconds: float
    truncated: bool  # only the first MAX_SECONDS were evaluated
    voiced_fraction: float  # of the input's active frames (pyin)
    pitched: bool  # pitch figures reported
    figures: dict[str, metrics.Figures]  # per system in SYSTEMS
    spectrogram: str | None = None  # file names inside the report folder
    excerpts: dict[str, str] = field(default_factory=dict)


@dataclass
class EvalReport:
    model: str
    model_kind: str  # run | torchscript | onnx
    card: ModelCard
    buffer: int
    transfer: bool
    files: list[FileResult]
    overall: dict[str, metrics.Figures]
    out_dir: Path | None = None

    @property
    def figure_names(self) -> tuple[str, ...]:
        return metrics.TRANSFER_FIGURES if self.transfer else tuple(metrics.FIGURE_LABELS)

    def to_json(self) -> dict:
        card = self.card
        return {
            "format": REPORT_FORMAT, "version": REPORT_VERSION,
            "model": self.model, "model_kind": self.model_kind,
            "card": {"name": card.name, "sample_rate": card.sample_rate, "channels": card.channels,
                     "delay": card.delay, "profile": card.profile, "step": card.step,
                     "source": card.extra.get("card_source", "tildekit")},
            "buffer": self.buffer, "transfer": self.transfer,
            "figures": {name: metrics.FIGURE_LABELS[name][0] for name in self.figure_names},
            "overall": {system: _figures_json(f, self.figure_names) for system, f in self.overall.items()},
            "files": [{"path": r.path, "seconds": round(r.seconds, 4), "truncated": r.truncated,
                       "voiced_fraction": round(r.voiced_fraction, 4), "pitched": r.pitched,
                       "figures": {s: _figures_json(f, self.figure_names) for s, f in r.figures.items()},
                       "spectrogram": r.spectrogram, "excerpts": r.excerpts} for r in self.files],
        }

    def _header(self, model: str | None = None) -> str:
        card = self.card
        mode = ("out-of-domain input (--transfer): loudness and pitch following only"
                if self.transfer else "reconstruction of the input")
        origin = (f"{FOREIGN_NOTE}, delay measured with an impulse" if is_derived(card)
                  else f"step {card.step}")
        return (f"{model or self.model} ({self.model_kind}): {card.name}, {card.sample_rate} Hz, {origin}, "
                f"delay {card.delay} samples, played in buffers of {self.buffer}; {len(self.files)} "
                f"file(s), {sum(r.seconds for r in self.files):.1f} s; {mode}")

    def table(self, figures: dict[str, metrics.Figures] | None = None) -> str:
        """Plain-text table: one row per system, one column per figure."""
        figures = self.overall if figures is None else figures
        names = self.figure_names
        heads = [_short_label(n) for n in names]
        width = max(len(SYSTEM_LABELS[s]) for s in SYSTEMS)
        lines = ["  ".join([f"{'':<{width}}"] + [f"{h:>{max(len(h), 7)}}" for h in heads])]
        for system in SYSTEMS:
            row = [f"{SYSTEM_LABELS[system]:<{width}}"]
            for name, head in zip(names, heads):
                row.append(f"{_format(getattr(figures[system], name)):>{max(len(head), 7)}}")
            lines.append("  ".join(row))
        return "\n".join(lines)

    def text(self) -> str:
        return f"{self._header()}\nmean over files:\n{self.table()}"

    def markdown(self) -> str:
        names = self.figure_names
        lines = [f"# Evaluation of {_code(Path(self.model).name)}", "", self._header(_code(self.model)) + ".", "",
                 "Figures (see `tildekit eval --help` for their exact definitions):", ""]
        lines += [f"- **{metrics.FIGURE_LABELS[n][0]}**: {metrics.FIGURE_LABELS[n][1]}" for n in names]
        lines += ["", "## Mean over files", "", *self._markdown_table(self.overall), ""]
        for result in self.files:
            note = " (first 10 minutes)" if result.truncated else ""
            pitch = (f"pitched ({100 * result.voiced_fraction:.0f} % of active frames voiced)"
                     if result.pitched else
                     f"not pitched ({100 * result.voiced_fraction:.0f} % voiced): no pitch figures")
            lines += [f"## {_code(result.path)}", "", f"{result.seconds:.2f} s{note}, {pitch}.", "",
                      *self._markdown_table(result.figures), ""]
            if result.spectrogram:
                lines += [f"![input vs output]({result.spectrogram})", ""]
            if result.excerpts:
                lines += ["Excerpts: " + ", ".join(f"[{k}]({v})" for k, v in result.excerpts.items()), ""]
        return "\n".join(lines)

    def _markdown_table(self, figures: dict[str, metrics.Figures]) -> list[str]:
        names = self.figure_names
        rows = ["| system | " + " | ".join(metrics.FIGURE_LABELS[n][0] for n in names) + " |",
                "|---|" + "---|" * len(names)]
        for system in SYSTEMS:
            rows.append(f"| {SYSTEM_LABELS[system]} | "
                        + " | ".join(_format(getattr(figures[system], n)) for n in names) + " |")
        return rows


def _code(text: str) -> str:
    """An outside name as Markdown code: no backtick, line break or control character survives."""
    return "`" + re.sub(r"[`\x00-\x1f\x7f]", "?", text) + "`"


def _figures_json(figures: metrics.Figures, names: Sequence[str]) -> dict[str, float | None]:
    return {name: value for name, value in figures.as_dict().items() if name in names}


def _short_label(name: str) -> str:
    return {"stft_distance": "log-STFT L1", "mel_distance_db": "log-mel dB",
            "loudness_correlation": "loudness corr", "loudness_error_db": "loudness err dB",
            "f0_error_cents": "f0 cents", "voicing_agreement": "voicing"}[name]


def _format(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"


# ----------------------------------------------------------------------------- evaluating


@dataclass
class _Pictures:
    """What one file leaves in the report folder, held until everything succeeded."""

    stem: str
    sample_rate: int
    plot_input: np.ndarray  # mono, at most PLOT_SECONDS
    plot_output: np.ndarray
    plot_start: float  # seconds
    excerpt_input: np.ndarray  # (channels, samples)
    excerpt_output: np.ndarray


def evaluate(model_path: str | Path, audio_paths: Sequence[str | Path], out_dir: str | Path | None = None,
             transfer: bool = False, buffer: int = DEFAULT_BUFFER, progress: bool = False) -> EvalReport:
    """Evaluate a run dir or an exported ``.ts`` / ``.onnx`` on sound files (or folders of them).

    ``out_dir`` None writes nothing; otherwise the report folder (see the module docstring).
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_out_dir(out)
    files = resolve_audio(audio_paths)
    model = open_model(model_path, buffer)
    return evaluate_model(model, str(model_path), files, out, transfer, buffer, progress)


def evaluate_model(model: StreamingModel, model_name: str, files: Sequence[Path], out: Path | None,
                   transfer: bool, buffer: int, progress: bool = False) -> EvalReport:
    """:func:`evaluate` for an opened model (anything with ``card``, ``process`` and ``reset``)."""
    import torch
    from tqdm import tqdm

    from tildekit.models.preprocess import read_audio

    card = model.card
    rate = card.sample_rate
    check_buffer(card, buffer)
    stems = _unique_stems(files)
    for path in files:  # every file must read before any work: a bad one fails the run at once
        read_audio(path, rate, card.channels)
    results: list[FileResult] = []
    pictures: list[_Pictures] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a host's audio thread
    # None: only on a terminal (a log file gets the report, not a bar)
    bar = tqdm(total=len(files), desc="eval", unit="file", disable=None if progress else True, leave=False)
    try:
        for path, stem in zip(files, stems):
            bar.set_postfix_str(f"{path.name[-30:]}: reading", refresh=True)
            audio = read_audio(path, rate, card.channels)
            seconds = audio.shape[1] / rate
            if seconds < MIN_SECONDS:
                raise TildekitError(f"{path}: {seconds:.3f} s long: too short to evaluate "
                                    f"(at least {MIN_SECONDS} s)")
            truncated = seconds > MAX_SECONDS
            if truncated:
                audio = audio[:, :int(MAX_SECONDS * rate)]
            bar.set_postfix_str(f"{path.name[-30:]}: playing", refresh=True)
            output = play(model, audio, buffer)
            if not np.all(np.isfinite(output)):
                raise TildekitError(f"{model_name} outputs NaN or infinite samples on {path}: the model "
                                    f"is broken (check its training losses)")
            bar.set_postfix_str(f"{path.name[-30:]}: measuring", refresh=True)
            figures, source = _measure(audio, output, rate, transfer)
            results.append(FileResult(
                path=str(path), stem=stem, seconds=audio.shape[1] / rate, truncated=truncated,
                voiced_fraction=source.pitch.voiced_fraction if source.pitch else 0.0,
                pitched=bool(source.pitch and source.pitch.pitched), figures=figures,
                spectrogram=f"{stem}.png" if out is not None else None,
                excerpts={"input": f"{stem}.input.wav", "output": f"{stem}.output.wav"} if out is not None else {}))
            if out is not None:
                pictures.append(_pictures(stem, audio, output, rate, source.loudness_db))
            bar.update(1)
    finally:
        bar.close()
        torch.set_num_threads(threads)
    overall = {system: metrics.mean_figures([r.figures[system] for r in results]) for system in SYSTEMS}
    report = EvalReport(model_name, model.kind, card, buffer, transfer, results, overall, out)
    if out is not None:
        _write_report(out, report, pictures)
    return report


def _measure(audio: np.ndarray, output: np.ndarray, rate: int,
             transfer: bool) -> tuple[dict[str, metrics.Figures], metrics.Analysis]:
    """Figures of the model's output and of each reference against the input."""
    source = metrics.analyse(audio, rate, pitch=True)
    pitched = bool(source.pitch and source.pitch.pitched)
    systems = {"model": output, **{name: make(audio, rate) for name, make in metrics.REFERENCES.items()}}
    figures = {name: metrics.compare(source, metrics.analyse(signal, rate, pitch=pitched), transfer)
               for name, signal in systems.items()}
    return figures, source


def resolve_audio(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders contribute their audio files (recursively, sorted)."""
    from tildekit.models.preprocess import AUDIO_SUFFIXES, find_audio_files

    if not paths:
        raise TildekitError("no AUDIO given: pass sound files or folders of them")
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = find_audio_files(item)
            if not found:
                raise TildekitError(f"{item}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise TildekitError(f"{item}: no such file or folder")
    return files


def _unique_stems(files: Sequence[Path]) -> list[str]:
    """``01-name``, ``02-name``...: numbered, so equal names from different folders stay apart."""
    digits = max(2, len(str(len(files))))
    return [f"{i:0{digits}d}-{_safe_name(path.stem)}" for i, path in enumerate(files, start=1)]


def _safe_name(text: str) -> str:
    """Letters, digits, '.', '_', '-' only (an outside name never escapes the folder)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned[:60] or "audio"


# ----------------------------------------------------------------------------- pictures


def _loudest_window(loudness_db: np.ndarray, rate: int, total: int, seconds: float) -> tuple[int, int]:
    """(start, end) samples of the ``seconds`` long window with the most energy."""
    length = min(total, int(round(seconds * rate)))
    frame = max(1, int(round(metrics.LOUDNESS_FRAME_SECONDS * rate)))
    span = max(1, length // frame)
    energy = 10 ** (loudness_db / 10)
    if len(energy) <= span:
        return 0, length
    sums = np.convolve(energy, np.ones(span), mode="valid")
    start = min(int(np.argmax(sums)) * frame, total - length)
    return start, start + length


def _pictures(stem: str, audio: np.ndarray, output: np.ndarray, rate: int, loudness_db: np.ndarray) -> _Pictures:
    total = audio.shape[1]
    p0, p1 = _loudest_window(loudness_db, rate, total, PLOT_SECONDS)
    e0, e1 = _loudest_window(loudness_db, rate, total, EXCERPT_SECONDS)
    return _Pictures(stem, rate, metrics.as_mono(audio[:, p0:p1]), metrics.as_mono(output[:, p0:p1]), p0 / rate,
                     audio[:, e0:e1].copy(), output[:, e0:e1].copy())


def _frequency_ticks(rate: int) -> tuple[list[float], list[str]]:
    """Mel band positions of round frequencies, for the spectrogram's axis."""
    import librosa

    centres = librosa.mel_frequencies(metrics.MEL_BANDS + 2, fmin=0.0, fmax=rate / 2)[1:-1]
    hertz = [f for f in (100, 250, 500, 1000, 2000, 4000, 8000, 16000) if centres[0] <= f <= centres[-1]]
    positions = np.interp(hertz, centres, np.arange(metrics.MEL_BANDS)).tolist()
    return positions, [f"{f // 1000}k" if f >= 1000 else str(f) for f in hertz]


def _plot(picture: _Pictures, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 1, sharex=True)
    spectra = [metrics.log_mel_db(s, picture.sample_rate) for s in (picture.plot_input, picture.plot_output)]
    top = max(float(s.max()) for s in spectra)
    seconds = len(picture.plot_input) / picture.sample_rate
    extent = (picture.plot_start, picture.plot_start + seconds, -0.5, metrics.MEL_BANDS - 0.5)
    ticks, labels = _frequency_ticks(picture.sample_rate)
    for axis, spectrum, name in zip(axes, spectra, ("input", "output (delay removed)")):
        image = axis.imshow(spectrum, origin="lower", aspect="auto", vmin=top - 90, vmax=top, extent=extent,
                            cmap="magma")
        axis.set_title(f"{title}: {name}", fontsize=9)
        axis.set_yticks(ticks, labels)
        axis.set_ylabel("Hz (mel scale)")
    axes[-1].set_xlabel("seconds")
    figure.colorbar(image, ax=list(axes), label="dB")
    figure.savefig(path, dpi=80)


# ----------------------------------------------------------------------------- the folder


def default_out_dir(model_path: str | Path) -> Path:
    """``RUN-eval`` beside a run dir, ``NAME-ts-eval`` / ``NAME-onnx-eval`` beside an export."""
    path = Path(model_path)
    if path.is_dir():
        return path.resolve().parent / f"{path.resolve().name}-eval"
    return path.parent / f"{path.stem}-{path.suffix.lstrip('.').lower() or 'model'}-eval"


def _is_report_folder(path: Path) -> bool:
    try:
        data = json.loads((path / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == REPORT_FORMAT


def check_out_dir(out: Path) -> None:
    """Refuse a folder tildekit eval did not make (before any work is done)."""
    if out.exists() and not out.is_dir():
        raise TildekitError(f"--out {out}: exists and is not a folder: pick a new folder")
    if out.is_dir() and any(out.iterdir()) and not _is_report_folder(out):
        raise TildekitError(f"--out {out}: exists and does not hold a tildekit eval report: pick a new "
                            f"folder (an earlier report folder is replaced, any other is left alone)")


def _write_report(out: Path, report: EvalReport, pictures: Sequence[_Pictures]) -> None:
    """Write everything into a hidden sibling, then rename it into place."""
    import soundfile as sf

    check_out_dir(out)  # again: the folder may have changed while the model played
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for picture, result in zip(pictures, report.files):
            _plot(picture, Path(result.path).name, work / f"{picture.stem}.png")
            for kind, audio in (("input", picture.excerpt_input), ("output", picture.excerpt_output)):
                sf.write(work / f"{picture.stem}.{kind}.wav", np.ascontiguousarray(audio.T), picture.sample_rate,
                         subtype="FLOAT")
        (work / "report.md").write_text(report.markdown(), encoding="utf-8")
        (work / "report.json").write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report is meant to be shared
        _swap_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _swap_into_place(work: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(work, out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    retired.rmdir()
    os.replace(out, retired)
    try:
        os.replace(work, out)
    except BaseException:
        os.replace(retired, out)
        raise
    shutil.rmtree(retired, ignore_errors=True)
