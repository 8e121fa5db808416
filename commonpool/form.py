"""The New simulation form as data: editor tables in, SimulationConfig fields out.

Editable tables reach a page as pandas DataFrames with blanks (NaN/None) where
a user left a cell empty. This module turns them into config fields and
pydantic errors into one message per form section, so the page can show each
message beside the widget that caused it. The roster table uses the wide CSV
layout of population.roster_to_csv, so an edited table, a downloaded file and
an uploaded file are one format with one parser.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from commonpool.config import ParticipantSpec, ResourceSpec, SimulationConfig, validation_problems
from commonpool.csv_safe import neutralise
from commonpool.personalities import BUILTIN, Traits, trait_meaning
from commonpool.population import (
    RosterError,
    generate,
    roster_from_csv,
    roster_from_json,
    roster_to_csv,
    roster_to_json,
)
from commonpool.textfile import TextFileError, decode

TRAIT_COLUMNS: tuple[str, ...] = tuple(Traits.model_fields)

def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def resources_table(resources: list[ResourceSpec]) -> pd.DataFrame:
    return pd.DataFrame({"name": [r.name for r in resources], "kind": [r.kind for r in resources]})


def resources_from_table(table: pd.DataFrame) -> list[dict[str, str]]:
    """Rows with a name; a row left wholly blank (a fresh added row) is ignored."""
    rows = []
    for record in table.to_dict("records"):
        if _blank(record.get("name")) and _blank(record.get("kind")):
            continue
        name = "" if _blank(record.get("name")) else str(record["name"]).strip()
        rows.append({"name": name, "kind": "good" if _blank(record.get("kind")) else str(record["kind"])})
    return rows


def custom_personalities_table() -> pd.DataFrame:
    """An empty table with a column per trait, typed so the editor offers number cells."""
    columns: dict[str, pd.Series] = {
        "name": pd.Series(dtype="string"),
        "description": pd.Series(dtype="string"),
    }
    for trait in TRAIT_COLUMNS:
        columns[trait] = pd.Series(dtype="float64")
    return pd.DataFrame(columns)


def custom_personalities_from_table(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with a name; a blank trait takes the default of Traits."""
    rows = []
    for record in table.to_dict("records"):
        if _blank(record.get("name")):
            continue
        traits = {t: record[t] for t in TRAIT_COLUMNS if t in record and not _blank(record[t])}
        if "max_units" in traits and float(traits["max_units"]).is_integer():
            traits["max_units"] = int(traits["max_units"])
        rows.append(
            {
                "name": str(record["name"]).strip(),
                "traits": traits,
                "description": "" if _blank(record.get("description")) else str(record["description"]),
            }
        )
    return rows


def builtin_traits_table() -> pd.DataFrame:
    """The built-in presets, one column each, one row per trait: what its value makes the
    personality do, then the value (the number a custom personality's trait is set to)."""
    rows = [{"trait": "in short", **{p.name: p.description for p in BUILTIN.values()}}]
    for trait in Traits.model_fields:
        rows.append({"trait": trait, **{p.name: f"{trait_meaning(trait, getattr(p.traits, trait))} "
                                                f"({trait} = {getattr(p.traits, trait):g})"
                                        for p in BUILTIN.values()}})
    return pd.DataFrame(rows)


def roster_table(config: SimulationConfig) -> pd.DataFrame:
    """A roster generated from config (its seed, mix and resources), as an editable table."""
    rng = np.random.default_rng(config.seed)
    population = generate(config.model_copy(update={"roster": None}), rng)
    table = roster_table_from_csv(roster_to_csv(population.to_specs(), population.resources))
    # Blank: "the run's default engine", so choosing engines per personality
    # later still applies to a generated roster.
    table["brain"] = ""
    return table


def roster_table_from_csv(text: str) -> pd.DataFrame:
    # Strings for the text columns so an empty note stays "" rather than NaN.
    return pd.read_csv(io.StringIO(text), dtype={"name": str, "personality": str, "notes": str, "brain": str},
                       keep_default_na=False)


