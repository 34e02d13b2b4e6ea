"""`tildekit demo`: the whole pipeline on generated audio, in a few minutes on a CPU.

generate audio ─► preprocess ─► train `small` ─► info ─► export nn~ / Neutone / ONNX (checked)
─► Pd + Max patches ─► a short OSC score ─► eval of the export on held-out sounds (does it follow
its input?), then how to play it all.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from tildekit.errors import TildekitError
from tildekit.models.contract.atomic import atomic_write_text
from tildekit.models.contract.hosts import DEFAULT_OSC_PORT
from tildekit.models.outputs import output_dir, refuse_foreign_file

DEMO_NAME = "demo"
DEMO_STEPS = 300  # enough for the `small` model to follow its input (tests/test_quality.py)
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


def demo_score(model: Path) -> str:
    import yaml

    body = yaml.safe_dump({"model": str(model), "rate_hz": 50, "events": DEMO_EVENTS},
                          sort_keys=False, default_flow_style=None, allow_unicode=False, width=1 << 16)
    return DEMO_SCORE_HEADER + body


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


def run_demo(out_dir: str | Path, steps: int = DEMO_STEPS, seconds_of_audio: float = 180.0,
             echo: Callable[[str], None] = print, progress: bool = True) -> dict[str, Path]:
    """Run every stage into ``out_dir``; returns the main paths. Safe to re-run (resumes training)."""
    from tildekit.export.check import check_file
    from tildekit.export.cli import describe_file
    from tildekit.export.targets import export_run
    from tildekit.models.config import load_profile
    from tildekit.models.preprocess import preprocess
    from tildekit.models.run import RunDir
    from tildekit.models.synthetic import write_example_folder
    from tildekit.models.trainer import train, training_window
    from tildekit.patches.write import write_patches
    from tildekit.scripting.score import load_score

    out = output_dir(out_dir, "demo folder")
    profile = load_profile("small")
    rate = profile.model.sample_rate

    echo(f"[1/8] generating {seconds_of_audio:.0f} s of test audio (tones, chirps, noise bursts)")
    audio = out / "audio"
    if not audio.exists():
        write_example_folder(audio, seconds=seconds_of_audio, sample_rate=rate)

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
    from tildekit.models.cli import describe_run

    echo(textwrap.indent(describe_run(RunDir(run)), "    "))

    echo("[5/8] exporting for nn~ (.ts), Neutone FX (.nm) and ONNX Runtime (.onnx), each checked")
    exports = out / "export"  # files of the same names are replaced, nothing else is removed
    card, written = export_run(run, ("all",), exports, name=DEMO_NAME)
    for path in written:
        if path.suffix in (".ts", ".nm", ".onnx"):
            results = check_file(path)
            failed = [r for r in results if not r.passed]
            if failed:
                raise TildekitError(f"check failed on {path}: " + "; ".join(f"{r.item}: {r.reason}" for r in failed))
            echo(f"    {path.name}: {len(results)}/{len(results)} checks passed")
    model = exports / f"{DEMO_NAME}.ts"
    echo(textwrap.indent(describe_file(model), "    "))

    echo("[6/8] writing Pure Data and Max patches next to the model")
    for path in write_patches(model, host="both"):
        echo(f"    {path}")

    echo("[7/8] writing an OSC score")
    score = out / "score.yaml"
    refuse_foreign_file(score, lambda path: path.read_bytes().startswith(DEMO_SCORE_HEADER.encode()), "demo folder")
    atomic_write_text(score, demo_score(model.resolve()))
    load_score(score)  # validated against the model's card: a typo fails here, not on stage

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

    from tildekit.export.cli import describe_file
    from tildekit.export.nn_load import load_like_nn
    from tildekit.export.targets import export_run
    from tildekit.models.config import load_profile
    from tildekit.models.effects.pairs import PairSet, render_pairs
    from tildekit.models.effects.reference import OVERDRIVE
    from tildekit.models.families import train
    from tildekit.patches.write import write_patches

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

    echo("[3/5] exporting for nn~ (.ts, every knob an attribute) and Neutone FX (.nm, four knobs), each checked")
    exports = out / "export"
    # export_run checks each file as its host loads it before moving it into place (a failed
    # item raises): the same items `tildekit check` runs
    card, written = export_run(run, ("nn", "neutone"), exports, name=EFFECT_DEMO_NAME, quick=quick)
    for path in written:
        echo(f"    {path.name}: {'structural' if quick else 'every'} check passed (`tildekit check {path.name}`)")
    model = exports / f"{EFFECT_DEMO_NAME}.ts"
    echo(textwrap.indent(describe_file(model), "    "))

    echo("[4/5] writing Pure Data and Max patches next to the model (a slider per knob)")
    for path in write_patches(model, host="both"):
        echo(f"    {path}")

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
