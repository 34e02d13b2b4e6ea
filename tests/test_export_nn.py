"""nn~ export: streaming equality through the saved .ts, the card, attributes as Pd sends them,
export-time failure, and the export / check / bench commands on tiny hand-built runs."""

from __future__ import annotations

import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.export.card_io import read_card
from tildekit.export.check import check_file, nn_set, pd_word
from tildekit.export.core import ExportCore
from tildekit.export.model_card import card_from_core
from tildekit.export.nn_tilde import export_nn
from tildekit.export.prepare import choose_latent_dims, core_from_stats
from tildekit.models.autoencoder import AutoEncoder, build_model
from tildekit.models.config import Profile, load_profile
from tildekit.models.contract.card import CARD_FILE_NAME
from tildekit.models.latent_stats import LatentStats, stats_from_latents

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

TINY = ["model.capacity=4", "model.max_channels=16", "model.latent_size=4"]
TOLERANCE = 1e-5


@dataclass
class Exported:
    profile: Profile
    reference: AutoEncoder  # non-streaming, the training build
    stats: LatentStats
    core: ExportCore
    path: Path


def _tiny_models(profile: Profile, seed: int = 0) -> tuple[AutoEncoder, AutoEncoder]:
    torch.manual_seed(seed)
    reference = build_model(profile.model, False).eval()
    streaming = build_model(profile.model, True)
    streaming.load_state_dict(reference.state_dict())
    return reference, streaming


def _stats(reference: AutoEncoder) -> LatentStats:
    """Latent statistics from generated audio, so the PCA rotation is not the identity."""
    x = _chirp(1, 1, 16384, reference.sample_rate, seed=11)
    with torch.no_grad():
        mean, _ = reference.encode_params(x)
    return stats_from_latents(mean[0].t().double().numpy())


def _chirp(batch: int, channels: int, samples: int, rate: int, seed: int) -> torch.Tensor:
    t = torch.arange(samples) / rate
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for row in range(batch * channels):
        f0 = 80.0 * (row + 1)
        rows.append(0.4 * torch.sin(2 * torch.pi * (f0 + 300 * t) * t))
    x = torch.stack(rows).reshape(batch, channels, samples)
    return (x + 0.05 * torch.randn(x.shape, generator=generator)).float()




@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Exported:
    profile = load_profile("small", TINY)
    reference, streaming = _tiny_models(profile)
    stats = _stats(reference)
    core = core_from_stats(streaming, stats, keep=4)
    card = card_from_core(core, "tiny", stats, profile.name, 7)
    path = tmp_path_factory.mktemp("nn") / "tiny.ts"
    export_nn(core, card, path)
    return Exported(profile, reference, stats, core, path)


# ------------------------------------------------------------------------ whole-signal reference