def roster_table_from_upload(name: str, content: bytes) -> pd.DataFrame:
    """An uploaded CSV or JSON roster as an editable table; RosterError names what is wrong."""
    try:
        text = decode(content)
    except TextFileError as exc:
        raise RosterError(f"roster: {exc}") from None
    if name.lower().endswith(".json"):
        specs = roster_from_json(text)
        resources = sorted({r for s in specs for part in (s.holdings, s.needs, s.wants, s.produces) for r in part})
        return roster_table_from_csv(roster_to_csv(specs, resources))
    roster_from_csv(text)  # refuse a bad file here, where the upload is, not later in the editor
    return roster_table_from_csv(text)


def roster_csv(table: pd.DataFrame) -> str:
    """The table in the roster CSV layout, without the blank rows an editor adds."""
    filled = table[[not all(_blank(v) for v in row) for row in table.itertuples(index=False)]].copy()
    for column in filled.columns:
        # An editor turns a unit column with a blank cell into floats; write
        # whole numbers as 4, not 4.0, which the roster parser rightly refuses.
        if column.startswith(("holdings:", "needs:", "produces:")) and pd.api.types.is_float_dtype(filled[column]):
            values = filled[column].dropna()
            if (values == values.round()).all():
                filled[column] = filled[column].astype("Int64")
    return filled.to_csv(index=False)


def roster_csv_download(table: pd.DataFrame) -> str:
    """roster_csv for a person to open in a spreadsheet: text that starts like a formula gets a quote.

    The roster parser takes the quote off again, so the file uploads unchanged.
    """
    filled = roster_table_from_csv(roster_csv(table))
    for column in ("name", "personality", "notes", "brain"):
        if column in filled:
            filled[column] = filled[column].map(neutralise)
    return filled.to_csv(index=False)


def roster_from_table(table: pd.DataFrame) -> list[ParticipantSpec]:
    """The edited table as roster rows; RosterError names the row and column of a bad cell."""
    return roster_from_csv(roster_csv(table))


def roster_json(table: pd.DataFrame) -> str:
    return roster_to_json(roster_from_table(table))


# The form's label of each config field, so a problem names the box a person sees.
FIELD_LABELS: dict[str, str] = {
    "num_participants": "Participants",
    "min_exchanges": "Min exchanges",
    "max_exchanges": "Max exchanges",
    "seed": "Seed",
    "simulation_id": "Run id",
    "resources": "Resources",
    "custom_personalities": "Your personalities",
    "personalities": "Mix",
    "personality_models": "Engine per personality",
    "roster": "Roster",
    "model": "Engine for everyone",
    "facilitator_model": "Facilitator engine",
    "max_turns": "Max turns",
    "periods": "Periods",
    "discount": "Discount",
    "storable": "Storable",
    "spoilage": "Spoilage",
    "budget_usd": "Budget (USD)",
    "cost_per_1k_prompt_tokens": "Price per 1k prompt tokens",
    "cost_per_1k_completion_tokens": "Price per 1k completion tokens",
    "llm_timeout_s": "LLM timeout (s)",
}


def _bound(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}" if isinstance(value, float) else str(value)


def _in_words(item: dict[str, Any]) -> str | None:
    """What a field must be, as a person would say it, for pydantic's common complaints; None for others."""
    ctx = item.get("ctx") or {}
    kind = item["type"]
    if kind == "greater_than_equal":
        return f"at least {_bound(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"at most {_bound(ctx['le'])}"
    if kind == "greater_than":
        return f"more than {_bound(ctx['gt'])}"
    if kind == "less_than":
        return f"less than {_bound(ctx['lt'])}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "a whole number"
    if kind in ("float_parsing", "float_type"):
        return "a number"
    if kind == "too_short":
        return f"at least {_bound(ctx['min_length'])}"
    if kind == "too_long":
        return f"at most {_bound(ctx['max_length'])}"
    return None


def _where(loc: tuple[int | str, ...]) -> str:
    first = FIELD_LABELS.get(str(loc[0]), str(loc[0]))
    rest = " ".join(f"row {p + 1}" if isinstance(p, int) else str(p) for p in loc[1:])
    return f"{first} {rest}" if rest else first


