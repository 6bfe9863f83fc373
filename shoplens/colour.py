"""Product colours: named dominant colours and a small colour descriptor, from the product's own pixels.

ImageNet features barely see colour, so a photo of a red shoe finds shoes of every colour. At index
time `colour_profile` finds the product (everything but a plain backdrop), names its dominant
colours and builds `colour_vector`, a soft histogram over PALETTE; both go into the payload:

    {"colours": ["navy", "white"], "colour_vector": [0.0, 0.02, ...]}

- `colours`: PALETTE names whose share of the product is at least NAME_SHARE, most dominant first
  (a keyword list: a store filter `colours = red` matches any product with red among them);
- `colour_vector`: len(PALETTE) shares in PALETTE order, summing to 1, rounded to 3 decimals.
  The layout is fixed by COLOUR_VERSION: compare vectors only from the same version.

At query time `colour_words` / `read_colour_words` pull colour words out of a text query (not those
inside the catalog's own product names, which `learn_colour_names` finds at index time: "orange
juice"; negated ones, "not red", are colours to leave out), `named_colour_vector` turns them into a
descriptor, and `rerank` re-orders image-search candidates by image score + weight x
`colour_similarity`. NumPy, SciPy (the backdrop's flood fill) and PIL; about 1 ms a photo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

COLOUR_VERSION = "1"
COLOURS_FIELD = "colours"  # the payload keys colour_profile writes
PAYLOAD_KEYS = (COLOURS_FIELD, "colour_vector")

# Names shoppers use and shop catalogs label with; the order is the colour_vector layout.
PALETTE = ("black", "grey", "white", "beige", "brown", "red", "maroon", "pink", "orange", "yellow",
           "olive", "green", "teal", "blue", "navy", "purple")

# Reference colours in CIE Lab (L 0..100, a green..red, b blue..yellow) as product photos show
# them, several per name because a name covers a region of colours (light and dark blue are both
# "blue"). Set from the median product colour per catalog label on fashion-images and the 9.6k set:
# fabric in studio light is far duller than textbook colours (a "navy" product is near L 25, b -8).
ANCHORS: dict[str, list[tuple[float, float, float]]] = {
    "black": [(12, 0, 0), (26, 0, 0)],
    "grey": [(45, 0, 0), (60, 0, 0), (74, 0, 0)],
    "white": [(88, 0, 0), (97, 0, 0)],
    "beige": [(85, 2, 11), (74, 4, 17), (64, 6, 20)],
    "brown": [(30, 6, 8), (40, 9, 14), (50, 12, 22), (56, 6, 12)],
    "red": [(46, 50, 26), (38, 40, 20), (54, 62, 38)],
    "maroon": [(28, 24, 8), (35, 35, 12)],
    "pink": [(72, 25, 2), (60, 48, 2), (82, 14, 3), (55, 60, -8)],
    "orange": [(66, 35, 50), (72, 22, 38), (58, 45, 55)],
    "yellow": [(83, 0, 50), (80, -3, 32), (88, -6, 72)],
    "olive": [(46, -4, 16), (56, -6, 26), (36, -3, 11)],
    "green": [(60, -40, 25), (72, -25, 30), (45, -28, 12), (82, -18, 10)],
    "teal": [(55, -25, -10), (70, -25, -12), (40, -18, -8)],
    "blue": [(55, 0, -25), (45, 10, -42), (68, -4, -16), (78, -4, -10)],
    "navy": [(26, 3, -12), (32, 5, -20), (22, 2, -9)],
    "purple": [(40, 25, -25), (30, 16, -15), (60, 18, -16), (50, 32, -32)],
}

WORK_SIZE = 64  # longest side, in pixels, of the copy we analyse: colour needs no detail
NAME_SHARE = 0.2  # a colour is named when it covers at least this share of the product
SOFTNESS = 5.0  # Lab distance scale of the soft assignment: near-ties split a pixel between names
L_WEIGHT = 0.6  # shading changes lightness much more than hue, so lightness counts for less
BG_TOLERANCE = 5.0  # Lab distance to the backdrop colour; tight, so an off-white product on white stays product
PLAIN_BORDER = 0.6  # share of border pixels that must match the backdrop for it to count as plain
MIN_PRODUCT = 0.03  # below this share of the picture, "product" is only a print on a product like the backdrop
# Re-ranking photo queries, from benchmarks/colour.py: most of the best gain in type+colour precision
# for a small loss in type precision (a bigger weight or N adds under 0.01 and costs more type).
RERANK_TOP = 100  # image candidates re-ranked by colour
RERANK_WEIGHT = 0.2  # colour similarity's weight against image cosine
LABEL_BLEND = 0.5  # share of a catalog colour label in a product's colour_vector (benchmarks/colour.py)

# Query words -> PALETTE names; a space also matches a hyphen ("off-white"). Longest first in the
# pattern so "navy blue" is not read as "blue".
SYNONYMS: dict[str, tuple[str, ...]] = {
    "navy blue": ("navy",), "off white": ("white",), "sky blue": ("blue",),
    "light blue": ("blue",), "dark blue": ("navy",), "royal blue": ("blue",), "turquoise blue": ("teal",),
    "sea green": ("green",), "lime green": ("green",), "olive green": ("olive",), "dark green": ("green",),
    "grey melange": ("grey",), "gray melange": ("grey",), "coffee brown": ("brown",), "mushroom brown": ("brown",),
    "black": ("black",), "grey": ("grey",), "gray": ("grey",), "silver": ("grey",), "charcoal": ("grey",),
    "steel": ("grey",), "white": ("white",), "cream": ("beige",), "ivory": ("white",), "beige": ("beige",),
    "khaki": ("beige",), "tan": ("beige",), "nude": ("beige",), "skin": ("beige",), "camel": ("brown",),
    "brown": ("brown",), "taupe": ("brown",), "chocolate": ("brown",), "red": ("red",), "rust": ("orange",),
    "maroon": ("maroon",), "burgundy": ("maroon",), "wine": ("maroon",), "pink": ("pink",),
    "magenta": ("pink",), "fuchsia": ("pink",), "peach": ("pink",), "coral": ("orange",),
    "orange": ("orange",), "yellow": ("yellow",), "mustard": ("yellow",), "gold": ("yellow",),
    "golden": ("yellow",), "olive": ("olive",), "green": ("green",), "mint": ("green",), "teal": ("teal",),
    "turquoise": ("teal",), "aqua": ("teal",), "blue": ("blue",), "navy": ("navy",), "indigo": ("navy",),
    "denim": ("blue",), "purple": ("purple",), "violet": ("purple",), "lavender": ("purple",),
    "lilac": ("purple",), "mauve": ("purple",),
}
_WORDS = re.compile(r"\b(" + "|".join(re.escape(w).replace(r"\ ", r"[\s-]+").replace(r"\-", r"[\s-]+")
                                      for w in sorted(SYNONYMS, key=len, reverse=True)) + r")\b", re.I)


_LINEAR = np.where(np.arange(256) / 255 > 0.04045, ((np.arange(256) / 255 + 0.055) / 1.055) ** 2.4,
                   np.arange(256) / 255 / 12.92)  # sRGB byte -> linear light
_TO_XYZ = (np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
           / np.array([[0.95047], [1.0], [1.08883]])).T  # linear RGB -> XYZ relative to the D65 white


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) of uint8 sRGB values, any leading shape."""
    xyz = _LINEAR[np.asarray(rgb, np.uint8)] @ _TO_XYZ
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


