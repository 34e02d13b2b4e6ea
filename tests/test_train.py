"""The trainer, the run dir, `tildekit train` and `tildekit info`: generated audio, tiny models."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tildekit.cli import main as cli
from tildekit.errors import TildekitError
from tildekit.models import synthetic
from tildekit.models.autoencoder import AutoEncoder
from tildekit.models.config import TrainConfig, load_profile
from tildekit.models.discriminator import (
    MultiDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    split_real_fake,
)
from tildekit.models.latent_stats import LatentStats, stats_from_latents
from tildekit.models.losses import (
    MEL_SCALES,
    MultiScaleMelDistance,
    MultiScaleSTFTDistance,
    ReconstructionLoss,
    kl_divergence,
    kl_weight,
)
from tildekit.models.preprocess import preprocess
from tildekit.models.run import RunDir, read_metrics, read_profile
from tildekit.models.trainer import train

SR = 16000
# `small`, shrunk until a step takes a fraction of a second on one CPU core.
TINY = ["model.capacity=8", "train.window=4096", "train.batch_size=4", "train.validate_every=1000",
        "train.checkpoint_every=1000", "train.discriminator_capacity=4"]


def tiny(*extra: str):
    return load_profile("small", TINY + list(extra))


def cli_args(*extra: str) -> list[str]:
    return [arg for override in TINY + list(extra) for arg in ("--set", override)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    synthetic.write_example_folder(root / "audio", seconds=24, sample_rate=SR)
    preprocess(root / "audio", root / "ds", SR, channels=1, progress=False)
    return root / "ds"


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- losses and parts


def test_spectral_distance_is_zero_for_identical_signals_and_grows_with_error() -> None:
    distance = MultiScaleSTFTDistance([256, 128])
    x = torch.from_numpy(synthetic.chirp(200.0, 4000.0, 0.25, SR)).reshape(1, 1, -1)
    assert float(distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    slightly = float(distance(x, x + 0.01 * torch.randn_like(x)))
    badly = float(distance(x, x + 0.3 * torch.randn_like(x)))
    assert 0.0 < slightly < badly
    assert torch.isfinite(distance(torch.zeros_like(x), torch.zeros_like(x)))  # silence


@pytest.mark.parametrize("rate", [16000, 48000])
def test_mel_distance_is_auralosss_log_mel_term(rate: int) -> None:
    """The mel distance computes auraloss's STFTLoss(scale="mel") log-magnitude term, scale by
    scale, and ReconstructionLoss's shared spectrograms give the terms their own forward gives."""
    import auraloss

    torch.manual_seed(0)
    x = torch.from_numpy(synthetic.chirp(200.0, 4000.0, 0.5, rate)).reshape(1, 1, -1).repeat(2, 1, 1)
    x[0, 0, : rate // 10] = 0.0  # digital silence: the magnitude floor counts
    y = (x + 0.05 * torch.randn_like(x)).requires_grad_()
    mel = MultiScaleMelDistance(rate, 2048)
    ours = mel(x, y)
    reference = torch.stack([
        auraloss.freq.STFTLoss(fft_size=n, hop_size=n // 4, win_length=n, sample_rate=rate, scale="mel",
                               n_bins=dict(MEL_SCALES)[n], w_sc=0.0, w_log_mag=1.0, w_lin_mag=0.0,
                               eps=1e-10)(y, x)
        for n in mel.scales]).mean()
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    (grad,) = torch.autograd.grad(ours, y)
    (expected,) = torch.autograd.grad(reference, y)
    assert float((grad - expected).norm() / expected.norm()) < 1e-4
    terms = ReconstructionLoss([2048, 512, 128], rate, 4, 1.0, 1.0)(x, y, None, None)
    assert float(terms["mel"]) == pytest.approx(float(ours), rel=1e-6)
    assert float(terms["fullband"]) == pytest.approx(float(MultiScaleSTFTDistance([2048, 512, 128])(x, y)), rel=1e-6)


def test_kl_is_zero_for_the_prior_and_weight_warms_up() -> None:
    mean, scale = torch.zeros(2, 4, 5), torch.ones(2, 4, 5)
    assert float(kl_divergence(mean, scale)) == pytest.approx(0.0)
    assert float(kl_divergence(mean + 1.0, scale)) == pytest.approx(4 * 0.5)  # 0.5 per dim
    assert kl_weight(0, 0.1, 100) == 0.0
    assert kl_weight(50, 0.1, 100) == pytest.approx(0.05)
    assert kl_weight(500, 0.1, 100) == pytest.approx(0.1)


def test_discriminator_covers_every_scale_and_period_and_losses_behave() -> None:
    cfg = TrainConfig(discriminator_scales=3, discriminator_periods=[2, 3, 5], discriminator_capacity=4)
    net = MultiDiscriminator(cfg, channels=2)
    real, fake = torch.randn(2, 2, 3001), torch.randn(2, 2, 3001)
    with torch.no_grad():
        outputs = net(torch.cat([real, fake]))
    assert len(outputs) == 3 + 3
    r, f = split_real_fake(outputs, 2)
    assert all(feats[-1].shape[1] == 1 and feats[-1].shape[0] == 2 for feats in r + f)
    assert float(feature_matching_loss(r, r)) == 0.0
    assert float(feature_matching_loss(r, f)) > 0.0
    assert torch.isfinite(discriminator_hinge_loss(r, f)) and torch.isfinite(generator_hinge_loss(f))


def test_latent_stats_find_the_principal_axis(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Most variance along (1, 1, 0) / sqrt 2, little along z.
    base = rng.standard_normal((4000, 3)) * np.array([3.0, 0.5, 0.1])
    rotation = np.array([[1, 1, 0], [-1, 1, 0], [0, 0, np.sqrt(2)]]) / np.sqrt(2)
    z = base @ rotation + np.array([1.0, -2.0, 0.5])
    stats = stats_from_latents(z)
    assert np.allclose(stats.mean, [1.0, -2.0, 0.5], atol=0.15)
    assert np.allclose(np.abs(stats.components[0]), [2 ** -0.5, 2 ** -0.5, 0.0], atol=0.02)
    assert stats.variance == sorted(stats.variance, reverse=True)
    components = np.array(stats.components)
    assert np.allclose(components @ components.T, np.eye(3), atol=1e-9)
    assert stats.dim_std[0] == pytest.approx(3.0, rel=0.05)
    assert all(lo < 0 < hi for lo, hi in zip(stats.dim_min, stats.dim_max))
    stats.save(tmp_path / "s.json")
    assert LatentStats.load(tmp_path / "s.json") == stats


# --------------------------------------------------------------------------- training runs


def test_short_run_lowers_the_reconstruction_distance_and_fills_the_run_dir(dataset: Path,
                                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    profile = tiny("train.checkpoint_every=10", "train.validate_every=10")
    summary = train(dataset, run, profile, steps=30, progress=False)
    assert summary.step == 30 and summary.phase == "representation"
    records = read_metrics(run)
    # the training distance falls steadily; a tiny model's few held-out windows are noisier,
    # so the held-out distance must fall below its start at some validation, not at each
    trained = [r["distance"] for r in records if r["kind"] == "train"]
    held_out = [r["distance"] for r in records if r["kind"] == "validation"]
    print(f"\ntraining distance {trained}, validation {held_out}, {summary.steps_per_second:.2f} steps/s")
    assert trained[-1] < 0.95 * trained[0]
    assert min(held_out[1:]) < held_out[0] == summary.first_validation_distance

    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step-00000020.pt", "step-00000030.pt"]  # only the last two kept
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 30 and isinstance(checkpoint["rng"]["torch"], torch.Tensor)
    assert (run / "plots" / "losses.png").stat().st_size > 0
    assert (run / "plots" / "spectrogram.png").stat().st_size > 0
    validation = [r["step"] for r in records if r["kind"] == "validation"]
    assert validation == [0, 10, 20, 30]
    assert all(np.isfinite(r["distance"]) for r in records if r["kind"] == "train")

    reader = RunDir(run)
    assert reader.step == 30 and reader.profile == profile
    model = reader.load_model(streaming=True)
    assert isinstance(model, AutoEncoder) and model.streaming and not model.training
    stats = reader.latent_stats  # phase 1 never ended: computed at the end of the run
    assert stats is not None and stats.size == 8 and len(stats.components) == 8
    assert stats.variance == sorted(stats.variance, reverse=True)
    assert reader.metrics["distance"] > 0 and "validation_distance" in reader.metrics

    result = CliRunner().invoke(cli, ["info", str(run)])
    assert result.exit_code == 0, result.output
    for expected in ["profile:           small", "step:              30", "16000 Hz",
                     "latent size:       8", "compression:       128:1",
                     f"streaming delay:   {model.delay} samples", "receptive field:",
                     "parameters:", "distance"]:
        assert expected in result.output


def test_resume_replays_an_uninterrupted_run_through_the_adversarial_phase(dataset: Path,
                                                                           tmp_path: Path) -> None:
    # the critic sees a random crop of half of each window: drawn from the replayed random state
    profile = tiny("train.batch_size=2", "train.checkpoint_every=2", "train.adversarial_start=3",
                   "train.discriminator_window=2048")
    straight = train(dataset, tmp_path / "straight", profile, steps=5, progress=False)
    assert straight.phase == "adversarial"
    assert {"adversarial", "feature_matching", "discriminator"} <= set(straight.losses)
    train(dataset, tmp_path / "split", profile, steps=2, progress=False)
    resumed = train(dataset, tmp_path / "split", None, steps=5, resume=True, progress=False)
    assert (resumed.start_step, resumed.step) == (2, 5)

    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    for part in ("model", "discriminator"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    # Latent statistics were taken when phase 1 ended, from the same encoder in both runs.
    assert RunDir(tmp_path / "straight").latent_stats == RunDir(tmp_path / "split").latent_stats
    phases = {r["step"]: r["phase"] for r in read_metrics(tmp_path / "split") if r["kind"] == "train"}
    assert phases[2] == "representation" and phases[4] == "adversarial"

    # Asking for fewer steps than done does nothing; a setting fixed for the run is refused by name.
    assert train(dataset, tmp_path / "split", None, steps=4, resume=True, progress=False).step == 5
    with pytest.raises(TildekitError, match=r"cannot change train\.seed \(run: 0, given: 5\)"):
        train(dataset, tmp_path / "split", tiny("train.batch_size=2", "train.checkpoint_every=2",
                                                "train.adversarial_start=3", "train.seed=5",
                                                "train.discriminator_window=2048", "train.learning_rate=0.5"),
              steps=6, resume=True, progress=False)


def test_resume_moves_the_start_of_phase_2_only_within_phase_1(dataset: Path, tmp_path: Path) -> None:
    # a run begun with phase 2 far away, moved to step 3 at step 2, trains exactly as a run that
    # had step 3 from the start: phase 1 does not depend on where it ends
    settings = ("train.batch_size=2", "train.checkpoint_every=2", "train.discriminator_window=2048")
    straight = train(dataset, tmp_path / "straight", tiny(*settings, "train.adversarial_start=3"), steps=5,
                     progress=False)
    train(dataset, tmp_path / "moved", tiny(*settings, "train.adversarial_start=100"), steps=2, progress=False)
    runner = CliRunner()
    common = ["train", str(dataset), str(tmp_path / "moved"), "--resume", "--quiet"]
    too_early = runner.invoke(cli, [*common, "--set", "train.adversarial_start=2"])
    assert too_early.exit_code == 2 and "must be a later step (> 2)" in too_early.output, too_early.output
    moved = runner.invoke(cli, [*common, "--steps", "5", "--set", "train.adversarial_start=3"])
    assert moved.exit_code == 0, moved.output
    assert read_profile(tmp_path / "moved").train.adversarial_start == 3
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "moved" / "checkpoints" / "last.pt", weights_only=True)
    assert straight.phase == "adversarial" and a["step"] == b["step"] == 5
    for part in ("model", "discriminator"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    # in phase 2 the boundary is part of the run's past: refused, nothing changed
    late = runner.invoke(cli, [*common, "--steps", "6", "--set", "train.adversarial_start=4"])
    assert late.exit_code == 2 and "already in phase 2" in late.output, late.output
    assert read_profile(tmp_path / "moved").train.adversarial_start == 3 and RunDir(tmp_path / "moved").step == 5


def test_kill_9_during_training_then_resume_continues_at_the_checkpointed_step(
        dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [str(dataset), str(run), "--profile", "small", "--quiet",
            *cli_args("train.batch_size=2", "train.checkpoint_every=3")]
    process = subprocess.Popen([sys.executable, "-m", "tildekit", "train", *args, "--steps", "500"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # well inside the next interval, maybe mid-write: any moment must do
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert last.exists(), process.stderr.read().decode()
    saved = RunDir(run).step
    assert saved > 0 and saved % 3 == 0

    target = saved + 4
    result = subprocess.run([sys.executable, "-m", "tildekit", "train", str(dataset), str(run),
                             "--resume", "--quiet", "--steps", str(target)],
                            capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"step {saved} -> {target}" in result.stdout
    assert RunDir(run).step == target
    assert torch.load(last, weights_only=True)["step"] == target
    assert not list((run / "checkpoints").glob(".*.tmp"))
    train_steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == target  # no replays logged


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Adam's first step moves every weight by the learning rate: at 10 the loss is NaN at step 2.
    # (A far larger rate collapses the encoder instead, with a finite loss: see the next test.)
    with pytest.raises(TildekitError) as caught:
        train(dataset, run, tiny("train.batch_size=2", "train.checkpoint_every=1",
                                 "train.learning_rate=10"), steps=20, progress=False)
    message = str(caught.value)
    bad_step = int(message.split("training stopped at step ")[1].split(":")[0])
    assert bad_step >= 2 and ("nan" in message or "inf" in message)
    kept = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert kept["step"] == bad_step - 1
    # that checkpoint's weights gave the bad loss: the message says so and starts a new run dir
    assert f"the newest checkpoint (step {bad_step - 1}" in message and "holds the weights" in message
    assert f"{run.name}-lr1 " in message and "--profile" in message and "--resume" not in message


def test_a_collapsed_encoder_stops_training_as_loudly_as_a_nan(dataset: Path, tmp_path: Path) -> None:
    # at 1e30 every weight is huge after one step: the latent comes out exactly 0 for any input
    # while the loss stays finite; training on would learn nothing, silently
    with pytest.raises(TildekitError, match=r"training stopped at step \d+: the encoder's latent is "
                                            r"exactly zero for sound in"):
        train(dataset, tmp_path / "run", tiny("train.batch_size=2", "train.learning_rate=1.0e+30"),
              steps=20, progress=False)


def follow_the_advice(message: str, rounds: int = 3) -> tuple[list[str], subprocess.CompletedProcess]:
    """Run the command a non-finite stop message gives, as printed, until it succeeds."""
    for _ in range(rounds):
        command = shlex.split(message.split("`")[1])
        assert command[:2] == ["tildekit", "train"]
        result = subprocess.run([sys.executable, "-m", "tildekit", *command[1:], "--quiet"],
                                capture_output=True, text=True, env=subprocess_env(), timeout=600)
        if result.returncode == 0:
            return command, result
        # still too fast: the same kind of advice again, never a refusal of the command itself
        assert result.returncode == 2 and "training stopped at step" in result.stderr, result.stderr[-2000:]
        message = result.stderr
    raise AssertionError(f"the advice did not lead to a finished run after {rounds} rounds: {message}")


@pytest.mark.parametrize("checkpoint_every", [1, 100])
def test_the_non_finite_stop_message_gives_a_command_that_works(dataset: Path, tmp_path: Path,
                                                                checkpoint_every: int) -> None:
    """The command in the message, run as printed, trains on with a lower learning rate: a new
    run dir when the newest checkpoint holds the bad weights, else --resume with --set."""
    run = tmp_path / "run dir"  # a space: the command must quote it
    profile = tiny("train.batch_size=2", f"train.checkpoint_every={checkpoint_every}", "train.max_steps=3",
                   "train.learning_rate=10")  # Adam's first step moves every weight by 10: NaN at step 2
    with pytest.raises(TildekitError) as caught:
        train(dataset, run, profile, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "training stopped at step 2" in message
    command, result = follow_the_advice(message)
    target = Path(command[3])
    assert result.stdout.count("-> 3") == 1 and RunDir(target).step == 3
    assert RunDir(target).profile.train.learning_rate < 10
    saved = torch.load(target / "checkpoints" / "last.pt", weights_only=False)
    assert saved["generator_optimizer"]["param_groups"][0]["lr"] == RunDir(target).profile.train.learning_rate
    if checkpoint_every == 1:
        assert target != run and "--profile" in command
    else:
        assert target == run and "--resume" in command


@pytest.mark.parametrize("override, field", [
    ("train.learning_rate=.inf", "train.learning_rate must be a finite number"),
    ("train.learning_rate=nan", "train.learning_rate must be a finite number"),
    ("train.learning_rate=-0.001", "train.learning_rate must be > 0"),
    ("train.kl_beta=-1", "train.kl_beta must be >= 0"),
    ("train.kl_beta=.nan", "train.kl_beta must be a finite number"),
    ("train.seed=-3", "train.seed must be in [0, 2**32)"),
    ("train.num_workers=-1", "train.num_workers must be >= 0"),
    ("train.stft_scales=[2048, 0]", "train.stft_scales must be a non-empty list of FFT sizes >= 4"),
    ("train.stft_scales=[]", "train.stft_scales must be a non-empty list"),
    ("train.feature_matching_weight=-2", "train.feature_matching_weight must be >= 0"),
    ("train.kl_warmup=-5", "train.kl_warmup must be >= 0"),
    ("train.discriminator_periods=[2, 0]", "train.discriminator_periods must be"),
    ("train.discriminator_window=1000", "train.discriminator_window must be >= 2048 samples"),
    ("train.learning_rate=[", "the value is not valid YAML"),
])
def test_training_settings_are_finite_and_sign_checked(dataset: Path, tmp_path: Path, override: str,
                                                       field: str) -> None:
    result = CliRunner().invoke(cli, ["train", str(dataset), str(tmp_path / "run"), "--profile", "small",
                                      "--set", override])
    assert result.exit_code == 2, result.output
    assert field in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_resume_refuses_fixed_settings_by_name_before_training(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(dataset, run, tiny("train.batch_size=2", "train.checkpoint_every=1"), steps=1, progress=False)
    before = (run / "profile.yaml").read_text()
    for override, name in (("model.capacity=16", "model.capacity"), ("train.window=8192", "train.window")):
        result = CliRunner().invoke(cli, ["train", str(dataset), str(run), "--resume", "--set", override])
        assert result.exit_code == 2 and f"cannot change {name} (run: " in result.output, result.output
        assert "train.learning_rate" in result.output  # says what may change
    result = CliRunner().invoke(cli, ["train", str(dataset), str(run), "--resume", "--batch-size", "3"])
    assert result.exit_code == 2 and "cannot change train.batch_size" in result.output
    assert (run / "profile.yaml").read_text() == before and RunDir(run).step == 1


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_cpu_processes_train_with_distributed_data_parallel(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "tildekit", "train", str(dataset), str(run), "--profile", "small", "--quiet",
               "--steps", "4", *cli_args("train.batch_size=2", "train.checkpoint_every=2",
                                         "train.adversarial_start=2")]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("step 0 -> 4") == 1 and "cpu x 2" in result.stdout  # rank 0 reports
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 4 and checkpoint["processes"] == 2
    records = read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4]  # one writer
    assert RunDir(run).latent_stats is not None


# --------------------------------------------------------------------------- errors


def test_bad_profile_fields_and_mismatched_datasets_are_one_line_errors(dataset: Path,
                                                                        tmp_path: Path) -> None:
    runner = CliRunner()
    run = str(tmp_path / "run")

    def error(*args: str) -> str:
        result = runner.invoke(cli, ["train", *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        return result.output

    assert "unknown field 'model.capacty'" in error(str(dataset), run, "--profile", "small",
                                                    "--set", "model.capacty=8")
    assert "train.batch_size must be an integer" in error(str(dataset), run, "--profile", "small",
                                                          "--set", "train.batch_size=lots")
    assert "unknown profile 'smal'" in error(str(dataset), run, "--profile", "smal")
    mismatch = error(str(dataset), run, "--profile", "default", "--steps", "1")
    assert "16000 Hz" in mismatch and "48000 Hz" in mismatch and "--profile default" in mismatch
    assert "nothing to resume" in error(str(dataset), str(tmp_path / "empty"), "--resume")
    assert "not a tildekit dataset" in error(str(tmp_path), run, "--profile", "small")


def test_run_dir_reader_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TildekitError, match="does not exist"):
        RunDir(tmp_path / "missing")
    with pytest.raises(TildekitError, match="not a tildekit run dir"):
        RunDir(tmp_path)
    (tmp_path / "profile.yaml").write_text(tiny().to_yaml())
    with pytest.raises(TildekitError, match="no checkpoint yet"):
        _ = RunDir(tmp_path).step
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert result.exit_code == 2 and "no checkpoint yet" in result.output


def test_a_checkpoint_of_the_earlier_layout_with_conv_biases_is_named_as_such(dataset: Path,
                                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(dataset, run, tiny("train.batch_size=2", "train.checkpoint_every=1"), steps=1, progress=False)
    path = run / "checkpoints" / "last.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["decoder.net.layers.0.bias"] = torch.zeros(1)
    torch.save(checkpoint, path)
    with pytest.raises(TildekitError, match="earlier tildekit whose convolutions had biases"):
        RunDir(run).load_model(streaming=False)
    with pytest.raises(TildekitError, match="earlier tildekit.*start a new run dir"):
        train(dataset, run, None, steps=2, resume=True, progress=False)


def test_a_second_fresh_start_in_a_used_run_dir_is_refused(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(dataset, run, tiny("train.batch_size=2", "train.checkpoint_every=1"), steps=1, progress=False)
    with pytest.raises(TildekitError, match="--resume"):
        train(dataset, run, tiny("train.batch_size=2"), steps=2, progress=False)
