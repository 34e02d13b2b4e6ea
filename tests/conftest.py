"""Shared fixtures: generated audio and hand-built model cards (no training needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tildekit.models.card import AttributeSpec, LatentDim, MethodSpec, ModelCard


def make_card(latent_size: int = 4, compression: int = 128, sample_rate: int = 16000,
              name: str = "tiny") -> ModelCard:
    """A card shaped like the nn~ exporter's output for a small model."""
    labels = [f"latent {i}" for i in range(latent_size)]
    return ModelCard(
        name=name,
        sample_rate=sample_rate,
        channels=1,
        compression=compression,
        latent_size=latent_size,
        methods={
            "encode": MethodSpec(1, 1, latent_size, compression, ["audio in"], labels, delay=300),
            "decode": MethodSpec(latent_size, compression, 1, 1, labels, ["audio out"], delay=200),
            "forward": MethodSpec(1, 1, 1, 1, ["audio in"], ["audio out"], delay=500),
        },
        attributes=[
            AttributeSpec("temperature", ["float"], [0.0], 0.0, 10.0, "posterior noise scale"),
            AttributeSpec("latent_bias", ["float"] * latent_size, [0.0] * latent_size,
                          description="per-dimension latent offset"),
            AttributeSpec("latent_scale", ["float"] * latent_size, [1.0] * latent_size,
                          description="per-dimension latent gain"),
            AttributeSpec("reset", ["bool"], [False], description="clear the streaming state"),
        ],
        delay=500,
        latents=[LatentDim(mean=0.1 * i, std=1.0, minimum=-2.0 - i, maximum=2.0 + i,
                           variance_ratio=1.0 / latent_size) for i in range(latent_size)],
        profile="small",
    )


@pytest.fixture
def tiny_card() -> ModelCard:
    return make_card()


@pytest.fixture(scope="module")
def one_thread():
    """Buffer-sized calls run fastest on one thread, as in a host's audio thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def export_tiny_model(folder: Path, stem: str = "tiny", latent_size: int = 4) -> Path:
    """STEM.ts (the nn~ module, scripted), STEM.onnx + STEM.decode.onnx (streaming graphs taking
    any multiple of 128 samples) from one random `small` core of capacity 8, card name "tiny".
    A real export in seconds: export_nn's minute of contract checks is tested in the exporter's tests."""
    import onnx

    from tildekit.export.card_io import card_extra_files
    from tildekit.export.core import ExportCore
    from tildekit.export.model_card import card_from_core
    from tildekit.export.nn_tilde import script_nn_tilde
    from tildekit.export.onnx_export import build_onnx
    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile

    torch.manual_seed(0)
    cfg = load_profile("small", ["model.capacity=8", f"model.latent_size={latent_size}"]).model
    whole = build_model(cfg, False).eval()
    streaming = build_model(cfg, True)
    streaming.load_state_dict(whole.state_dict())
    core = ExportCore(streaming)
    card = card_from_core(core, "tiny", None, "small", 0)
    torch.jit.save(script_nn_tilde(core, card), str(folder / f"{stem}.ts"), _extra_files=card_extra_files(card))
    for method, name in (("forward", f"{stem}.onnx"), ("decode", f"{stem}.decode.onnx")):
        core.reset_state()
        proto, _ = build_onnx(core, card, method, streaming=True)
        onnx.save(proto, str(folder / name))
    return folder