@lru_cache(maxsize=1)
def _anchors() -> tuple[np.ndarray, np.ndarray]:
    """(anchor Lab with lightness weighted, anchor-to-PALETTE membership matrix)."""
    lab = np.array([a for n in PALETTE for a in ANCHORS[n]], np.float64) * np.array([L_WEIGHT, 1.0, 1.0])
    member = np.array([[n == p for p in PALETTE] for n in PALETTE for _ in ANCHORS[n]], np.float64)
    return lab, member


def soft_names(lab: np.ndarray) -> np.ndarray:
    """(pixels, len(PALETTE)) soft shares of each Lab pixel: near-ties split a pixel between names."""
    anchors, member = _anchors()
    x = lab * np.array([L_WEIGHT, 1.0, 1.0])
    d2 = (x * x).sum(1)[:, None] - 2 * x @ anchors.T + (anchors * anchors).sum(1)[None, :]
    # Relative to the nearest anchor, so a pixel far from every anchor still counts fully.
    w = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2 * SOFTNESS ** 2)) @ member
    return w / w.sum(axis=1, keepdims=True)


_FOUR = ndimage.generate_binary_structure(2, 1)  # 4-connected: a diagonal gap keeps two regions apart


def _flood(allowed: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Pixels of `allowed` connected to `seeds` (4-connected), however winding the path.

    scipy's binary propagation runs until nothing changes, so a backdrop that snakes between parts
    of a product (straps, a spiral) is reached whole, not only as far as a fixed number of passes goes.
    """
    return ndimage.binary_propagation(seeds & allowed, structure=_FOUR, mask=allowed)


def small_pixels(img: Image.Image) -> np.ndarray:
    """The photo as an RGB uint8 array at most WORK_SIZE pixels on its longest side (area-averaged)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    scale = WORK_SIZE / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.BOX)
    return np.asarray(img)


