"""Product colours: from a product's pixels (`pixels`), from a shopper's words (`words`), in one palette.

The public names are re-exported here; shoplens's own modules import from the submodules.
"""

from shoplens.colour.palette import COLOUR_VERSION, COLOURS_FIELD, PALETTE, PAYLOAD_KEYS, named_colour_vector
from shoplens.colour.pixels import colour_profile, colour_shares, names_from_shares, pixel_shares, small_pixels
from shoplens.colour.words import ColourWords, colour_words, learn_colour_names, read_colour_words

__all__ = ["COLOURS_FIELD", "COLOUR_VERSION", "ColourWords", "PALETTE", "PAYLOAD_KEYS", "colour_profile",
           "colour_shares", "colour_words", "learn_colour_names", "named_colour_vector", "names_from_shares",
           "pixel_shares", "read_colour_words", "small_pixels"]