def errors_by_field(error: ValidationError) -> dict[str, list[str]]:
    """Every problem, one line each in the form's words ("Participants: at least 2"), keyed by the
    config field that shows it ("" if none)."""
    grouped: dict[str, list[str]] = {}
    for item, (field, line) in zip(error.errors(), validation_problems(error), strict=True):
        loc = tuple(item["loc"])
        words = _in_words(item) if loc else None
        if words is not None:
            given = item.get("input")
            shown = "" if given is None or isinstance(given, (dict, list)) or given == "" else f" (not {given})"
            line = f"{_where(loc)}: {words}{shown}"
        grouped.setdefault(field, []).append(line)
    return grouped


def _whole(value: object) -> int | None:
    try:
        return int(value) if float(value).is_integer() else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _across_fields(fields: dict[str, Any]) -> dict[str, list[str]]:
    """Rules between fields, checked even when a field is wrong too: SimulationConfig checks them
    only once every field is valid, so one problem used to hide the other."""
    low, high = _whole(fields.get("min_exchanges")), _whole(fields.get("max_exchanges"))
    if low is not None and high is not None and low > high:
        return {"min_exchanges": [f"Min exchanges: at most Max exchanges ({low:,} is more than {high:,})"]}
    return {}


def spoilage_from_text(text: str) -> tuple[dict[str, float], list[str]]:
    """The Spoilage box, "vegetables=0.2, bread loaves=0.5" as --spoilage reads it: {resource: share},
    and a problem in the form's words for each item that is not NAME=SHARE."""
    shares: dict[str, float] = {}
    problems = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        try:
            share = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            problems.append(f"Spoilage: NAME=SHARE, e.g. vegetables=0.2 (not {item})")
            continue
        shares[name.strip()] = share
    return shares, problems


def _periods_fields(fields: dict[str, Any]) -> dict[str, list[str]]:
    """Storable and Spoilage against the Resources table, in the form's words.

    SimulationConfig words an unknown name once for both boxes ("storable/spoilage: ..."),
    and checks them only once every other field is valid; the form names the box, always.
    """
    names = [str(r.get("name", "")) for r in fields.get("resources") or [] if isinstance(r, dict)]
    allowed = ", ".join(names)
    problems: dict[str, list[str]] = {}
    for name in fields.get("storable") or []:
        if name not in names:
            problems.setdefault("storable", []).append(f"Storable: a resource of the Resources table (not {name}; allowed: {allowed})")
    for name, share in (fields.get("spoilage") or {}).items():
        if name not in names:
            problems.setdefault("spoilage", []).append(f"Spoilage: a resource of the Resources table (not {name}; allowed: {allowed})")
        elif not 0 <= share <= 1:  # also refuses NaN
            problems.setdefault("spoilage", []).append(f"Spoilage: a share from 0 to 1 (not {share:g} for {name})")
    return problems


# The config's wording of the rules _periods_fields words for the form.
_PERIODS_WORDING = ("storable/spoilage:", "spoilage: share of")


def validate(fields: dict[str, Any]) -> tuple[SimulationConfig | None, dict[str, list[str]]]:
    """The config, or None and every problem by config field, in the form's words.

    fields["spoilage"] may be the Spoilage box's text, read as --spoilage reads it (spoilage_from_text).
    """
    across = _across_fields(fields)
    if isinstance(fields.get("spoilage"), str):
        shares, unread = spoilage_from_text(fields["spoilage"])
        fields = {**fields, "spoilage": shares}
        if unread:
            across["spoilage"] = unread
    for field, lines in _periods_fields(fields).items():
        across.setdefault(field, []).extend(lines)
    try:
        config = SimulationConfig.model_validate(fields)
    except ValidationError as exc:
        problems = errors_by_field(exc)
        for field in list(problems):
            problems[field] = [line for line in problems[field] if not line.startswith(_PERIODS_WORDING)]
        for field, lines in across.items():
            # The config's own wording of the same rule, if it got that far, gives way to the form's.
            kept = [line for line in problems.get(field, []) if not line.startswith(f"{field} (")]
            problems[field] = lines + kept
        return None, {field: lines for field, lines in problems.items() if lines}
    if across:  # an item of the Spoilage box that is not NAME=SHARE: the config never saw it
        return None, across
    return config, {}