def product_mask(pixels: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """True on product pixels: everything except a plain backdrop reached from the picture's border.

    A backdrop is plain when most border pixels share one colour. Growing it from the border only
    through pixels of that colour keeps a white product on white whole as long as any outline or
    shading separates it; when almost nothing is left (a white tee on white with a small print),
    the product is the backdrop colour itself and the whole picture is used.
    """
    h, w = lab.shape[:2]
    border = np.zeros((h, w), bool)
    border[:2, :] = border[-2:, :] = border[:, :2] = border[:, -2:] = True
    backdrop = np.median(lab[border], axis=0)
    near = np.sqrt(((lab - backdrop) ** 2).sum(-1)) <= BG_TOLERANCE
    if near[border].mean() < PLAIN_BORDER:
        return np.ones((h, w), bool)
    mask = ~_flood(near, border)
    if mask.mean() < MIN_PRODUCT:
        return np.ones((h, w), bool)
    # Edge pixels are blends of product and backdrop (a black shoe gets a grey rim): drop them
    # unless the product is so thin that little would be left.
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner if inner.sum() >= 0.5 * mask.sum() else mask


def colour_shares(img: Image.Image) -> np.ndarray:
    """Share of the product covered by each PALETTE colour (sums to 1), product pixels only."""
    return pixel_shares(small_pixels(img))


def pixel_shares(pixels: np.ndarray) -> np.ndarray:
    """colour_shares of an (h, w, 3) uint8 array already reduced by `small_pixels`."""
    lab = srgb_to_lab(pixels)
    product = pixels[product_mask(pixels, lab)].astype(np.int32) >> 2
    # Name each distinct colour once (6 bits a channel: a step of 4 is below what an eye sees).
    codes, counts = np.unique((product[:, 0] << 12) | (product[:, 1] << 6) | product[:, 2], return_counts=True)
    rgb = np.stack([codes >> 12, (codes >> 6) & 63, codes & 63], -1) * 4 + 2
    shares = counts @ soft_names(srgb_to_lab(rgb))
    return shares / max(float(shares.sum()), 1e-12)


def names_from_shares(shares: np.ndarray, min_share: float = NAME_SHARE) -> list[str]:
    """PALETTE names with at least `min_share`, most dominant first (always at least the top one)."""
    order = np.argsort(-np.asarray(shares), kind="stable")
    names = [PALETTE[i] for i in order if shares[i] >= min_share]
    return names or [PALETTE[int(order[0])]]


def colour_profile(img: Image.Image, label: str | None = None) -> dict:
    """The payload fields for a product photo: {"colours": [names], "colour_vector": [shares]}.

    `label` is the catalog's own colour for the product ("Navy Blue"), when it has one: it is blended
    half and half into the vector and its names come first, since a shop's label is right more often
    than pixels (measured in docs/quality.md: type + colour P@10 0.365 -> 0.399 for photo queries).
    A query photo has no label: its vector is the pixels' alone.
    """
    shares = colour_shares(img)
    names = names_from_shares(shares)
    labelled = colour_words(label or "")[0]
    if labelled:
        shares = (1 - LABEL_BLEND) * shares + LABEL_BLEND * named_colour_vector(labelled)
        names = labelled + [n for n in names if n not in labelled]
    return {"colours": names, "colour_vector": [round(float(s), 3) for s in shares]}


# Words that turn the colour after them into one the shopper does not want ("not red", "no red",
# "without red or pink"); connectors carry the negation on to the next colour.
NEGATIONS = {"not", "no", "without", "except", "excluding", "non", "nor", "never"}
CONNECTORS = {"or", "and", "nor"}
# A (colour word, next word) pair in a catalog describes a colour when the next word follows at least
# this many different colours there ("red/blue/black tshirt"); "orange juice" and "red wine"/"white
# wine" do not, so they are product names (benchmarks: grocery and fashion titles, tests/test_colour.py).
DESCRIBED_BY = 3
_TOKEN = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class ColourWords:
    """What a query says about colour: `colours` wanted, `excluded` ("not red"), and the other words."""

    colours: list[str]
    excluded: list[str]
    rest: str  # the query without its colour words, negated or not, nor their negations
    searchable: str  # the query without its negated colours and their negations ("shoes not red" -> "shoes")


def _tokens(text: str) -> list[re.Match]:
    return list(_TOKEN.finditer(text.lower()))


def _colour_spans(text: str, tokens: list[re.Match]) -> list[tuple[int, int, tuple[str, ...], re.Match]]:
    """(first token, last token, PALETTE names, match) of each colour word or phrase in `text`."""
    starts = {t.start(): i for i, t in enumerate(tokens)}
    ends = {t.end(): i for i, t in enumerate(tokens)}
    out = []
    for match in _WORDS.finditer(text):
        first, last = starts.get(match.start()), ends.get(match.end())
        if first is None or last is None:
            continue  # inside a longer word ("red" in "red2"): not a colour word
        out.append((first, last, SYNONYMS[re.sub(r"[\s-]+", " ", match.group(1).lower())], match))
    return out


def read_colour_words(text: str, names: frozenset[str] | set[str] | tuple = ()) -> ColourWords:
    """The colour words of a query, read with the catalog's product names in mind.

    A colour word counts as a colour only when it describes something: not when it is part of one of
    the catalog's product names (`names`, from `learn_colour_names`: "orange juice", "red wine", or
    "orange" itself in a shop that sells oranges), which stay in `rest` for text search; and not when
    it is negated ("not red", "no red", "without red or pink"), which goes to `excluded` and leaves
    `rest` with neither the colour nor its negation. Everything else is as `colour_words`.
    """
    tokens = _tokens(text)
    words = [t.group(0) for t in tokens]
    named = set()  # token positions inside one of the catalog's product names
    for phrase in names:
        parts = tuple(phrase.split())
        for i in range(len(words) - len(parts) + 1):
            if tuple(words[i:i + len(parts)]) == parts:
                named.update(range(i, i + len(parts)))
    colours: list[str] = []
    excluded: list[str] = []
    drop: list[tuple[int, int]] = []  # character spans left out of `rest`
    negation: list[tuple[int, int]] = []  # those of them that are negated colours, negations and connectors
    negated_at = -2  # the token a negation (or a connector after a negated colour) was last seen at
    spans = _colour_spans(text, tokens)
    by_first = {first: (last, found, match) for first, last, found, match in spans}
    i = 0
    while i < len(words):
        if i in by_first:
            last, found, match = by_first[i]
            if any(j in named for j in range(i, last + 1)):
                negated_at = -2
            elif negated_at == i - 1:
                excluded += [n for n in found if n not in excluded]
                drop.append((match.start(), match.end()))
                negation.append(drop[-1])
                negated_at = last  # a connector after it ("or") carries the negation on
            else:
                colours += [n for n in found if n not in colours]
                drop.append((match.start(), match.end()))
            i = last + 1
            continue
        if words[i] in NEGATIONS and i + 1 in by_first and not any(
                j in named for j in range(i + 1, by_first[i + 1][0] + 1)):
            drop.append((tokens[i].start(), tokens[i].end()))
            negation.append(drop[-1])
            negated_at = i
        elif words[i] in CONNECTORS and negated_at == i - 1 and i + 1 in by_first:
            drop.append((tokens[i].start(), tokens[i].end()))
            negation.append(drop[-1])
            negated_at = i
        else:
            negated_at = -2
        i += 1
    excluded = [n for n in excluded if n not in colours]
    return ColourWords(colours, excluded, _without(text, drop), _without(text, negation))


def _without(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with the character spans cut out, and separators left dangling by the cuts."""
    out, end = "", 0
    for a, b in sorted(spans):
        out += text[end:a] + " "
        end = b
    out += text[end:]
    return re.sub(r"\s+", " ", re.sub(r"(?<=\s)[/&,+]+(?=\s)|^[/&,+\s]+|[/&,+\s]+$", " ", out)).strip()


def colour_words(text: str, names: frozenset[str] | set[str] | tuple = ()) -> tuple[list[str], str]:
    """Colour words of a query as PALETTE names (in order, no repeats), and the text without them.

    "navy blue polo" -> (["navy"], "polo"); "Grey/white sneakers" -> (["grey", "white"], "sneakers").
    With the catalog's product `names` ("orange juice"), a colour word inside one is no colour; a
    negated colour ("not red") is never a colour request (see `read_colour_words`).
    """
    read = read_colour_words(text, names)
    return read.colours, read.rest


# Words next to a colour that say nothing about whether it names one ("Blue 2011", "Black with ...", "Green Boys").
_NO_EVIDENCE = {"with", "and", "or", "for", "of", "in", "on", "the", "a", "by", "to", "men", "women", "boys", "girls",
                "kids", "unisex"}


def _evidence(word: str) -> bool:
    return word.isalpha() and len(word) > 1 and word not in _NO_EVIDENCE


def learn_colour_names(products) -> list[str]:
    """The catalog's product names that contain a colour word, from its own titles and attribute values.

    `products`: (values, colour label) per product, the values being its title and short attribute
    values (not its colour label, which names a colour by definition). A colour word followed by a
    word is part of a name ("orange juice", "red grapefruit", "pink lady", "red tape") unless that next
    word follows at least DESCRIBED_BY different colours in the catalog ("red/blue/black tshirt") or
    the colour agrees with the product's own label in most of its uses ("Classic Red Sneaker", colour
    Red). A colour word that is a whole value ("Orange", "Peach") or ends one ("Blood Orange") is
    judged the same way. Returns sorted lowercase phrases, words separated by single spaces.
    """
    described: dict[str, set[str]] = {}  # the word a colour precedes (or follows) -> the colours seen with it
    seen: dict[str, list[int]] = {}  # phrase -> [uses, uses agreeing with the product's label]
    others: dict[str, str] = {}  # phrase -> the word in it beside the colour word ("" for a colour word alone)
    for values, label in products:
        labelled = set(colour_words(label or "")[0])
        for value in values:
            value = str(value or "")
            tokens = _tokens(value)
            words = [t.group(0) for t in tokens]
            spans = _colour_spans(value, tokens)
            for first, last, found, _m in spans:
                own = " ".join(words[first:last + 1])
                # The next word may be a colour word too: "red wine" is a name, "black white" two colours.
                if last + 1 < len(words) and _evidence(words[last + 1]):
                    other, phrase = words[last + 1], f"{own} {words[last + 1]}"
                elif last + 1 == len(words) and first > 0 and _evidence(words[first - 1]):
                    other, phrase = words[first - 1], f"{words[first - 1]} {own}"
                elif len(words) == last + 1 - first:
                    other, phrase = "", own
                else:
                    continue  # next to a number or a function word ("Blue 2011", "Black with"): no evidence
                described.setdefault(other, set()).update(found)
                others[phrase] = other
                counts = seen.setdefault(phrase, [0, 0])
                counts[0] += 1
                counts[1] += bool(labelled & set(found))
    names = []
    for phrase, (uses, agree) in seen.items():
        if len(described.get(others[phrase], ())) < DESCRIBED_BY and 2 * agree <= uses:
            names.append(phrase)
    return sorted(names)


def named_colour_vector(names: list[str] | tuple[str, ...]) -> np.ndarray:
    """A colour_vector for PALETTE names (equal shares), to re-rank by a colour a shopper typed."""
    vec = np.zeros(len(PALETTE), np.float32)
    for name in names:
        if name not in PALETTE:
            raise ValueError(f"unknown colour {name!r}; colour_words maps shoppers' words onto {', '.join(PALETTE)}")
        vec[PALETTE.index(name)] += 1.0
    return vec / max(float(vec.sum()), 1.0)


def colour_similarity(query_vector, candidate_vectors) -> np.ndarray:
    """Cosine of the query's colour shares with each candidate's, in [0, 1] (0 when either is empty).

    Cosine weighs the dominant colour most (a square), which measured better than the Bhattacharyya
    coefficient, histogram intersection or matching top names (benchmarks/colour.py).
    """
    q = np.asarray(query_vector, np.float32)
    c = np.atleast_2d(np.asarray(candidate_vectors, np.float32))
    norms = np.linalg.norm(c, axis=1) * np.linalg.norm(q)
    return np.divide(c @ q, norms, out=np.zeros(len(c), np.float32), where=norms > 0)


def rerank(scores, query_vector, candidate_vectors, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(order, combined scores): candidates sorted by score + weight x colour similarity, best first.

    Ties keep the original order. `order` indexes the candidates; combined scores are in that order.
    """
    combined = np.asarray(scores, np.float32) + weight * colour_similarity(query_vector, candidate_vectors)
    order = np.argsort(-combined, kind="stable")
    return order, combined[order]
