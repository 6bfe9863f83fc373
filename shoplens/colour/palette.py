"""The named colours shoplens speaks of: their order (the colour_vector layout) and payload fields.

Colours come from two sides: a product's own pixels (`shoplens.colour.pixels`, at index time) and a
shopper's words (`shoplens.colour.words`, at query time). Both name colours from PALETTE, and a
`colour_vector` holds shares in PALETTE order, so the two can be compared (`shoplens.query.rerank`).
"""

from __future__ import annotations

import numpy as np

COLOUR_VERSION = "1"
COLOURS_FIELD = "colours"  # the payload keys colour_profile writes
PAYLOAD_KEYS = (COLOURS_FIELD, "colour_vector")

# Names shoppers use and shop catalogs label with; the order is the colour_vector layout.
PALETTE = ("black", "grey", "white", "beige", "brown", "red", "maroon", "pink", "orange", "yellow",
           "olive", "green", "teal", "blue", "navy", "purple")


def named_colour_vector(names: list[str] | tuple[str, ...]) -> np.ndarray:
    """A colour_vector for PALETTE names (equal shares), to re-rank by a colour a shopper typed."""
    vec = np.zeros(len(PALETTE), np.float32)
    for name in names:
        if name not in PALETTE:
            raise ValueError(f"unknown colour {name!r}; shoplens.colour.words maps shoppers' words onto "
                             f"{', '.join(PALETTE)}")
        vec[PALETTE.index(name)] += 1.0
    return vec / max(float(vec.sum()), 1.0)
