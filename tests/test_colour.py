"""Product colours: names from hand-made photos, colour words in queries, and re-ranking worked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shoplens.catalog import read_catalog
from shoplens.colour import (PALETTE, ColourWords, colour_profile, colour_words, learn_colour_names,
                             named_colour_vector, names_from_shares, read_colour_words)
from shoplens.colour.pixels import ANCHORS, _flood
from shoplens.colour.words import SYNONYMS
from shoplens.query.rerank import colour_similarity, rerank


def photo(backdrop=(255, 255, 255), size=(224, 300)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", size, backdrop)
    return img, ImageDraw.Draw(img)


def shirt(draw: ImageDraw.ImageDraw, fill, outline=None) -> None:
    """A T-shirt silhouette: body plus two sleeves, centred in a 224 x 300 picture."""
    draw.polygon([(40, 70), (85, 50), (139, 50), (184, 70), (200, 120), (165, 130), (165, 250), (59, 250),
                  (59, 130), (24, 120)], fill=fill, outline=outline, width=2 if outline else 0)


def share(profile: dict, name: str) -> float:
    return profile["colour_vector"][PALETTE.index(name)]


def test_red_square_on_white():
    img, draw = photo()
    draw.rectangle([50, 60, 170, 240], fill=(200, 25, 35))
    profile = colour_profile(img)
    assert profile["colours"] == ["red"]
    assert share(profile, "red") > 0.9
    assert share(profile, "white") == 0.0  # the backdrop is not the product


def test_a_catalog_label_is_blended_in_half_and_half():
    img, draw = photo()
    draw.rectangle([50, 60, 170, 240], fill=(200, 25, 35))
    pixels = colour_profile(img)
    labelled = colour_profile(img, "Navy Blue")
    assert labelled["colours"] == ["navy", "red"]  # the shop's label first, then what the pixels show
    assert share(labelled, "navy") == pytest.approx(0.5 + share(pixels, "navy") / 2, abs=1e-3)
    assert share(labelled, "red") == pytest.approx(share(pixels, "red") / 2, abs=1e-3)
    assert colour_profile(img, "Multi") == pixels  # a label that names no colour changes nothing


def test_blue_shirt_on_grey_backdrop():
    img, draw = photo(backdrop=(128, 128, 128))
    shirt(draw, (45, 90, 185))
    profile = colour_profile(img)
    assert profile["colours"] == ["blue"]
    assert share(profile, "grey") == 0.0


def test_white_shirt_on_white_with_thin_outline_is_white():
    img, draw = photo()
    shirt(draw, (244, 244, 244), outline=(170, 170, 170))
    assert colour_profile(img)["colours"] == ["white"]


def test_white_tee_with_tiny_print_and_no_outline_is_white():
    # Nothing separates the tee from the backdrop; only the print differs. The print is too small
    # to be the product, so the whole picture (the tee) is measured.
    img, draw = photo()
    draw.rectangle([100, 120, 120, 140], fill=(200, 25, 35))
    assert colour_profile(img)["colours"] == ["white"]


def test_black_shoe_has_no_grey_rim():
    # Shrinking blends the shoe's edge with the white backdrop into greys; edge pixels are dropped.
    img, draw = photo(size=(300, 224))
    draw.ellipse([40, 80, 260, 160], fill=(22, 22, 24))
    profile = colour_profile(img)
    assert profile["colours"] == ["black"]
    assert share(profile, "grey") < 0.05


def test_two_colour_product_most_dominant_first():
    img, draw = photo()
    draw.rectangle([50, 40, 170, 260], fill=(25, 32, 62))  # navy body
    # A white print, under a third of it, inside the navy: white that touched the white backdrop would be
    # taken for backdrop (the known limit of cutting out by colour).
    draw.rectangle([62, 110, 158, 190], fill=(250, 250, 250))
    profile = colour_profile(img)
    assert profile["colours"] == ["navy", "white"]
    assert share(profile, "navy") > share(profile, "white") > 0.2


def test_busy_backdrop_uses_the_whole_picture():
    # No plain border (half red, half green): nothing is taken for backdrop.
    img, draw = photo()
    draw.rectangle([0, 0, 111, 299], fill=(200, 25, 35))
    draw.rectangle([112, 0, 223, 299], fill=(40, 140, 70))
    assert sorted(colour_profile(img)["colours"]) == ["green", "red"]


def test_profile_is_small_json_payload():
    img, draw = photo()
    draw.rectangle([50, 60, 170, 240], fill=(245, 215, 40))
    profile = colour_profile(img)
    assert set(profile) == {"colours", "colour_vector"}
    assert profile["colours"] == ["yellow"]
    assert len(profile["colour_vector"]) == len(PALETTE) <= 32
    assert sum(profile["colour_vector"]) == pytest.approx(1.0, abs=0.01)
    assert json.loads(json.dumps(profile)) == profile


def test_names_from_shares_threshold_and_fallback():
    shares = np.zeros(len(PALETTE))
    shares[PALETTE.index("green")], shares[PALETTE.index("white")], shares[PALETTE.index("red")] = 0.5, 0.3, 0.2
    assert names_from_shares(shares) == ["green", "white", "red"]
    assert names_from_shares(shares, min_share=0.25) == ["green", "white"]
    assert names_from_shares(shares, min_share=0.9) == ["green"]  # always the top one


@pytest.mark.parametrize("text, names, rest", [
    ("red shoes", ["red"], "shoes"),
    ("Navy Blue polo", ["navy"], "polo"),
    ("navy-blue polo", ["navy"], "polo"),
    ("Grey/white sneakers", ["grey", "white"], "sneakers"),
    ("gray hoodie", ["grey"], "hoodie"),
    ("off white kurta", ["white"], "kurta"),
    ("off-white kurta", ["white"], "kurta"),
    ("maroon dress", ["maroon"], "dress"),
    ("dark blue jeans", ["navy"], "jeans"),
    ("sky blue shirt", ["blue"], "shirt"),
    ("silver heels", ["grey"], "heels"),
    ("kurta in mustard and olive green", ["yellow", "olive"], "kurta in and"),
    ("blue blue blue", ["blue"], ""),
    ("redwood coloured table", [], "redwood coloured table"),  # whole words only
    ("running shoes", [], "running shoes"),
])
def test_colour_words(text, names, rest):
    assert colour_words(text) == (names, rest)


def test_every_synonym_maps_into_the_palette():
    assert all(name in PALETTE for names in SYNONYMS.values() for name in names)
    assert all(ANCHORS[name] for name in PALETTE)


def test_named_colour_vector():
    vec = named_colour_vector(["red", "white"])
    expected = np.zeros(len(PALETTE), np.float32)
    expected[PALETTE.index("red")] = expected[PALETTE.index("white")] = 0.5
    np.testing.assert_array_equal(vec, expected)
    np.testing.assert_array_equal(named_colour_vector([]), np.zeros(len(PALETTE), np.float32))
    with pytest.raises(ValueError, match="unknown colour 'gray'"):
        named_colour_vector(["gray"])  # query words go through colour_words first


def test_colour_similarity_is_cosine():
    red, white = named_colour_vector(["red"]), named_colour_vector(["white"])
    half = named_colour_vector(["red", "white"])
    np.testing.assert_allclose(colour_similarity(red, np.stack([red, white, half])), [1.0, 0.0, 0.5 ** 0.5],
                               rtol=1e-6)
    assert colour_similarity(np.zeros(len(PALETTE)), np.stack([red]))[0] == 0.0  # no colour: no evidence


def test_rerank_hand_worked():
    # Image scores 0.90, 0.85, 0.80 for a blue, a red, and a half red / half white product; the query is red.
    # Colour similarities: 0, 1, 0.7071. Weight 0.2: 0.90, 1.05, 0.9414 -> red, half red, blue.
    scores = np.array([0.90, 0.85, 0.80])
    candidates = np.stack([named_colour_vector(["blue"]), named_colour_vector(["red"]),
                           named_colour_vector(["red", "white"])])
    order, combined = rerank(scores, named_colour_vector(["red"]), candidates, weight=0.2)
    assert order.tolist() == [1, 2, 0]
    np.testing.assert_allclose(combined, [1.05, 0.80 + 0.2 * 0.5 ** 0.5, 0.90], rtol=1e-6)
    # Weight 0.04: 0.90, 0.89, 0.828 -> the image order survives.
    assert rerank(scores, named_colour_vector(["red"]), candidates, weight=0.04)[0].tolist() == [0, 1, 2]
    # Weight 0: exactly the image order, ties kept in input order.
    assert rerank(np.array([0.5, 0.5, 0.25]), named_colour_vector(["red"]), candidates, 0.0)[0].tolist() == [0, 1, 2]


def test_fashion_images_products(datasets_dir):
    """Clear-cut catalog photos get the colour their label names, first."""
    catalog = read_catalog(datasets_dir / "fashion-images")
    by_id = {p.id: p for p in catalog.products}
    from shoplens.images import load_image

    for pid, name in EXPECTED_FASHION.items():
        assert colour_profile(load_image(by_id[pid].path, draft_size=224))["colours"][0] == name, pid


# Clear-cut photos whose label is plainly right (labels are noisy: a peach top looks pink).
EXPECTED_FASHION = {"34184": "yellow", "2707": "pink", "45330": "red", "43368": "blue", "10293": "brown",
                    "50783": "black"}


# --- colour words read with the catalog's own product names ---

GROCERY_NAMES = frozenset(["brown cap", "golden delicious", "golden grapefruit", "orange", "orange juice", "orange red",
                           "peach", "pink lady", "red beet", "red delicious", "red grapefruit", "sour cream",
                           "yellow onion"])


def test_learn_colour_names_from_the_grocery_titles(datasets_dir):
    from shoplens.index.text import name_values

    catalog = read_catalog(datasets_dir / "grocery-store")
    names = learn_colour_names((name_values(p.metadata), p.metadata.get("colour")) for p in catalog.products)
    # Worked from classes.csv (titles such as Golden-Delicious, Bravo-Orange-Juice, God-Morgon-Orange-Red-Grapefruit-
    # Juice, Brown-Cap-Mushroom; coarse classes such as Orange, Peach, Sour-Cream): every colour word there is part
    # of a name. "delicious" follows only golden and red, "grapefruit" only red and golden, "juice", "cap", "lady",
    # "beet", "onion" one colour each, "red" follows only "orange"; "orange" and "peach" are whole titles. The
    # peppers are the exception: "bell" follows green, orange, red and yellow (4 >= DESCRIBED_BY), so "red bell"
    # describes a colour. The long descriptions ("a green apple with white, firm pulp") are not names.
    assert names == sorted(GROCERY_NAMES)


def test_learn_colour_names_from_the_fashion_titles(datasets_dir):
    from shoplens.index.text import name_values

    catalog = read_catalog(datasets_dir / "fashion-images")
    names = set(learn_colour_names((name_values(p.metadata), p.metadata.get("colour"))
                                          for p in catalog.products))
    # Brands: "Red Tape" (32 products, labelled Black 18, Brown 11, Grey 2, Navy Blue 1: never red) and "Red Chief"
    # (11, Black, Brown, Khaki, Mushroom Brown); "tape" and "chief" follow no other colour.
    assert {"red tape", "red chief"} <= names
    # Colours that describe: "shoes" follows black, brown, white, blue, grey, red, pink...; "tshirt" follows black,
    # grey, white, yellow, blue, red. None of these pairs is a name.
    assert not names & {"red shoes", "black shoes", "white shoes", "red tshirt", "black tshirt", "navy blue tshirt",
                        "red", "black", "white"}
    assert read_colour_words("red tape shoes", names) == ColourWords([], [], "red tape shoes", "red tape shoes")
    assert read_colour_words("red shoes", names) == ColourWords(["red"], [], "shoes", "red shoes")
    assert read_colour_words("Navy Blue Tshirt", names) == ColourWords(["navy"], [], "Tshirt", "Navy Blue Tshirt")


def test_learn_colour_names_worked_by_hand():
    products = [(["Olive Oil"], None), (["Chocolate Milk"], None), (["Red Wine"], None), (["White Wine"], None),
                (["Orange Juice"], None), (["Red Bell Pepper"], None), (["Green Bell Pepper"], None),
                (["Yellow Bell Pepper"], None),
                # Two colours only before "sneaker", but the product's own label agrees: the colour describes.
                (["Classic Red Sneaker"], "Red"), (["Classic Blue Sneaker"], "Blue")]
    # "wine" (itself a colour word) follows red and white: 2 < 3 colours, so both are names.
    assert learn_colour_names(products) == ["chocolate milk", "olive oil", "orange juice", "red wine",
                                                   "white wine"]


@pytest.mark.parametrize("text, colours, excluded, rest", [
    ("orange juice", [], [], "orange juice"),  # a product name: no colour, the noun stays for text search
    ("Orange", [], [], "Orange"),  # the fruit: a whole title of this catalog
    ("red grapefruit juice", [], [], "red grapefruit juice"),
    ("sour cream", [], [], "sour cream"),  # "cream" is a colour word (beige) elsewhere
    ("peach", [], [], "peach"),
    ("red bell pepper", ["red"], [], "bell pepper"),  # peppers come in four colours: red describes
    ("yellow onion not red", [], ["red"], "yellow onion"),
    ("not red", [], ["red"], ""),
    ("no red", [], ["red"], ""),
    ("apples without red or green", [], ["red", "green"], "apples"),
    ("red pepper, not yellow", ["red"], ["yellow"], "pepper"),
    ("not orange juice", [], [], "not orange juice"),  # a name after "not" is text, not an excluded colour
    ("nothing red", ["red"], [], "nothing"),  # whole words only
])
def test_grocery_colour_words_by_hand(text, colours, excluded, rest):
    read = read_colour_words(text, GROCERY_NAMES)
    assert (read.colours, read.excluded, read.rest) == (colours, excluded, rest)


def test_negation_without_catalog_names():
    assert colour_words("not red") == ([], "")
    assert read_colour_words("shoes not red") == ColourWords([], ["red"], "shoes", "shoes")
    assert read_colour_words("navy polo without white or grey") == ColourWords(["navy"], ["white", "grey"], "polo",
                                                                               "navy polo")
    # A colour both asked for and refused is asked for.
    assert read_colour_words("red not red").colours == ["red"]


# --- the backdrop flood fill ---

SPIRAL = """
#.#########
#.........#
#########.#
#.......#.#
#.#####.#.#
#.#...#.#.#
#.#.###.#.#
#.#.....#.#
#.#######.#
#.........#
###########
"""


def test_flood_fills_a_winding_backdrop_whole():
    # Drawn by hand: '.' is backdrop-coloured, '#' is product. The backdrop enters at the top (row 0, column 1) and
    # winds inward: right along row 1, down column 9, left along row 9, up column 1, right along row 3, down
    # column 7, left along row 7, up column 3 and right along row 5 to its end at column 5. Every '.' is on that
    # one path, so every '.' is reached from the border, and nothing else.
    grid = np.array([list(row) for row in SPIRAL.split()])
    allowed = grid == "."
    border = np.zeros_like(allowed)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    assert allowed.sum() == 1 + 9 + 1 + 8 + 3 + 6 + 4 + 7 + 2 + 9  # rows 0 to 9, counted on the drawing
    np.testing.assert_array_equal(_flood(allowed, border), allowed)
    # Walled off at its mouth, none of it is reached.
    closed = allowed.copy()
    closed[0, 1] = False
    assert not _flood(closed, border).any()


def test_flood_follows_a_long_serpentine_and_not_diagonals():
    # 20 corridors of 10 pixels (rows 1, 3, ..., 39, columns 1-10) joined end to end, alternately at the right
    # (column 10) and the left (column 1), entered from the border at (0, 1): 1 + 200 + 19 = 220 pixels on a path
    # with 39 turns. A pocket (column 12, rows 1-39, and (4, 11)) touches the path only diagonally, at (3, 10)
    # and (5, 10) from (4, 11): 4-connected, it stays out.
    allowed = np.zeros((41, 14), bool)
    allowed[0, 1] = True
    for i in range(20):
        allowed[2 * i + 1, 1:11] = True
        if i < 19:
            allowed[2 * i + 2, 10 if i % 2 == 0 else 1] = True
    path = allowed.copy()
    allowed[1:40, 12] = True
    allowed[4, 11] = True
    border = np.zeros_like(allowed)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    assert path.sum() == 220 and not path[4, 10]
    np.testing.assert_array_equal(_flood(allowed, border), path)
