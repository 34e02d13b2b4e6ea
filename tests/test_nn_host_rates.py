"""The nn~ export at host rates other than the model's: what nn~ 1.6 calls on load and reload,
the host_sample_rate attribute as Pd sends it, streaming equality through the resampler before
and after TorchScript export, pitch, and the delays written in the card."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tildekit.export.card_io import card_extra_files, read_card
from tildekit.export.check import NOT_RATES, nn_set
from tildekit.export.core import ExportCore
from tildekit.export.model_card import card_from_core
from tildekit.export.nn_tilde import nn_tilde_module
from tildekit.models.autoencoder import build_model
from tildekit.models.config import load_profile
from tildekit.models.contract.nn_host import HOST_RATE_ATTRIBUTE
from tildekit.models.resample_plan import HOST_RATES, method_plans
from tildekit.patches.write import write_patches

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

TINY = ["model.capacity=4", "model.max_channels=16", "model.latent_size=4"]
TOLERANCE = 1e-5
SAMPLES = 16384


def _streaming_model(seed: int = 0):
    torch.manual_seed(seed)
    profile = load_profile("small", TINY)
    whole = build_model(profile.model, False).eval()
    streaming = build_model(profile.model, True)
    streaming.load_state_dict(whole.state_dict())
    return streaming


def _save(module: torch.nn.Module, card, path: Path) -> Path:
    # the exporter's contract check (export_nn) runs these same items; tests/test_export_nn.py covers it
    torch.jit.save(torch.jit.script(module), str(path), _extra_files=card_extra_files(card))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    core = ExportCore(_streaming_model())
    card = card_from_core(core, "tiny", None, "small", 0)
    path = _save(nn_tilde_module(core, card), card, tmp_path_factory.mktemp("nn") / "tiny.ts")
    return core, card, path


def _load(path: Path):
    return torch.jit.load(str(path)).eval()  # what nn~ does: torch::jit::load, eval(), nothing else


def _chirp(samples: int, rate: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    t = torch.arange(samples) / rate
    x = 0.4 * torch.sin(2 * torch.pi * (120 + 900 * t) * t)
    noise = 0.05 * torch.randn(batch, 1, samples, generator=torch.Generator().manual_seed(seed))
    return (x + noise).float()


def _stream(method, x: torch.Tensor, step: int) -> torch.Tensor:
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        return torch.cat([method(x[..., i:i + step]) for i in range(0, x.shape[-1], step)], -1)


# -- what nn~ 1.6 does on load and on [reload( ---------------------------------------------------

def test_load_then_reload_as_nn_tilde_does_never_raises(tiny):
    _, card, path = tiny
    x = _chirp(2048, card.sample_rate)
    loaded = _load(path)  # on load nn~ 1.6 calls nothing: the model plays at its own rate
    assert list(loaded.get_host_sample_rate()) == [card.sample_rate]
    expected = _stream(loaded.forward, x, 2048)
    for value in NOT_RATES:  # [reload(: a fresh load, then set_sample_rate(<uninitialised>)
        reloaded = _load(path)
        assert reloaded.set_sample_rate(value) == 0
        assert list(reloaded.get_host_sample_rate()) == [card.sample_rate]
        assert torch.equal(_stream(reloaded.forward, x, 2048), expected)


def test_set_sample_rate_adopts_a_real_rate_and_silences_an_unplayable_one(tiny, capfd):
    _, card, path = tiny
    model = _load(path)
    assert model.set_sample_rate(44100) == 0  # a host that tells the truth is simply followed
    assert list(model.get_host_sample_rate()) == [44100]
    assert _stream(model.forward, _chirp(512, 44100), 512).shape == (1, 1, 512)
    assert model.set_sample_rate(22050) == 0  # real, but not a rate this file plays: never raise
    assert "22050 Hz" in capfd.readouterr().out  # printed on the host's standard output
    assert not _stream(model.forward, _chirp(512, 22050), 512).any()  # silence, not the wrong pitch
    assert nn_set(model, HOST_RATE_ATTRIBUTE, [48000]) == 0  # the patch's message recovers
    assert _stream(model.forward, _chirp(4096, 48000), 512).abs().max() > 0


def test_host_sample_rate_as_pd_sends_it(tiny):
    _, card, path = tiny
    model = _load(path)
    assert list(model.host_sample_rate_params.tolist()) == [1]  # one int
    assert HOST_RATE_ATTRIBUTE in model.get_attributes()
    with pytest.raises(Exception, match="plays at 16000, 44100, 48000, 88200, 96000 Hz"):
        nn_set(model, HOST_RATE_ATTRIBUTE, [22050])  # nn~ catches it and prints it in the console
    assert nn_set(model, HOST_RATE_ATTRIBUTE, [88200]) == 0  # "88200.000000", parsed as nn~ does
    x = _chirp(8192, 88200)
    model.set_reset(True)
    once = _stream(model.forward, x, 1024)
    model.set_reset(True)
    first = _stream(model.forward, x[..., :4096], 1024)
    assert nn_set(model, HOST_RATE_ATTRIBUTE, [88200]) == 0  # Pd re-sends it when its DSP graph changes
    second = _stream(model.forward, x[..., 4096:], 1024)
    assert torch.equal(torch.cat([first, second], -1), once)  # ... and nothing is reset


# -- streaming equality through the resampler --------------------------------------------------

@pytest.mark.parametrize("rate", HOST_RATES)
def test_buffers_equal_one_whole_signal_pass_before_and_after_export(tiny, rate: int):
    core, card, path = tiny
    for model in (nn_tilde_module(core, card), _load(path)):
        assert model.set_host_sample_rate(rate) == 0
        for name, buffers in (("forward", [64 << k for k in range(8)]), ("encode", [128, 1024, 8192]),
                              ("decode", [128, 1024, 8192])):
            spec = card.methods[name]
            method = getattr(model, name)
            if spec.in_ratio == 1:
                x = _chirp(SAMPLES, rate, batch=2, seed=rate)
            else:
                x = torch.randn(2, card.latent_size, SAMPLES // spec.in_ratio,
                                generator=torch.Generator().manual_seed(rate)).cumsum(-1) / 20
            model.set_reset(True)
            whole = _stream(method, x, x.shape[-1])
            assert whole.shape == (2, spec.out_channels, SAMPLES // spec.out_ratio)
            plan = method_plans(card.sample_rate, rate, card.methods, card.compression)[name]
            for buffer in buffers:
                model.set_reset(True)
                got = _stream(method, x, buffer // spec.in_ratio)
                # each call size has its own delay (the card's buffer_delays): align, then compare
                lead = plan.call_prefill(x.shape[-1]) - plan.call_prefill(buffer // spec.in_ratio)
                if lead < 0:
                    got, whole_part = got[..., -lead:], whole[..., : whole.shape[-1] + lead]
                else:
                    got, whole_part = got[..., : got.shape[-1] - lead], whole[..., lead:]
                assert got.shape[-1] > whole.shape[-1] // 2
                error = float((got - whole_part).abs().max())
                assert error <= TOLERANCE, (type(model).__name__, rate, name, buffer, error)
        assert model.set_host_sample_rate(card.sample_rate) == 0


# -- pitch and delay: probe models whose output is known ------------------------------------------

class ProbeCore(ExportCore):
    """forward: a pure delay of ``delay`` samples; decode: a 1 kHz sine in model time."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.line = torch.zeros(1, 1, self.delay)
        self.clock = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.line, x], -1)
        self.line = joined[..., x.size(-1):]
        return joined[..., : x.size(-1)]

    def decode(self, p: torch.Tensor) -> torch.Tensor:
        n = p.size(-1) * self.compression
        t = (self.clock + torch.arange(n)) / self.sample_rate
        self.clock += n
        return torch.sin(2 * torch.pi * 1000.0 * t).reshape(1, 1, n).repeat(p.size(0), 1, 1)

    def reset_state(self) -> None:
        self.line = torch.zeros(1, 1, self.delay)
        self.clock = 0


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    core = ProbeCore(_streaming_model())
    card = card_from_core(core, "probe", None, "small", 0)
    return card, _save(nn_tilde_module(core, card), card, tmp_path_factory.mktemp("probe") / "probe.ts")


