"""Removing secrets from text before it is stored or shown.

Providers echo request headers in some error messages; a key must never reach
run.json, llm_calls or a terminal. Two nets: the exact values of secret-looking
environment variables, and patterns that look like keys whatever their source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"(API_KEY|_KEY|_TOKEN|_SECRET|PASSWORD)$", re.IGNORECASE)
_KEY_LIKE = re.compile(
    r"(?:\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"  # OpenAI, Anthropic (sk-ant-...), many proxies
    r"|\bAIza[0-9A-Za-z_\-]{20,}"  # Google
    r"|\b(?:xox[abpr]|gh[pousr])_?[A-Za-z0-9_\-]{10,}"  # Slack, GitHub
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{6,}"  # any Authorization header value
    r"|(?i:api[_-]?key)[\"']?\s*[:=]\s*[\"']?[^\s\"',;]{6,})"
)
MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words


def secret_values(extra: Iterable[str | None] = ()) -> list[str]:
    """Values of environment variables named like secrets, plus any given, longest first."""
    values = {v for name, v in os.environ.items() if _SECRET_NAME.search(name)}
    values.update(v for v in extra if v)
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def scrub(text: str, extra_secrets: Iterable[str | None] = ()) -> str:
    for value in secret_values(extra_secrets):
        text = text.replace(value, REDACTED)
    return _KEY_LIKE.sub(REDACTED, text)