def _reference(ex: Exported, method: str, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """What the streaming method must output, ``delay`` samples late: the training build + PCA."""
    core, model = ex.core, ex.reference
    with torch.no_grad():
        if method in ("encode", "forward"):
            p = torch.matmul(core.project, model.encode(x, 0.0) - core.latent_mean)
            if method == "encode":
                return p
            if bias is not None:
                p = p + bias.view(1, -1, 1)
            x = p
        z = torch.matmul(core.unproject, x) + core.fill_constant
        return model.decode(z, 0)


def _stream(module, method: str, x: torch.Tensor, step: int) -> torch.Tensor:
    with torch.inference_mode():
        call = getattr(module, method)
        return torch.cat([call(x[..., i:i + step]) for i in range(0, x.shape[-1], step)], -1)


def _latent_walk(batch: int, dims: int, frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    walk = torch.randn(batch, dims, frames, generator=generator).cumsum(-1)
    return (walk / walk.abs().amax(-1, keepdim=True)).float()


@pytest.mark.parametrize("method", ["encode", "decode", "forward"])
def test_streaming_through_the_saved_file_matches_the_whole_signal_model(exported: Exported, method: str):
    card = read_card(exported.path)
    spec = card.methods[method]
    module = torch.jit.load(str(exported.path)).eval()
    model = exported.reference
    samples = 32768
    warmup = model.receptive_field + spec.delay
    for batch in (1, 4):
        if spec.in_ratio == 1:
            x = _chirp(batch, 1, samples, card.sample_rate, seed=batch)
        else:
            x = _latent_walk(batch, card.latent_size, samples // card.compression, seed=batch)
        expected = _reference(exported, method, x)
        delay = spec.delay // spec.out_ratio
        skip = -(-warmup // spec.out_ratio)
        for buffer in (128, 512, 2048, 16384):
            nn_set(module, "reset", [True])
            got = _stream(module, method, x, buffer // spec.in_ratio)
            assert got.shape == expected.shape
            error = (got[..., skip:] - expected[..., skip - delay: expected.shape[-1] - delay]).abs().max()
            assert error <= TOLERANCE, (method, batch, buffer, float(error))


def test_card_read_back_from_the_file_matches(exported: Exported):
    card = read_card(exported.path)
    expected = card_from_core(exported.core, "tiny", exported.stats, exported.profile.name, 7)
    assert card == expected
    assert card.torch_version == torch.__version__
    assert card.methods["encode"].params == [1, 1, 4, 128]
    assert card.methods["forward"].delay == exported.core.delay
    assert [a.name for a in card.attributes] == ["temperature", "latent_bias", "latent_scale", "reset"]
    assert abs(sum(d.variance_ratio for d in card.latents) - 1.0) < 1e-6
    module = torch.jit.load(str(exported.path))
    assert list(module.get_methods()) == ["forward", "encode", "decode"]
    assert module.encode_params.tolist() == [1, 1, 4, 128]
    assert list(module.latent_bias_params.tolist()) == [2, 2, 2, 2]
    assert list(module.reset_params.tolist()) == [0]
    assert list(module.encode_output_labels) == ["latent 0", "latent 1", "latent 2", "latent 3"]


def test_attributes_set_as_pd_sends_them_change_the_output(exported: Exported):
    card = read_card(exported.path)
    module = torch.jit.load(str(exported.path)).eval()
    x = _chirp(1, 1, 8192, card.sample_rate, seed=3)

    def run(method: str) -> torch.Tensor:
        assert nn_set(module, "reset", [True]) == 0
        return _stream(module, method, x, 1024)

    # temperature: Pd's 6 decimals turn 1e-7 into 0.0, which is deterministic
    assert pd_word(1e-7) == "0.000000"
    assert nn_set(module, "temperature", [1e-7]) == 0
    assert list(module.get_temperature()) == [0.0]
    first, second = run("encode"), run("encode")
    assert torch.equal(first, second)
    assert nn_set(module, "temperature", [0.5]) == 0
    noisy = run("encode")
    assert not torch.equal(first, noisy)
    assert nn_set(module, "temperature", [0.0]) == 0

    # latent_bias shifts the latents between encode and decode in forward
    bias = torch.tensor([0.5, -0.25, 0.0, 0.125])
    assert nn_set(module, "latent_bias", bias.tolist()) == 0
    assert module.get_latent_bias() == pytest.approx(bias.tolist())
    got = run("forward")
    expected = _reference(exported, "forward", x, bias)
    delay, skip = card.delay, exported.reference.receptive_field + card.delay
    assert (got[..., skip:] - expected[..., skip - delay:-delay]).abs().max() <= TOLERANCE
    assert not torch.allclose(got, run_without_bias(module, run))

    # latent_scale 0 on every dim: forward decodes the fill constant, whatever the input
    assert nn_set(module, "latent_scale", [0.0] * 4) == 0
    silent_input = run("forward")
    x_saved = x.clone()
    x.mul_(0.5)
    assert torch.allclose(run("forward"), silent_input, atol=1e-6)
    x.copy_(x_saved)
    assert nn_set(module, "latent_scale", [1.0] * 4) == 0

    # reset true restores the initial state: the same output as a fresh load
    fresh = torch.jit.load(str(exported.path)).eval()
    with torch.inference_mode():
        expected_first = fresh.forward(x[..., :1024])
        module.forward(x[..., :1024])
    assert nn_set(module, "reset", [True]) == 0
    with torch.inference_mode():
        assert torch.equal(module.forward(x[..., :1024]), expected_first)

    assert module.set_sample_rate(card.sample_rate) == 0

    # the wrong number of values is refused the way nn~ refuses it
    with pytest.raises(Exception):  # noqa: B017 (TorchScript raises its own error types)
        module.set_latent_bias(1.0, 2.0)
    with pytest.raises(Exception):  # noqa: B017
        nn_set(module, "temperature", [-1.0])


def run_without_bias(module, run) -> torch.Tensor:
    nn_set(module, "latent_bias", [0.0] * 4)
    return run("forward")


def test_check_passes_on_the_export(exported: Exported):
    results = check_file(exported.path)
    failed = [r for r in results if not r.passed]
    assert not failed, failed
    items = " ".join(r.item for r in results)
    for needed in ("get_methods", "encode streaming", "operators exist in nn~ 1.6", "set_latent_bias",
                   "reset true restores"):
        assert needed in items


class BrokenCore(ExportCore):
    """decode raises on every call: the export must refuse to write the file."""

    def decode(self, p: torch.Tensor) -> torch.Tensor:
        if p.size(-1) >= 0:
            raise RuntimeError("decode is broken on purpose")
        return self.decode_from(p, 0)


def test_a_method_that_raises_fails_the_export_and_leaves_no_file(tmp_path: Path):
    profile = load_profile("small", TINY)
    _, streaming = _tiny_models(profile)
    core = BrokenCore(streaming)
    card = card_from_core(core, "broken", None, profile.name, 0)
    with pytest.raises(TildekitError, match="decode"):
        export_nn(core, card, tmp_path / "broken.ts")
    assert list(tmp_path.iterdir()) == []


def test_choose_latent_dims_by_count_and_fidelity():
    stats = LatentStats(mean=[0.0] * 4, components=np.eye(4).tolist(), variance=[6.0, 3.0, 0.9, 0.1],
                        dim_mean=[0.0] * 4, dim_std=[1.0] * 4, dim_min=[-1.0] * 4, dim_max=[1.0] * 4)
    assert choose_latent_dims(4, stats) == 4
    assert choose_latent_dims(4, stats, latent_dims=2) == 2
    assert choose_latent_dims(4, stats, fidelity=0.6) == 1
    assert choose_latent_dims(4, stats, fidelity=0.9) == 2
    assert choose_latent_dims(4, stats, fidelity=0.99) == 4 - 1
    assert choose_latent_dims(4, stats, fidelity=1.0) == 4
    for bad in ({"latent_dims": 0}, {"latent_dims": 5}, {"fidelity": 1.5}, {"latent_dims": 2, "fidelity": 0.5}):
        with pytest.raises(TildekitError):
            choose_latent_dims(4, stats, **bad)
    with pytest.raises(TildekitError, match="latent statistics"):
        choose_latent_dims(4, None, fidelity=0.9)


# ------------------------------------------------------------------------ run dirs and the CLI


def _make_run(run_dir: Path, overrides: list[str], with_stats: bool = True, step: int = 200) -> Path:
    from tildekit.models.run import PROFILE_FILE, write_checkpoint

    profile = load_profile("small", overrides)
    run_dir.mkdir(parents=True)
    (run_dir / PROFILE_FILE).write_text(profile.to_yaml())
    reference, _ = _tiny_models(profile, seed=1)
    if step:
        write_checkpoint(run_dir, {"format": 1, "step": step, "model": reference.state_dict(),
                                   "profile": profile.to_yaml()})
    if with_stats:
        _stats(reference).save(run_dir / "latent_stats.json")
    return run_dir


def test_cli_export_latent_dims_2_check_info_and_bench(tmp_path: Path):
    from tildekit.export.cli import describe_file

    run = _make_run(tmp_path / "run", TINY)
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(main, ["export", str(run), "--target", "nn", "--out", str(out),
                                  "--name", "two", "--latent-dims", "2"])
    assert result.exit_code == 0, result.output
    path = out / "two.ts"
    assert path.is_file() and sorted(p.name for p in out.iterdir()) == ["two.ts"]
    card = read_card(path)
    assert card.latent_size == 2 and card.step == 200 and card.extra["full_latent_size"] == 4
    assert card.methods["encode"].params == [1, 1, 2, 128]
    assert len(card.attribute("latent_bias").types) == 2
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        z = module.encode(torch.zeros(1, 1, 1024))
    assert z.shape == (1, 2, 8)
    assert module.set_latent_bias(0.5, 0.0) == 0

    result = runner.invoke(main, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output and "PASS  encode streaming" in result.output

    text = describe_file(path)
    assert "two.ts" in text and "[1, 1, 2, 128]" in text and "latent_bias" in text

    result = runner.invoke(main, ["bench", str(path), "--buffers", "128,2048", "--seconds", "0.05"])
    assert result.exit_code == 0, result.output
    assert "nn~ wrapper overhead" in result.output
    lines = [line for line in result.output.splitlines() if line.strip().startswith(("128 ", "2048 "))]
    assert len(lines) == 2 and "x" in lines[0]


def test_cli_export_without_stats_warns_and_uses_identity(tmp_path: Path):
    run = _make_run(tmp_path / "run", TINY, with_stats=False)
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    card = read_card(tmp_path / "o" / "run.ts")
    assert card.extra["latent_basis"] == "identity" and card.latent_size == 4
    assert "Warning:" in result.output and "no latent statistics" in result.output


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_bad_inputs_are_one_line_errors(tmp_path: Path, exported: Exported):
    runner = CliRunner()
    truncated = tmp_path / "truncated.ts"
    truncated.write_bytes(exported.path.read_bytes()[:5000])
    assert "truncated" in _one_line_error(runner.invoke(main, ["check", str(truncated)]))

    noise = tmp_path / "noise.ts"
    noise.write_bytes(random.Random(0).randbytes(20000))
    assert "not a TorchScript archive" in _one_line_error(runner.invoke(main, ["check", str(noise)]))
    assert "noise.ts" in _one_line_error(runner.invoke(main, ["bench", str(noise)]))

    assert "does not exist" in _one_line_error(runner.invoke(main, ["check", str(tmp_path / "missing.ts")]))

    newer = tmp_path / "newer.ts"
    with zipfile.ZipFile(exported.path) as source, zipfile.ZipFile(newer, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(f"/extra/{CARD_FILE_NAME}"):
                data = data.replace(b'"card_format": 1', b'"card_format": 99')
            target.writestr(info, data)
    assert "newer" in _one_line_error(runner.invoke(main, ["check", str(newer)]))

    no_checkpoint = _make_run(tmp_path / "empty-run", TINY, step=0)
    assert "no checkpoint" in _one_line_error(
        runner.invoke(main, ["export", str(no_checkpoint), "--out", str(tmp_path / "o")]))
    assert "does not exist" in _one_line_error(
        runner.invoke(main, ["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]))
    run = _make_run(tmp_path / "run", TINY)
    assert "--latent-dims 9" in _one_line_error(
        runner.invoke(main, ["export", str(run), "--latent-dims", "9", "--out", str(tmp_path / "o")]))


@pytest.mark.slow
def test_default_profile_exports_and_checks(tmp_path: Path):
    profile = load_profile("default")
    reference, streaming = _tiny_models(profile)
    stats = _stats(reference)
    core = core_from_stats(streaming, stats, keep=16)
    card = card_from_core(core, "default", stats, profile.name, 0)
    path = export_nn(core, card, tmp_path / "default.ts")
    module = torch.jit.load(str(path)).eval()
    skip = reference.receptive_field + card.delay
    x = _chirp(1, 1, (skip // 2048 + 8) * 2048, card.sample_rate, seed=1)
    expected = _reference(Exported(profile, reference, stats, core, path), "forward", x)
    nn_set(module, "reset", [True])
    got = _stream(module, "forward", x, 2048)
    error = (got[..., skip:] - expected[..., skip - card.delay:-card.delay]).abs().max()
    assert error <= TOLERANCE, float(error)
