"""Colour words in a shopper's query, read with the catalog's own product names in mind.

`colour_words` / `read_colour_words` pull colour words out of a text query as PALETTE names: not
those inside the catalog's own product names, which `learn_colour_names` finds at index time
("orange juice"), and negated ones ("not red") are colours to leave out. `named_colour_vector`
(shoplens.colour.palette) turns the names into a descriptor for re-ranking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
