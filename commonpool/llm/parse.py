"""Finding the JSON object in a model's answer, whatever it wrapped it in.

Models that ignore "JSON only" tend to add a ```json fence or a sentence
before and after; both are accepted. The answer is then validated elsewhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in text: bare, fenced, or surrounded by prose. ValueError if none."""
    stripped = text.strip()
    for candidate in (stripped, *(m.group(1).strip() for m in _FENCE.finditer(stripped))):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    for opening in re.finditer(r"\{", stripped):
        try:
            value, _ = _DECODER.raw_decode(stripped, opening.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("the answer contains no JSON object")
