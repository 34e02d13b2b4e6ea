"""`tildekit demo`: the whole pipeline on generated audio, in a few minutes on a CPU.

generate audio ─► preprocess ─► train `small` ─► info ─► export nn~ / Neutone / ONNX (checked)
─► Pd + Max patches ─► a short OSC score ─► eval of the export on held-out sounds (does it follow
its input?), then how to play it all.

``--family ddsp`` does the same for DDSP timbre transfer: one-voice harmonic melodies, the
`ddsp-raspberry` profile, the exports that take DDSP, the forward and MIDI synth patches, a score
of notes and attribute moves, and the eval's loudness and pitch following.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tildekit.models.contract.atomic import atomic_write_text
from tildekit.models.contract.hosts import DEFAULT_OSC_PORT
from tildekit.models.outputs import output_dir, refuse_foreign_file

if TYPE_CHECKING:
    from tildekit.models.config import Profile
    from tildekit.models.contract.card import ModelCard

DEMO_NAME = "demo"
DEMO_STEPS = 300  # enough for the `small` model to follow its input (tests/test_quality.py)
DDSP_PROFILE = "ddsp-raspberry"
# A narrower decoder on shorter windows: a step costs about an eighth of the profile's (1 s of CPU
# against 9 on the dev machine), so the demo trains in minutes; `tildekit train` takes the full one.
DDSP_DEMO_SETTINGS = ["model.hidden=64", "train.window=16384", "train.batch_size=4",
                      "train.stft_scales=[1024, 256, 64]", "train.validate_every=50"]
DDSP_DEMO_STEPS = 200
# The DDSP demo's score: notes (the engine's generation mode and the synth patch play them),
# then the timbre controls.
DDSP_EVENTS: list[dict] = [
    {"at": 0.0, "set": "note", "values": [60, 100]},
    {"at": 0.5, "set": "note", "values": [64, 80]},
    {"at": 1.0, "set": "note", "values": [67, 120]},
    {"at": 2.0, "set": "note", "values": [67, 0]},
    {"at": 2.5, "ramp": "attr/pitch_shift", "from": 0.0, "to": 12.0, "over": 2.0, "curve": "smoothstep"},
    {"at": 4.5, "attr": "pitch_shift", "values": [0.0]},
    {"at": 5.0, "ramp": "attr/noise_gain", "from": 1.0, "to": 0.0, "over": 1.0},
    {"at": 6.0, "attr": "noise_gain", "values": [1.0]},
    {"at": 6.5, "gain": 0.8},
]
# A short score for the demo model. Written with yaml.safe_dump: the model path is quoted
# whatever characters the output folder's path holds.
DEMO_SCORE_HEADER = f"# A short score for the demo model: `tildekit osc play score.yaml --port {DEFAULT_OSC_PORT}`\n"
DEMO_EVENTS = [
    {"at": 0.0, "set": "latent/0", "value": 0.0},
    {"at": 0.5, "ramp": "latent/0", "from": -1.5, "to": 1.5, "over": 4.0, "curve": "smoothstep"},
    {"at": 1.0, "lfo": "latent/1", "shape": "sine", "rate_hz": 0.5, "depth": 1.0, "center": 0.0, "over": 4.0},
    {"at": 2.0, "attr": "temperature", "values": [0.5]},
    {"at": 4.0, "attr": "temperature", "values": [0.0]},
    {"at": 4.5, "gain": 0.8},
    {"at": 5.5, "reset": True},
]


def demo_score(model: Path, events: list[dict] | None = None) -> str:
    import yaml

    body = yaml.safe_dump({"model": str(model), "rate_hz": 50, "events": events or DEMO_EVENTS},
                          sort_keys=False, default_flow_style=None, allow_unicode=False, width=1 << 16)
    return DEMO_SCORE_HEADER + body


def write_score(out: Path, model: Path, events: list[dict] | None = None) -> Path:
    """``out/score.yaml`` for ``model``, checked against its card (a typo fails here, not on stage)."""
    from tildekit.scripting.score import load_score

    score = out / "score.yaml"
    refuse_foreign_file(score, lambda path: path.read_bytes().startswith(DEMO_SCORE_HEADER.encode()), "demo folder")
    atomic_write_text(score, demo_score(model.resolve(), events))
    load_score(score)
    return score


MODEL_SUFFIXES = (".ts", ".nm", ".onnx")  # the files a host loads (not the ONNX state .npz)


def _export_and_patch(run: Path, exports: Path, name: str, targets: tuple[str, ...], stages: tuple[str, str],
                      echo: Callable[[str], None], quick: bool = False) -> tuple[ModelCard, Path]:
    """The export and patch stages of every demo: the run's files for ``targets`` in ``exports``,
    each checked as its host loads it before it is moved into place (``quick``: the structural
    items only), the targets a family leaves out named, then the Pd and Max patches.

    ``stages`` are the two stage lines echoed. Returns the card and the nn~ file.
    """
    import warnings

    from tildekit.export.cli import describe_file
    from tildekit.export.targets import export_run
    from tildekit.patches.write import write_patches

    echo(stages[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        card, written = export_run(run, targets, exports, name=name, quick=quick)
    for warning in caught:  # the targets left out (torch's own deprecation notes are not news here)
        if warning.category is UserWarning:
            echo(f"    note: {warning.message}")
    for path in written:
        if path.suffix in MODEL_SUFFIXES:
            checked = "structural" if quick else "all"
            echo(f"    {path.name}: {checked} host checks passed (`tildekit check {path.name}`)")
    model = exports / f"{name}.ts"
    echo(textwrap.indent(describe_file(model), "    "))

    echo(stages[1])
    for path in write_patches(model, host="both"):
        echo(f"    {path}")
    return card, model


def write_held_out(folder: Path, rate: int) -> list[Path]:
    """A tone, noise bursts and a chirp the model never trained on (seeds and pitches of their own)."""
    import numpy as np
    import soundfile as sf

    from tildekit.models.synthetic import chirp, harmonic_tone, noise_burst

    sounds = {
        "tone": harmonic_tone(293.7, 1.5, rate, harmonics=10, vibrato_depth=0.006, seed=101),
        "bursts": np.concatenate([noise_burst(0.4, rate, seed=100 + i, decay=0.08, low_hz=100.0 * (i + 1))
                                  for i in range(4)]),
        "chirp": chirp(150.0, 3000.0, 1.5, rate, kind="exponential"),  # inside the low-pass band
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sound in sounds.items():
        path = folder / f"{name}.wav"
        sf.write(path, sound, rate, subtype="FLOAT")
        paths.append(path)
    return paths


def _audio_to_run(out: Path, profile: Profile, write_audio: Callable[..., object], what: str,
                  seconds_of_audio: float, steps: int, progress: bool,
                  echo: Callable[[str], None]) -> tuple[Path, Path, Path]:
    """Stages 1-4 of every demo: generated audio, its dataset, a trained (or resumed) run, its summary.

    Returns the audio folder, the dataset and the run dir inside ``out``.
    """
    from tildekit.models.cli import describe_run
    from tildekit.models.families import train
    from tildekit.models.preprocess import preprocess
    from tildekit.models.run import RunDir
    from tildekit.models.trainer import training_window

    rate = profile.model.sample_rate
    echo(f"[1/8] generating {seconds_of_audio:.0f} s of {what}")
    audio = out / "audio"
    if not audio.exists():
        write_audio(audio, seconds=seconds_of_audio, sample_rate=rate)

    echo("[2/8] preprocessing")
    dataset = out / "dataset"
    report = preprocess(audio, dataset, sample_rate=rate, channels=profile.model.channels,
                        min_samples=training_window(profile), progress=progress)
    echo(textwrap.indent(report.summary(), "    "))

    echo(f"[3/8] training the '{profile.name}' profile for {steps} steps")
    run = out / "run"
    resume = (run / "checkpoints").exists()
    summary = train(dataset, run, None if resume else profile, steps=steps, resume=resume, progress=progress)
    echo(textwrap.indent(summary.text(), "    "))

    echo("[4/8] the trained model")
    echo(textwrap.indent(describe_run(RunDir(run)), "    "))
    return audio, dataset, run


def run_demo(out_dir: str | Path, steps: int = DEMO_STEPS, seconds_of_audio: float = 180.0,
             echo: Callable[[str], None] = print, progress: bool = True) -> dict[str, Path]:
    """Run every stage into ``out_dir``; returns the main paths. Safe to re-run (resumes training)."""
    from tildekit.models.config import load_profile
    from tildekit.models.synthetic import write_example_folder

    out = output_dir(out_dir, "demo folder")
    profile = load_profile("small")
    rate = profile.model.sample_rate
    audio, dataset, run = _audio_to_run(out, profile, write_example_folder,
                                        "test audio (tones, chirps, noise bursts)", seconds_of_audio, steps,
                                        progress, echo)

    exports = out / "export"  # files of the same names are replaced, nothing else is removed
    _, model = _export_and_patch(
        run, exports, DEMO_NAME, ("all",),
        ("[5/8] exporting for nn~ (.ts), Neutone FX (.nm) and ONNX Runtime (.onnx), each checked",
         "[6/8] writing Pure Data and Max patches next to the model"), echo)

    echo("[7/8] writing an OSC score")
    score = write_score(out, model)

    onnx = exports / f"{DEMO_NAME}.onnx"
    echo("[8/8] does the exported model follow its input? (held-out tone, bursts and chirp)")
    from tildekit.export.evaluate import evaluate

    evaluation = evaluate(onnx, write_held_out(out / "held-out", rate), out / "eval")
    echo(textwrap.indent(evaluation.text(), "    "))
    following = evaluation.overall["model"].loudness_correlation
    echo(f"    loudness-envelope correlation {'n/a' if following is None else f'{following:.2f}'}: "
         f"about 0.8 or more means the output follows the input's loudness "
         f"(the low-pass reference shows the ceiling; train longer to get there)")
    spectrogram = evaluation.files[0].spectrogram
    if spectrogram:
        echo(f"    spectrogram (input vs output): {out / 'eval' / spectrogram}")
    echo(f"    report: {out / 'eval' / 'report.md'}")

    port = DEFAULT_OSC_PORT
    patch = exports / (DEMO_NAME + '-transfer.pd')
    serve = f"tildekit serve {onnx} --input {audio / 'melody.wav'} --output {out / 'out.wav'}"
    echo(textwrap.dedent(f"""
        Done. To play it:
          Pure Data + nn~:  pd {patch}   (turn DSP on; the patch listens for OSC on {port})
          Max + nn~:        open {exports / (DEMO_NAME + '-transfer.maxpat')}
          Neutone FX:       load {exports / (DEMO_NAME + '.nm')} in the plugin (any DAW)
          headless:         {serve} --osc-port {port} --realtime
          score over OSC:   tildekit osc play {score} --port {port}
          measure:          tildekit eval {run} YOUR_SOUNDS/   (or the .ts / .onnx file)
        """))
    return {"run": run, "exports": exports, "model": model, "score": score, "dataset": dataset}


def write_held_out_voice(folder: Path, rate: int) -> list[Path]:
    """One-voice sounds the DDSP model never trained on: a slow tune, a swell, a glide."""
    import numpy as np
    import soundfile as sf

    from tildekit.models.synthetic import chirp, envelope, harmonic_tone

    tune = np.concatenate([harmonic_tone(f, 0.5, rate, harmonics=12, vibrato_depth=0.005, seed=200 + i)
                           for i, f in enumerate((196.0, 246.9, 293.7, 392.0))])
    swell = harmonic_tone(261.6, 2.0, rate, harmonics=8, sustain=1.0, seed=210)
    swell = swell * np.sin(np.linspace(0.0, np.pi, swell.size)) ** 2  # quiet - loud - quiet
    glide = chirp(150.0, 600.0, 1.5, rate, kind="exponential", amplitude=0.3)
    glide = glide * envelope(glide.size, rate, attack=0.05, release=0.2)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sound in {"tune": tune, "swell": swell, "glide": glide}.items():
        path = folder / f"{name}.wav"
        sf.write(path, sound.astype(np.float32), rate, subtype="FLOAT")
        paths.append(path)
    return paths


def run_ddsp_demo(out_dir: str | Path, steps: int = DDSP_DEMO_STEPS, seconds_of_audio: float = 120.0,
                  echo: Callable[[str], None] = print, progress: bool = True,
                  overrides: list[str] | None = None) -> dict[str, Path]:
    """:func:`run_demo` for DDSP timbre transfer (``overrides``: profile fields, e.g. a smaller model)."""
    from tildekit.export.evaluate import evaluate
    from tildekit.models.config import load_profile
    from tildekit.models.synthetic import write_monophonic_folder

    out = output_dir(out_dir, "demo folder")
    profile = load_profile(DDSP_PROFILE, DDSP_DEMO_SETTINGS + (overrides or []))
    rate = profile.model.sample_rate
    audio, dataset, run = _audio_to_run(out, profile, write_monophonic_folder, "one-voice harmonic melodies",
                                        seconds_of_audio, steps, progress, echo)

    exports = out / "export"
    _, model = _export_and_patch(
        run, exports, DEMO_NAME, ("all",),
        ("[5/8] exporting for every target that takes DDSP, each checked",
         "[6/8] writing Pure Data and Max patches next to the model (forward, MIDI synth, OSC)"), echo)

    echo("[7/8] writing an OSC score (notes, then the timbre controls)")
    score = write_score(out, model, DDSP_EVENTS)

    echo("[8/8] does the exported model follow its input? (held-out tune, swell and glide)")
    evaluation = evaluate(model, write_held_out_voice(out / "held-out", rate), out / "eval")
    echo(textwrap.indent(evaluation.text(), "    "))
    figures = evaluation.overall["model"]
    loudness, cents = figures.loudness_correlation, figures.f0_error_cents
    echo(f"    loudness-envelope correlation {'n/a' if loudness is None else f'{loudness:.2f}'} "
         f"(about 0.8 or more: the output follows the input's loudness)")
    echo("    f0 error " + (f"{cents:.0f} cents (under 50: it plays the input's notes)" if cents is not None else
                            "n/a: the output is not yet pitched enough to track; the harmonic part takes "
                            "longer to learn than the loudness: re-run with more --steps"))
    echo(f"    report: {out / 'eval' / 'report.md'}")

    port = DEFAULT_OSC_PORT
    echo(textwrap.dedent(f"""
        Done. To play it:
          Pure Data + nn~:  pd {exports / (DEMO_NAME + '-forward.pd')}   (your voice or instrument in)
          MIDI synth:       pd {exports / (DEMO_NAME + '-synth.pd')}   (a MIDI keyboard, or click the notes)
          Max + nn~:        open {exports / (DEMO_NAME + '-synth.maxpat')}
          Neutone FX:       load {exports / (DEMO_NAME + '.nm')} in the plugin (its knobs: the four attributes)
          headless:         tildekit serve {model} --input {audio / 'voice1.wav'} --output {out / 'out.wav'}
          notes by OSC:     tildekit serve {model} --silence 8 --output {out / 'notes.wav'} --osc-port {port}
                            and, meanwhile: tildekit osc play {score} --port {port}
          measure:          tildekit eval {run} YOUR_SOUNDS/
        """))
    return {"run": run, "exports": exports, "model": model, "score": score, "dataset": dataset}


# -- the effect family: `tildekit demo --family effect` ----------------------------------------

EFFECT_DEMO_NAME = "demo-fx"
EFFECT_DEMO_STEPS = 200
# A tiny TCN (receptive field 1 + 2 * 63 samples) that learns the overdrive's shape in minutes.
EFFECT_DEMO_SETTINGS = ["model.channels=8", "model.kernel_size=3", "model.dilations=[1, 2, 4, 8, 16, 32]",
                        "train.batch_size=4", "train.window=4096", "train.warmup=512",
                        "train.stft_scales=[128, 512, 2048]", "train.validate_every=100",
                        "train.checkpoint_every=100", "train.validation_fraction=0.2"]


def run_effect_demo(out_dir: str | Path, steps: int = EFFECT_DEMO_STEPS, segments: int = 24,
                    seconds: float = 0.5, echo: Callable[[str], None] = print,
                    progress: bool = True, quick: bool = False) -> dict[str, Path]:
    """Dry/wet pairs through the reference overdrive, a tiny effect model trained on them, its
    nn~ and Neutone files (checked) and patches. Safe to re-run (resumes training).

    ``quick``: the structural checks only (`tildekit check --quick`); the full check streams
    every host rate at one-sample buffers, which takes a minute for a model of ratio 1."""
    import numpy as np
    import soundfile as sf
    import torch

    from tildekit.export.nn_load import load_like_nn
    from tildekit.models.config import load_profile
    from tildekit.models.effects.pairs import PairSet, render_pairs
    from tildekit.models.effects.reference import OVERDRIVE
    from tildekit.models.families import train

    out = output_dir(out_dir, "demo folder")
    profile = load_profile("effect-tcn", EFFECT_DEMO_SETTINGS)
    rate = profile.model.sample_rate
    knobs = ", ".join(f"{k.name} {k.minimum:g}..{k.maximum:g}{f' {k.unit}' if k.unit else ''}" for k in OVERDRIVE.knobs)

    echo(f"[1/5] rendering {segments} dry/wet pairs of {seconds:g} s through the reference overdrive "
         f"({knobs}), random knobs per pair")
    pairs = out / "pairs"
    if not PairSet.is_pair_set(pairs):
        render_pairs(OVERDRIVE, segments, seconds, rate, seed=0).save(pairs)

    echo(f"[2/5] training a tiny effect model ('{profile.name}', FiLM knobs) for {steps} steps")
    run = out / "run"
    resume = (run / "checkpoints").exists()
    summary = train(pairs, run, None if resume else profile, steps=steps, resume=resume, progress=progress)
    echo(textwrap.indent(summary.text(), "    "))

    exports = out / "export"
    card, model = _export_and_patch(
        run, exports, EFFECT_DEMO_NAME, ("nn", "neutone"),
        ("[3/5] exporting for nn~ (.ts, every knob an attribute) and Neutone FX (.nm, four knobs), each checked",
         "[4/5] writing Pure Data and Max patches next to the model (a slider per knob)"), echo, quick=quick)

    echo("[5/5] the exported model on a held-out pair (knobs at their defaults)")
    held = render_pairs(OVERDRIVE, 1, 2.0, rate, seed=1, settings=[[k.default for k in OVERDRIVE.knobs]])
    dry = out / "dry.wav"
    sf.write(dry, held.dry[0], rate, subtype="FLOAT")
    module = load_like_nn(model)
    with torch.inference_mode():
        x = torch.from_numpy(held.dry).reshape(1, 1, -1)
        wet = torch.cat([module.forward(x[..., i:i + 2048]) for i in range(0, x.shape[-1], 2048)], -1)
    target = held.wet[0]
    esr = float(np.sum((wet[0, 0].numpy() - target) ** 2) / max(float(np.sum(target ** 2)), 1e-10))
    echo(f"    error-to-signal ratio against the overdrive: {esr:.3f} (0 is exact; train longer to lower it)")

    port = DEFAULT_OSC_PORT
    osc = f"/tildekit/{card.name}/attr"
    neutone = ", ".join(card.extra["neutone_knobs"])
    echo(textwrap.dedent(f"""
        Done. To play it:
          Pure Data + nn~:  pd {exports / (EFFECT_DEMO_NAME + '-forward.pd')}   (turn DSP on; play into the input)
          Max + nn~:        open {exports / (EFFECT_DEMO_NAME + '-forward.maxpat')}
          Neutone FX:       load {exports / (EFFECT_DEMO_NAME + '.nm')} in the plugin (knobs {neutone})
          headless:         tildekit serve {model} --input {dry} --output {out / 'wet.wav'} --osc-port {port} --realtime
          knobs over OSC:   tildekit osc send {osc}/gain 30   (also {osc}/tone, {osc}/level)
        """))
    return {"run": run, "exports": exports, "model": model, "pairs": pairs}
