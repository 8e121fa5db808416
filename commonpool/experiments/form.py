"""The Sweeps page's design form as data: a factors table in, a spec document out, and back to TOML.

Like commonpool.form for New simulation: an editable table reaches a page as a
pandas DataFrame with blanks (NaN/None) where a user left a cell empty. This
module turns it into the `factors` of a spec document (which
spec.parse_spec then validates), one SpecError naming the factor on bad
input; and writes a spec document as the TOML that spec.load_spec reads, so a
downloaded spec loads back as the same experiment.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pandas as pd

from commonpool.config import SimulationConfig
from commonpool.experiments import spec
from commonpool.experiments.spec import SpecError, parse_vary

FACTOR_COLUMNS = ("name", "kind", "values", "low", "high", "step", "distribution")
KINDS = ("levels", "range")
DISTRIBUTIONS = ("uniform", "loguniform")

def factor_names(base: dict[str, Any]) -> list[str]:
    """spec.factor_names over the form's base (the default config while the base is not valid)."""
    try:
        config = SimulationConfig.model_validate(base)
    except ValueError:
        config = SimulationConfig()
    return spec.factor_names(config)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()) or value is pd.NA


def factors_table(factors: dict[str, Any]) -> pd.DataFrame:
    """The editor's table for a spec's factors: one row each, levels as text, ranges as numbers."""
    rows = []
    for name, factor in factors.items():
        if isinstance(factor, dict):
            rows.append({"name": name, "kind": "range", "values": None, "low": factor.get("low"),
                         "high": factor.get("high"), "step": factor.get("step"),
                         "distribution": factor.get("distribution", "uniform")})
        else:
            rows.append({"name": name, "kind": "levels", "values": ",".join(_level_text(v) for v in factor),
                         "low": None, "high": None, "step": None, "distribution": None})
    frame = pd.DataFrame(rows, columns=list(FACTOR_COLUMNS))
    return frame.astype({"name": "string", "kind": "string", "values": "string", "low": "float64",
                         "high": "float64", "step": "float64", "distribution": "string"})


def _level_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def factors_from_table(table: pd.DataFrame) -> dict[str, Any]:
    """The spec's `factors` from the editor's rows; rows left wholly blank are ignored.

    Raises SpecError naming the factor (its row when it has no name) and what is allowed.
    """
    factors: dict[str, Any] = {}
    for number, record in enumerate(table.to_dict("records"), start=1):
        if all(_blank(record.get(c)) for c in FACTOR_COLUMNS if c not in ("kind", "distribution")):
            continue
        if _blank(record.get("name")):
            raise SpecError(f"factors, row {number}: choose a factor name")
        name = str(record["name"]).strip()
        if name in factors:
            raise SpecError(f"factors.{name}: listed twice; give each factor one row")
        kind = "levels" if _blank(record.get("kind")) else str(record["kind"])
        if kind not in KINDS:
            raise SpecError(f"factors.{name}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        factors[name] = _levels(name, record.get("values")) if kind == "levels" else _range(name, record)
    return factors


def _levels(name: str, values: object) -> list[Any]:
    if _blank(values):
        raise SpecError(f"factors.{name}: levels need values, comma-separated, e.g. true,false or 2,4,6")
    text = str(values)
    if ":" in text:
        raise SpecError(f"factors.{name}: levels are comma-separated values (e.g. 2,4,6); "
                        "for an interval choose kind range and give low, high and step")
    _, levels = parse_vary(f"{name}={text}")
    if not levels:
        raise SpecError(f"factors.{name}: levels need values, comma-separated, e.g. true,false or 2,4,6")
    return list(levels)


def _range(name: str, record: dict[str, Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for key in ("low", "high"):
        if _blank(record.get(key)):
            raise SpecError(f"factors.{name}: a range needs low and high (and step for a grid)")
        bounds[key] = _number(float(record[key]))
    if not _blank(record.get("step")):
        bounds["step"] = _number(float(record["step"]))
    distribution = record.get("distribution")
    if not _blank(distribution) and distribution != "uniform":
        if distribution not in DISTRIBUTIONS:
            raise SpecError(f"factors.{name}: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                            f"got {distribution!r}")
        bounds["distribution"] = str(distribution)
    return bounds


def _number(x: float) -> int | float:
    """A whole number as an int, so integer factors read as `2`, not `2.0`, in TOML and in error messages."""
    return int(x) if math.isfinite(x) and x.is_integer() else x


# --- TOML ------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def spec_toml(document: dict[str, Any]) -> str:
    """A spec document as TOML that tomllib (spec.load_spec) reads back as the same document.

    Top-level values first, then [base] and [factors]; None (TOML has no null)
    is left out, which reads back as the field's default.
    """
    lines = [f"{_key(k)} = {_value(v)}" for k, v in document.items()
             if not isinstance(v, dict) and v is not None]
    for table in ("base", "factors"):
        if document.get(table) is not None:
            lines += ["", f"[{table}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in document[table].items() if v is not None]
    for key, value in document.items():
        if isinstance(value, dict) and key not in ("base", "factors"):
            lines += ["", f"[{_key(key)}]"] + [f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None]
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    # JSON's escapes are TOML's for a basic string, except DEL and the lone
    # surrogates ensure_ascii would write for characters beyond U+FFFF.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML: {value!r}")
