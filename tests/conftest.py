"""Shared fixtures: generated audio and hand-built model cards (no training needed)."""

from __future__ import annotations

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
