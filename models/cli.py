"""Commands of tildekit.models (registered by tildekit.cli)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tildekit.models.run import RunDir

COMMANDS: list[click.Command] = []


# --------------------------------------------------------------------------- preprocess


@click.command("preprocess")
@click.argument("input_dir", type=click.Path(path_type=Path))
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--profile", default="default", show_default=True, metavar="NAME_OR_PATH",
              help="Model profile (shipped name such as 'small', or a YAML file) that gives the "
                   "sample rate, the channel count and the training window.")
@click.option("--sample-rate", type=click.IntRange(min=1), default=None, metavar="HZ",
              help="Resample every file to this rate. [default: the profile's model.sample_rate]")
@click.option("--channels", type=click.IntRange(min=1), default=None, metavar="N",
              help="Channels to store: 1 mixes every file to mono; more keeps channels, "
                   "duplicating mono files. [default: the profile's model.channels]")
@click.option("--min-seconds", type=click.FloatRange(min=0.0), default=None, metavar="S",
              help="Skip files shorter than this after resampling. [default: one training "
                   "window, the profile's train.window rounded up to the model's compression]")
def preprocess_command(input_dir: Path, dataset_dir: Path, profile: str, sample_rate: int | None,
                       channels: int | None, min_seconds: float | None) -> None:
    """Turn the audio files in INPUT_DIR into a training dataset in DATASET_DIR.

    Reads wav, flac, ogg, mp3 and aiff files in INPUT_DIR and its sub-folders, converts them to
    one sample rate and channel count, and stores them as one memory-mapped file plus an index.
    Files that cannot be decoded, are silent or are too short are skipped and listed.

    Running it again on unchanged input with the same options does nothing; changed input
    rebuilds the dataset, which is replaced only once the new one is complete.
    """
    # Heavy imports here, so `tildekit --help` stays fast.
    from tildekit.errors import TildekitError
    from tildekit.models.config import EffectConfig, load_profile
    from tildekit.models.preprocess import preprocess

    chosen = load_profile(profile)
    if isinstance(chosen.model, EffectConfig):
        raise TildekitError(f"profile '{chosen.name}' is an effect profile: effect models train on pair sets "
                            "(pairs.npz + pairs.json, see docs/effects.md), not on preprocessed audio")
    rate = sample_rate if sample_rate is not None else chosen.model.sample_rate
    if min_seconds is not None:
        min_samples = int(round(min_seconds * rate))
    else:
        # The trainer rounds its window up to the compression; a shorter file could not fill it.
        compression = chosen.model.compression
        min_samples = -(-chosen.train.window // compression) * compression
    report = preprocess(input_dir, dataset_dir, sample_rate=rate,
                        channels=channels if channels is not None else chosen.model.channels,
                        min_samples=min_samples, progress=True)
    click.echo(report.summary())


COMMANDS.append(preprocess_command)


@click.command("preprocess-pairs")
@click.argument("folder", type=click.Path(path_type=Path))
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--sample-rate", type=click.IntRange(min=1), default=48000, show_default=True, metavar="HZ",
              help="Resample every pair to this rate (the effect profile's model.sample_rate).")
@click.option("--segment-seconds", type=click.FloatRange(min=0.0, min_open=True), default=2.0, show_default=True,
              metavar="S", help="Cut pairs into segments of this length (longer than the profile's "
                                "train.warmup + train.window); each pair's remainder is dropped.")
@click.option("--tolerance", type=click.IntRange(min=0), default=2, show_default=True, metavar="SAMPLES",
              help="Largest lag between dry and wet accepted as aligned.")
@click.option("--fix-lag", is_flag=True, help="Shift a lagging wet file back instead of refusing the pair.")
def preprocess_pairs_command(folder: Path, dataset_dir: Path, sample_rate: int, segment_seconds: float,
                             tolerance: int, fix_lag: bool) -> None:
    """Check recorded dry/wet pairs in FOLDER and write their pair set to DATASET_DIR.

    FOLDER holds the audio and a table, pairs.yaml or pairs.csv, with each pair's dry and wet
    file and knob values (docs/effects.md). Names, knob values, sample rates, channels, lengths,
    levels (silent or clipped files) and the alignment of every pair are checked; each problem
    is printed on one line and nothing is written unless there are none. The result is what
    `tildekit train DATASET_DIR RUN --profile effect-tcn` reads.
    """
    from tildekit.models.effects.recorded import preprocess_pairs

    report = preprocess_pairs(folder, dataset_dir, sample_rate=sample_rate, segment_seconds=segment_seconds,
                              tolerance=tolerance, fix_lag=fix_lag, echo=lambda line: click.echo(line, err=True))
    click.echo(report.summary())


COMMANDS.append(preprocess_pairs_command)


# --------------------------------------------------------------------------- train


@click.command("train")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--profile", default=None, metavar="NAME_OR_PATH",
              help="Model profile: a shipped name ('small', 'default', ...) or a YAML file. "
                   "[default: 'default' for a new run; the run's stored profile with --resume]")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train until the run reaches step N in total. [default: train.max_steps]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, metavar="B",
              help="Windows per step and per process (same as --set train.batch_size=B).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.FIELD=VALUE",
              help="Override one profile field, e.g. --set model.capacity=32 (repeatable).")
@click.option("--resume", is_flag=True,
              help="Continue the run in RUN_DIR from its last checkpoint (same steps, optimizer "
                   "and random state). --set may then change only what is safe mid-run: "
                   "train.learning_rate, kl_beta, kl_warmup, feature_matching_weight, "
                   "checkpoint_every, validate_every, max_steps, num_workers, and "
                   "adversarial_start while the run is still in phase 1 and the new start is ahead.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where to train.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(dataset_dir: Path, run_dir: Path, profile: str | None, steps: int | None,
                  batch_size: int | None, overrides: tuple[str, ...], resume: bool, device: str,
                  quiet: bool) -> None:
    """Train a model on DATASET_DIR (made by `tildekit preprocess`) into RUN_DIR.

    Phase 1 learns the representation (spectral distance + KL); from train.adversarial_start the
    encoder is frozen and the decoder is fine-tuned against a discriminator. Checkpoints,
    metrics.jsonl, plots and latent statistics are written in RUN_DIR. Start several
    processes with `torchrun --nproc_per_node=N -m tildekit train ...` to train in parallel.
    """
    from tildekit.models.config import load_profile
    from tildekit.models.families import train
    from tildekit.models.run import PROFILE_FILE

    changes = list(overrides) + ([f"train.batch_size={batch_size}"] if batch_size else [])
    chosen = None
    if profile is not None:
        chosen = load_profile(profile, changes)
    elif resume and changes:
        # Overrides without --profile apply to the stored profile (and must leave it unchanged).
        from tildekit.models.config import profile_from_dict
        from tildekit.models.run import read_profile

        if (run_dir / PROFILE_FILE).is_file():
            chosen = profile_from_dict(read_profile(run_dir).to_dict(), str(run_dir / PROFILE_FILE),
                                       changes)
    elif not resume:
        chosen = load_profile("default", changes)
    summary = train(dataset_dir, run_dir, chosen, steps=steps, resume=resume, progress=not quiet,
                    device=device)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary per torchrun job
        click.echo(summary.text())


COMMANDS.append(train_command)


# --------------------------------------------------------------------------- info


def describe_run(run: RunDir) -> str:
    """A readable summary of a training run: profile, step, losses and the model's shape."""
    from tildekit.models.config import DDSPConfig, EffectConfig, TrainConfig

    if isinstance(run.profile.model, DDSPConfig):
        return describe_ddsp_run(run)
    if isinstance(run.profile.model, EffectConfig):
        return describe_effect_run(run)
    model = run.load_model(streaming=True)
    cfg = run.profile.model
    assert isinstance(run.profile.train, TrainConfig)
    rate = cfg.sample_rate
    ms = lambda samples: f"{1000.0 * samples / rate:.1f} ms"  # noqa: E731
    parameters = sum(p.numel() for p in model.parameters())
    lines = [
        f"run:               {run.path}",
        f"profile:           {run.profile.name}",
        f"step:              {run.step} (checkpoint {run.checkpoint_path.name}; phase 2 from "
        f"step {run.profile.train.adversarial_start})",
        f"sample rate:       {rate} Hz, {cfg.channels} channel(s)",
        f"latent size:       {model.latent_size}",
        f"compression:       {model.compression}:1 ({rate / model.compression:.2f} latent frames/s)",
        f"receptive field:   {model.receptive_field} samples ({ms(model.receptive_field)})",
        f"streaming delay:   {model.delay} samples ({ms(model.delay)}); encode "
        f"{model.encode_delay}, decode {model.decode_delay}",
        f"parameters:        {parameters:,}",
    ]
    lines += _losses(run)
    lines.append(f"latent statistics: {'yes' if run.latent_stats is not None else 'not yet'}")
    return "\n".join(lines)


