"""Commands of tildekit.models (registered by tildekit.cli)."""

from __future__ import annotations

from pathlib import Path

import click

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
    from tildekit.models.config import load_profile
    from tildekit.models.preprocess import preprocess

    chosen = load_profile(profile)
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
