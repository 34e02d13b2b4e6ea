"""The card's family field: other families name their own methods; old cards are autoencoders."""

from __future__ import annotations

import json

import pytest

from tildekit.models.contract.card import DEFAULT_FAMILY, AttributeSpec, MethodSpec, ModelCard
from tildekit.models.contract.card_format import CardError


def _card(**changes: object) -> dict:
    card = ModelCard(name="fx", sample_rate=48000, channels=1, compression=256, latent_size=0,
                     methods={"forward": MethodSpec(1, 1, 1, 1, ["audio in"], ["audio out"]),
                              "features": MethodSpec(1, 1, 2, 256, ["audio in"], ["f0", "loudness"]),
                              "synth": MethodSpec(2, 256, 1, 1, ["f0", "loudness"], ["audio out"])},
                     attributes=[AttributeSpec("pitch_shift", ["float"], [0.0], -24.0, 24.0)],
                     delay=0, family="ddsp")
    data = json.loads(card.to_json())
    data.update(changes)
    return data


def test_a_family_with_its_own_methods_round_trips():
    card = ModelCard.from_dict(_card())
    assert card.family == "ddsp" and set(card.methods) == {"forward", "features", "synth"}
    assert ModelCard.from_json(card.to_json()) == card


def test_a_card_without_family_is_an_autoencoder_and_autoencoder_cards_do_not_write_it():
    data = _card()
    del data["family"]
    card = ModelCard.from_dict(data)
    assert card.family == DEFAULT_FAMILY
    assert "family" not in card.to_dict()  # what older tildekit versions read


@pytest.mark.parametrize(("change", "field"), [
    ({"family": "no such"}, "family"),
    ({"family": 3}, "family"),
    ({"methods": {"forward": {"in_channels": 2, "in_ratio": 1, "out_channels": 1, "out_ratio": 1}}},
     "methods.forward"),
])
def test_family_cards_stay_strict(change: dict, field: str):
    with pytest.raises(CardError, match=field):
        ModelCard.from_dict(_card(**change))