def _losses(run: RunDir) -> list[str]:
    losses = {k: v for k, v in run.metrics.items()
              if k not in ("step", "phase", "time", "steps_per_second", "validation_step", "kl_weight")}
    if not losses:
        return []
    return ["losses:            " + ", ".join(
        f"{k} {v:.4g}" for k, v in losses.items() if isinstance(v, (int, float)))]


def describe_ddsp_run(run: RunDir) -> str:
    """The summary of a DDSP run: its controls, synth and decoder instead of a latent space."""
    from tildekit.models.config import DDSPConfig
    from tildekit.models.ddsp.model import analysis_latency

    model = run.load_model(streaming=True)
    cfg = run.profile.model
    assert isinstance(cfg, DDSPConfig)
    rate = cfg.sample_rate
    ms = lambda samples: f"{1000.0 * samples / rate:.1f} ms"  # noqa: E731
    latency = analysis_latency(model)
    parameters = sum(p.numel() for p in model.parameters())
    lines = [
        f"run:               {run.path}",
        f"profile:           {run.profile.name} (family ddsp)",
        f"step:              {run.step} (checkpoint {run.checkpoint_path.name})",
        f"sample rate:       {rate} Hz, mono",
        f"controls:          f0 {cfg.f0_min:g}-{cfg.f0_max:g} Hz and loudness every {cfg.hop} samples "
        f"({rate / cfg.hop:.2f} frames/s)",
        f"synth:             {cfg.n_harmonics} harmonics, {cfg.noise_bands} noise bands",
        f"decoder:           GRU of {cfg.hidden}",
        f"streaming delay:   0 samples; the sound follows the input by its analysis windows "
        f"(loudness centre {ms(latency['loudness_window_centre'])}, pitch centre "
        f"{ms(latency['pitch_window_centre'])}) plus up to {ms(latency['glide'])} of glide",
        f"parameters:        {parameters:,}",
    ]
    return "\n".join(lines + _losses(run))