def _peak_hz(y: np.ndarray, rate: int) -> float:
    window = np.hanning(y.size)
    return float(np.fft.rfftfreq(y.size, 1 / rate)[np.argmax(np.abs(np.fft.rfft(y * window)))])


@pytest.mark.parametrize("rate", HOST_RATES)
def test_a_1khz_model_plays_1khz_at_every_host_rate(probe, rate: int):
    card, path = probe
    model = _load(path)
    latents = torch.zeros(1, card.latent_size, rate // card.compression)
    untold = _stream(model.decode, latents, 2048 // card.compression)[0, 0].numpy()
    # without the patch's message nn~ 1.6 plays the model's samples at the host's rate:
    assert _peak_hz(untold, rate) == pytest.approx(1000 * rate / card.sample_rate, abs=3)
    assert nn_set(model, HOST_RATE_ATTRIBUTE, [rate]) == 0
    told = _stream(model.decode, latents, 2048 // card.compression)[0, 0].numpy()
    assert _peak_hz(told[rate // 8:], rate) == pytest.approx(1000, abs=3)


@pytest.mark.parametrize("rate", HOST_RATES)
def test_forward_is_delayed_by_exactly_what_the_card_says(probe, rate: int):
    card, path = probe
    host = card.host_rate(rate)
    assert host.delays["forward"] == int(host.delays["forward"]) and host.added_ms["forward"] >= 0
    model = _load(path)
    assert nn_set(model, HOST_RATE_ATTRIBUTE, [rate]) == 0
    n = torch.arange(rate // 2 // 4096 * 4096)
    f = 0.3 * min(rate, card.sample_rate)
    x = (0.5 * torch.sin(2 * torch.pi * f * n / rate)).reshape(1, 1, -1)
    for buffer in (512, 2048, 4096):  # each buffer size has its own delay
        delay = host.delay("forward", buffer)
        assert delay == int(delay) and delay <= host.delays["forward"]
        model.set_reset(True)
        y = _stream(model.forward, x, buffer)[0, 0]
        settled = n[int(delay) + 4000:]
        expected = 0.5 * torch.sin(2 * torch.pi * f * (settled - delay) / rate)
        assert float((y[settled] - expected).abs().max()) < 1e-3, (rate, buffer, delay)


def test_the_card_records_every_host_rate(tiny):
    _, card, path = tiny
    assert read_card(path).host_rates == card.host_rates
    assert [h.rate for h in card.host_rates] == list(HOST_RATES)
    for host in card.host_rates:
        assert set(host.delays) == set(card.methods)
        for method in ("forward", "decode"):  # audio out: whole host samples
            assert host.delays[method] == int(host.delays[method])
        native = card.methods["forward"].delay * host.rate / card.sample_rate
        assert host.delays["forward"] == pytest.approx(native + host.added_ms["forward"] * host.rate / 1000,
                                                       abs=1e-3 * host.rate / 1000)


# -- the generated patches tell the model (real Pure Data) ------------------------------------

PD = shutil.which("pd")


def _probe_abstraction(folder: Path, inlets: int, outlets: int) -> None:
    """Stands in for nn~ (not installed here): as many signal inlets and outlets, and it prints
    every message reaching its left inlet, as nn~ would receive it."""
    lines = ["#N canvas 0 0 300 200 12;"]
    lines += [f"#X obj {10 + 60 * i} 10 inlet~;" for i in range(inlets)]
    lines.append("#X obj 10 60 print nn~;")
    lines += [f"#X obj {10 + 60 * i} 110 outlet~;" for i in range(outlets)]
    lines.append(f"#X connect 0 1 {inlets} 0;")
    (folder / "nn-probe.pd").write_text("\n".join(lines) + "\n")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(PD is None, reason="Pure Data (Debian package puredata-core) is not installed")
@pytest.mark.parametrize("rate", [44100, 96000])
def test_pd_patches_send_the_host_rate_and_the_model_follows(tiny, tmp_path: Path, rate: int):
    _, card, path = tiny
    model_file = tmp_path / "tiny.ts"
    shutil.copy(path, model_file)
    written = write_patches(model_file, tmp_path, host="pd", osc_port=_free_udp_port())
    _probe_abstraction(tmp_path, card.latent_size, card.latent_size)
    for kind, objects in (("forward", 1), ("transfer", 2)):
        patch = next(p for p in written if p.name == f"tiny-{kind}.pd")
        patch.write_text(re.sub(r"^(#X obj \d+ \d+) nn~ ", r"\1 nn-probe ", patch.read_text(), flags=re.M))
        done = subprocess.run([PD, "-nogui", "-nosound", "-nrt", "-r", str(rate), "-stderr", "-open", str(patch),
                               "-send", "pd dsp 1", "-send", "pd quit"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        console = done.stdout + done.stderr
        sent = [line for line in console.splitlines() if line.startswith(f"nn~: set {HOST_RATE_ATTRIBUTE}")]
        # on load ([loadbang]) and when DSP starts ([r pd-dsp-started]), to every nn~ object
        assert sent == [f"nn~: set {HOST_RATE_ATTRIBUTE} {rate}"] * (2 * objects), console
        words = sent[0].split()[1:]  # what nn~ hands to the model: set NAME VALUE...
        model = _load(model_file)
        assert nn_set(model, words[1], [float(w) for w in words[2:]]) == 0
        assert list(model.get_host_sample_rate()) == [rate]
        assert _stream(model.forward, _chirp(4096, rate), 2048).shape == (1, 1, 4096)


def test_max_patches_send_the_host_rate_from_dspstate(tiny, tmp_path: Path):
    import json

    _, card, path = tiny
    model_file = tmp_path / "tiny.ts"
    shutil.copy(path, model_file)
    for patch in write_patches(model_file, tmp_path, host="max"):
        if patch.name.endswith("-osc.maxpat"):
            continue
        patcher = json.loads(patch.read_text())["patcher"]
        boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
        cords = [(line["patchline"]["source"], line["patchline"]["destination"]) for line in patcher["lines"]]
        by_text = {box.get("text"): key for key, box in boxes.items()}
        state, message = by_text["dspstate~"], by_text[f"set {HOST_RATE_ATTRIBUTE} $1"]
        assert boxes[state]["numoutlets"] == 4 and ([state, 1], [message, 0]) in cords  # outlet 1: the rate
        assert any(dst == [state, 0] and boxes[src[0]].get("text") == "loadbang" for src, dst in cords)
        nn_boxes = [key for key, box in boxes.items() if box.get("text", "").startswith("nn~ ")]
        assert nn_boxes and all(([message, 0], [key, 0]) in cords for key in nn_boxes)
