"""The model card's format: its version, the nn~ type codes of its attributes, its error.

Apart from :mod:`~tildekit.models.contract.card` so that the validator (``card_check``), which the
card type calls, needs nothing from the card type itself.
"""

from __future__ import annotations

# Bump when a reader of an older tildekit could misread a newer card.
CARD_FORMAT = 1

# nn~ attribute type codes (docs/contracts.md §1)
NN_TYPE_CODES = {"bool": 0, "int": 1, "float": 2, "str": 3, "tensor": 4}


class CardError(ValueError):
    """A model card is missing, malformed or from a newer tildekit."""