def describe_effect_run(run: RunDir) -> str:
    """The summary of an effect run: its core, conditioning and knobs instead of a latent space."""
    from tildekit.models.config import EffectConfig
    from tildekit.models.effects.train import load_effect_run

    model = load_effect_run(run.path, streaming=True)
    cfg = run.profile.model
    assert isinstance(cfg, EffectConfig)
    rate = cfg.sample_rate
    if cfg.core == "tcn":
        field = cfg.receptive_field
        core = (f"TCN of {cfg.channels} channels, kernel {cfg.kernel_size}, dilations {cfg.dilations}: "
                f"receptive field {field} samples ({1000.0 * field / rate:.1f} ms)")
    else:
        core = f"GRU of {cfg.channels} (its state carries the whole past)"
    knobs = "; ".join(f"{k.name} {k.minimum:g}..{k.maximum:g}{f' {k.unit}' if k.unit else ''} (default {k.default:g})"
                      for k in model.knobs)
    lines = [
        f"run:               {run.path}",
        f"profile:           {run.profile.name} (family effect)",
        f"step:              {run.step} (checkpoint {run.checkpoint_path.name})",
        f"sample rate:       {rate} Hz, mono",
        f"core:              {core}",
        f"conditioning:      {cfg.conditioning}, knobs smoothed over {cfg.smoothing_ms:g} ms",
        f"knobs:             {knobs or 'none'}",
        f"streaming delay:   {model.delay} samples (causal)",
        f"parameters:        {sum(p.numel() for p in model.parameters()):,}",
    ]
    return "\n".join(lines + _losses(run))
