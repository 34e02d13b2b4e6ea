"""Conformance: every export target against every model family (tests/families.py).

Each target writes through the shared staging (export_core), its quick check passes, the files
load the way the host loads them and stream the same samples in two buffer sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.families import FAMILIES, REFUSED
from tildekit.errors import TildekitError
from tildekit.export.targets import TARGETS, export_core, make_target
from tildekit.models.contract.card import ModelCard

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

TOLERANCE = 1e-4
FRAMES = 2  # the small buffer in latent frames (of the highest ratio); the large one is twice


def _signal(card: ModelCard, method: str, samples: int) -> np.ndarray:
    spec = card.methods[method]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, spec.in_channels, samples // spec.in_ratio))
    return (0.3 * (x.cumsum(-1) / np.sqrt(np.arange(1, x.shape[-1] + 1))) if spec.in_ratio > 1 else 0.1 * x
            ).astype(np.float32)


def _nn_host(paths: list[Path], card: ModelCard, method: str) -> Callable[[np.ndarray], np.ndarray]:
    module = torch.jit.load(str(paths[0])).eval()  # a fresh load: nn~'s initial state
    call = getattr(module, method)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return call(torch.from_numpy(x)).numpy()
    return run


def _neutone_host(paths: list[Path], card: ModelCard, method: str) -> Callable[[np.ndarray], np.ndarray] | None:
    if method != "forward":
        return None  # the plugin plays audio to audio only
    module = torch.jit.load(str(paths[0])).eval()
    state = {"buffer": 0}

    def run(x: np.ndarray) -> np.ndarray:
        if state["buffer"] != x.shape[-1]:  # the DAW announces its buffer before the first call
            module.set_daw_sample_rate_and_buffer_size(card.sample_rate, x.shape[-1])
            module.reset()
            state["buffer"] = x.shape[-1]
        with torch.inference_mode():
            return module.forward(torch.from_numpy(x[0]))[None].numpy()
    return run


def _onnx_host(paths: list[Path], card: ModelCard, method: str) -> Callable[[np.ndarray], np.ndarray]:
    from tildekit.export.onnx_runtime import OnnxStreamer, method_file_name

    streamer = OnnxStreamer(paths[0].parent / method_file_name(card.name, method))
    return streamer.process


HOSTS = {"nn": _nn_host, "neutone": _neutone_host, "onnx": _onnx_host}


def _stream(host: Callable[[np.ndarray], np.ndarray], x: np.ndarray, step: int) -> np.ndarray:
    return np.concatenate([host(x[..., i:i + step]) for i in range(0, x.shape[-1], step)], -1)


def test_every_target_has_a_host_runner():
    assert set(HOSTS) == set(TARGETS)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("target", TARGETS)
def test_target_writes_checks_and_streams_every_family(family: str, target: str, tmp_path: Path):
    model, card = FAMILIES[family]()
    small = FRAMES * card.highest_ratio
    chosen = make_target(target, buffer=small)
    if (family, target) in REFUSED:  # a target that does not take this family yet says so in one line
        with pytest.raises(TildekitError, match=REFUSED[family, target]) as refused:
            export_core(model, card, [target], tmp_path, buffer=small, quick=True)
        assert "\n" not in str(refused.value) and "--target nn" in str(refused.value)
        assert not list(tmp_path.iterdir())
        return
    paths = export_core(model, card, [target], tmp_path, buffer=small, quick=True)
    assert {p.name for p in paths} <= set(chosen.files(card.name)) and paths
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no leftovers
    failed = [r for r in chosen.check(paths, card, quick=True) if not r.passed]
    assert not failed, failed
    streamed = 0
    for method, spec in card.methods.items():
        x = _signal(card, method, 8 * small)
        runs = []
        for step in (small, 2 * small):
            host = HOSTS[target](paths, card, method)
            if host is None:
                break
            runs.append(_stream(host, x, step // spec.in_ratio))
        if not runs:
            continue
        streamed += 1
        assert runs[0].shape == (1, spec.out_channels, 8 * small // spec.out_ratio)
        assert np.isfinite(runs[0]).all()
        assert np.max(np.abs(runs[0] - runs[1])) <= TOLERANCE * max(1.0, float(np.abs(runs[1]).max()))
    assert streamed, f"{target} plays none of the {family} family's methods"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_nn_attributes_are_settable_as_nn_sets_them(family: str, tmp_path: Path):
    """Every scalar attribute of every family: nn~'s setter with Pd's words, read back by its getter."""
    from tildekit.export.check import nn_set
    from tildekit.export.nn_load import load_like_nn

    model, card = FAMILIES[family]()
    small = FRAMES * card.highest_ratio
    paths = export_core(model, card, ["nn"], tmp_path, buffer=small, quick=True)
    module = load_like_nn(paths[0])
    for spec in card.attributes:
        if spec.types != ["float"] or spec.maximum is None:
            continue
        assert nn_set(module, spec.name, [spec.maximum]) == 0
        assert list(getattr(module, f"get_{spec.name}")()) == pytest.approx([spec.maximum])
        with pytest.raises(Exception, match=spec.name):
            nn_set(module, spec.name, [spec.maximum + 1.0])


def test_nn_refuses_names_that_would_shadow_the_host_interface(tmp_path: Path):
    import dataclasses

    from tildekit.export.exportable import StreamingExport
    from tildekit.export.model_card import card_from_exportable
    from tildekit.models.contract.card import AttributeSpec

    model, _ = FAMILIES["gain"]()
    assert isinstance(model, StreamingExport)
    clash = dataclasses.replace(model, attributes=[AttributeSpec("sample_rate", ["float"], [1.0], 0.0, 2.0)])
    card = card_from_exportable(clash, "clash")
    with pytest.raises(TildekitError, match="sample_rate would shadow"):
        export_core(clash, card, ["nn"], tmp_path, buffer=128, quick=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_state_does_not_alias_a_reused_input_buffer(family: str, tmp_path: Path):
    """Hosts reuse their input buffer: overwriting it after a call must not change the next one."""
    model, card = FAMILIES[family]()
    small = FRAMES * card.highest_ratio
    paths = export_core(model, card, ["nn"], tmp_path, buffer=small, quick=True)
    x = _signal(card, "forward", 8 * small)
    fresh = _stream(_nn_host(paths, card, "forward"), x, small)
    module = torch.jit.load(str(paths[0])).eval()
    buffer = torch.zeros(1, card.channels, small)
    outputs = []
    with torch.inference_mode():
        for i in range(0, x.shape[-1], small):
            buffer.copy_(torch.from_numpy(x[..., i:i + small]))
            outputs.append(module.forward(buffer).clone().numpy())
            buffer.fill_(1e3)  # the host writes its next block into the same memory
    np.testing.assert_allclose(np.concatenate(outputs, -1), fresh, rtol=1e-5, atol=1e-6)
