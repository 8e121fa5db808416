"""Counts in words people write: "1 book", "2 books", "1 turn", "3 trades".

Resource names are written in the plural ("books", "bread loaves", "childcare
hours"), because that is how a community lists what it trades. One unit of a
resource takes the singular of the name's last word; a name that is not a
regular English plural (sewing, firewood) is left as it is.
"""

from __future__ import annotations

import functools

# Plurals the suffix rules below would get wrong.
_IRREGULAR = {
    "loaves": "loaf", "leaves": "leaf", "halves": "half", "shelves": "shelf", "knives": "knife",
    "children": "child", "people": "person", "men": "man", "women": "woman", "teeth": "tooth",
    "feet": "foot", "geese": "goose", "mice": "mouse", "tomatoes": "tomato", "potatoes": "potato",
    "mangoes": "mango", "heroes": "hero", "cookies": "cookie", "movies": "movie", "pies": "pie",
    "ties": "tie", "lies": "lie",
}
# Words ending in s that are not plurals.
_NOT_PLURAL = ("ss", "us", "is", "ics", "news")


@functools.cache
def singular(name: str) -> str:
    """The name of one unit: 'bread loaves' -> 'bread loaf', 'books' -> 'book', 'sewing' -> 'sewing'."""
    head, _, word = name.rpartition(" ")
    lower = word.lower()
    if lower in _IRREGULAR:
        one = _IRREGULAR[lower]
        one = one.capitalize() if word[:1].isupper() else one
    elif lower.endswith(_NOT_PLURAL) or not lower.endswith("s"):
        one = word
    elif lower.endswith("ies") and len(lower) > 4:
        one = word[:-3] + "y"
    elif lower.endswith(("ches", "shes", "sses", "xes", "zzes")):
        one = word[:-2]
    else:
        one = word[:-1]
    return f"{head} {one}" if head else one


def units(quantity: int, name: str) -> str:
    """'1 book', '2 books': a quantity of a resource named in the plural."""
    return f"{quantity} {singular(name) if quantity == 1 else name}"


def count(number: int, noun: str, plural: str | None = None) -> str:
    """'1 turn', '3 turns', '1 deal', '0 deals'."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
