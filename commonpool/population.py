"""Who takes part: seeded generation of a community, and import/export of a roster."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass

import numpy as np

from commonpool.config import ParticipantSpec, SimulationConfig
from commonpool.csv_safe import restore
from commonpool.personalities import Traits
from commonpool.production import draw_producers, is_living

FIRST_NAMES = (
    "Ada Ben Chioma Dev Elif Femi Greta Hugo Ines Jun Kofi Lena Mateo Noor Oren Priya Quinn Rosa Sami "
    "Tariq Uma Vik Wren Xia Yusuf Zoe Aiko Bruno Carmen Dara Esme Farid Gus Hana Ivo Jade Kai Lior Mila "
    "Nils Omar Pia Rafa Sora Teo Una Vera Wim Yara Zev"
).split()

TRAIT_NAMES = tuple(Traits.model_fields)


@dataclass
class Population:
    """Participants as columns: the engine's hot loop reads arrays, not objects."""

    names: list[str]
    personalities: list[str]
    notes: list[str]
    brains: list[str]  # "rules" or a LiteLLM model string
    resources: list[str]
    kinds: list[str]
    holdings: np.ndarray  # int64 [participant, resource]
    needs: np.ndarray  # int64 [participant, resource]
    wants: np.ndarray  # float64 [participant, resource]
    traits: dict[str, np.ndarray]  # trait name -> float64 [participant]
    # int64 [participant, resource]: units made a period (production.py); zeros in a one-period run, None: nothing
    produces: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.names)

    def to_specs(self) -> list[ParticipantSpec]:
        specs = []
        for i, name in enumerate(self.names):
            specs.append(
                ParticipantSpec(
                    name=name,
                    personality=self.personalities[i],
                    holdings={r: int(self.holdings[i, k]) for k, r in enumerate(self.resources)},
                    needs={r: int(self.needs[i, k]) for k, r in enumerate(self.resources) if self.needs[i, k]},
                    wants={r: round(float(self.wants[i, k]), 4) for k, r in enumerate(self.resources)},
                    produces={r: int(self.produces[i, k]) for k, r in enumerate(self.resources) if self.produces is not None and self.produces[i, k]},
                    notes=self.notes[i],
                    brain=self.brains[i],
                )
            )
        return specs


def mix_is_exact(mix: dict[str, float], total: int) -> bool:
    """A mix of whole numbers adding up to total is taken as exact counts; any other mix as shares."""
    weights = [v for v in mix.values() if v > 0]
    return all(float(v).is_integer() for v in weights) and sum(weights) == total


def apportion(mix: dict[str, float], total: int) -> dict[str, int]:
    """Counts per personality: exact when the mix already adds up to total, else largest remainder."""
    weights = {k: v for k, v in mix.items() if v > 0}
    if mix_is_exact(mix, total):
        return {k: int(v) for k, v in weights.items()}
    scale = total / sum(weights.values())
    raw = {k: v * scale for k, v in weights.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    by_remainder = sorted(raw, key=lambda k: (counts[k] - raw[k], k))
    for k in by_remainder[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def brain_for(config: SimulationConfig, personality: str, roster_brain: str | None) -> str:
    if roster_brain:
        return roster_brain
    return config.personality_models.get(personality) or config.model or "rules"


def generate(config: SimulationConfig, rng: np.random.Generator) -> Population:
    """A community where trade is worth doing.

    Everyone holds a surplus of two resources (4-9 units) and needs 2-4 units of
    up to two others that somebody else holds a surplus of; other resources they
    hold 0 or 1 of. Wants are Dirichlet weights scaled to average 1. In a run
    of several periods each produces 1-5 units a period of its surplus resources
    (production.draw_producers, from a stream of its own).
    """
    if config.roster is not None:
        return from_specs(config, config.roster)
    n, names_r = config.num_participants, [r.name for r in config.resources]
    r = len(names_r)
    counts = apportion(config.personalities, n)
    personalities = [p for p, c in counts.items() for _ in range(c)]
    personalities = [personalities[k] for k in rng.permutation(n)]

    order = rng.permuted(np.tile(np.arange(r), (n, 1)), axis=1)
    n_special = min(2, r - 1)
    special = order[:, :n_special]
    holdings = rng.integers(0, 2, size=(n, r))
    rows = np.arange(n)[:, None]
    holdings[rows, special] = rng.integers(4, 10, size=(n, n_special))

    # A need is only worth generating if someone else has a surplus of it.
    specialists = np.zeros(r, dtype=np.int64)
    np.add.at(specialists, special.ravel(), 1)
    needs = np.zeros((n, r), dtype=np.int64)
    need_units = rng.integers(2, 5, size=(n, 2))
    for i in range(n):
        others = specialists.copy()
        others[special[i]] -= 1
        candidates = [res for res in order[i, n_special:] if others[res] > 0][:2]
        for k, res in enumerate(candidates):
            needs[i, res] = need_units[i, k]
    wants = rng.dirichlet(np.ones(r), size=n) * r

    names = [
        FIRST_NAMES[i % len(FIRST_NAMES)] + ("" if i < len(FIRST_NAMES) else f" {i // len(FIRST_NAMES) + 1}")
        for i in range(n)
    ]
    notes = [
        f"Has plenty of {' and '.join(names_r[k] for k in special[i])}."
        + (f" Needs {' and '.join(names_r[k] for k in np.flatnonzero(needs[i]))}." if needs[i].any() else "")
        for i in range(n)
    ]
    produces = draw_producers(special, r, int(config.seed or 0)) if is_living(config) else np.zeros((n, r), dtype=np.int64)
    return _assemble(config, names, personalities, notes, [None] * n, holdings, needs, wants, produces)


def from_specs(config: SimulationConfig, specs: list[ParticipantSpec]) -> Population:
    index = {r.name: k for k, r in enumerate(config.resources)}
    n, r = len(specs), len(index)
    holdings = np.zeros((n, r), dtype=np.int64)
    needs = np.zeros((n, r), dtype=np.int64)
    wants = np.ones((n, r), dtype=np.float64)
    produces = np.zeros((n, r), dtype=np.int64)
    for i, spec in enumerate(specs):
        for name, units in spec.produces.items():
            produces[i, index[name]] = units
        for name, units in spec.holdings.items():
            holdings[i, index[name]] = units
        for name, units in spec.needs.items():
            needs[i, index[name]] = units
        for name, weight in spec.wants.items():
            wants[i, index[name]] = weight
    return _assemble(
        config,
        [s.name for s in specs],
        [s.personality for s in specs],
        [s.notes for s in specs],
        [s.brain for s in specs],
        holdings,
        needs,
        wants,
        produces,
    )


def _assemble(
    config: SimulationConfig,
    names: list[str],
    personalities: list[str],
    notes: list[str],
    roster_brains: list[str | None],
    holdings: np.ndarray,
    needs: np.ndarray,
    wants: np.ndarray,
    produces: np.ndarray,
) -> Population:
    presets = {name: config.personality(name).traits for name in set(personalities)}
    traits = {
        t: np.array([float(getattr(presets[p], t)) for p in personalities], dtype=np.float64) for t in TRAIT_NAMES
    }
    return Population(
        names=names,
        personalities=personalities,
        notes=notes,
        brains=[brain_for(config, p, b) for p, b in zip(personalities, roster_brains)],
        resources=[r.name for r in config.resources],
        kinds=[r.kind for r in config.resources],
        holdings=holdings.astype(np.int64),
        needs=needs.astype(np.int64),
        wants=wants.astype(np.float64),
        traits=traits,
        produces=produces.astype(np.int64),
    )


# --- roster files -----------------------------------------------------------------------------
# CSV is wide so a spreadsheet user sees one member per row:
# name, personality, notes, brain, holdings:<resource>..., needs:<resource>..., wants:<resource>...,
# and produces:<resource>... when anyone produces something.


def roster_to_json(specs: list[ParticipantSpec]) -> str:
    rows = [s.model_dump(exclude_none=True) for s in specs]
    for row in rows:
        if not row.get("produces"):
            row.pop("produces", None)
    return json.dumps(rows, indent=2, ensure_ascii=False)


def roster_to_csv(specs: list[ParticipantSpec], resources: list[str]) -> str:
    out = io.StringIO()
    parts = ("holdings", "needs", "wants") + (("produces",) if any(s.produces for s in specs) else ())
    fields = ["name", "personality", "notes", "brain"] + [f"{part}:{r}" for part in parts for r in resources]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for s in specs:
        row: dict[str, object] = {"name": s.name, "personality": s.personality, "notes": s.notes, "brain": s.brain or ""}
        for r in resources:
            row[f"holdings:{r}"] = s.holdings.get(r, 0)
            row[f"needs:{r}"] = s.needs.get(r, 0)
            row[f"wants:{r}"] = s.wants.get(r, 1.0)
            if "produces" in parts:
                row[f"produces:{r}"] = s.produces.get(r, 0)
        writer.writerow(row)
    return out.getvalue()


class RosterError(ValueError):
    """A roster file that cannot be read; the message names the row and column."""


# A roster cell's number in plain ASCII: int("٣") and float("1_0") would otherwise
# accept digits a reader of the file does not see as the number stored.
_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Longest cell Python's CSV reader takes (its default field_size_limit); notes allow 2,000 characters.
_MAX_CELL = 128 * 1024


def roster_from_json(text: str) -> list[ParticipantSpec]:
    from pydantic import ValidationError

    from commonpool.config import describe_validation_error
    from commonpool.textfile import TextFileError, load_json

    try:
        rows = load_json(text)
    except TextFileError as exc:
        raise RosterError(f"roster: {exc}") from None
    if not isinstance(rows, list):
        raise RosterError("roster: expected a JSON list of participants")
    specs = []
    for k, row in enumerate(rows, start=1):
        try:
            specs.append(ParticipantSpec.model_validate(row))
        except ValidationError as exc:
            raise RosterError(f"roster row {k}: {describe_validation_error(exc)}") from None
    return specs


def _csv_rows(text: str) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text))
    try:
        return [row for row in reader if row]  # a wholly empty line is no member
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise RosterError(
                f"roster line {reader.line_num}: a cell is longer than {_MAX_CELL // 1024} KB "
                "(notes take at most 2,000 characters)"
            ) from None
        raise RosterError(f"roster line {reader.line_num}: not valid CSV ({exc})") from None


def _number(part: str, value: str) -> int | float:
    if not (_DECIMAL if part == "wants" else _WHOLE).fullmatch(value):
        raise ValueError(value)
    return float(value) if part == "wants" else int(value)


def roster_from_csv(text: str) -> list[ParticipantSpec]:
    from pydantic import ValidationError

    from commonpool.config import describe_validation_error

    rows = _csv_rows(text.removeprefix("\ufeff"))
    header = [column.strip() for column in rows[0]] if rows else []
    if "name" not in header or "personality" not in header:
        raise RosterError("roster: CSV needs a header with at least the columns name and personality")
    repeated = [column for k, column in enumerate(header) if column and column in header[:k]]
    if repeated:
        raise RosterError(f"roster: the column {repeated[0]!r} appears more than once in the header")
    for column in header:
        if ":" in column and column.split(":", 1)[0] not in ("holdings", "needs", "wants", "produces"):
            raise RosterError(f"roster: unknown column {column!r}; use holdings:, needs:, wants: or produces: prefixes")
    specs = []
    for k, cells in enumerate(rows[1:], start=1):
        if len(cells) != len(header):
            raise RosterError(
                f"roster row {k}: has {len(cells)} cells but the header has {len(header)} columns"
            )
        spec: dict[str, object] = {"holdings": {}, "needs": {}, "wants": {}, "produces": {}, "notes": ""}
        for column, value in zip(header, cells):
            value = value.strip()
            if column in ("name", "personality", "notes"):
                spec[column] = restore(value)  # a downloaded roster's '=... is the text =...
            elif column == "brain":
                spec["brain"] = restore(value) or None
            elif ":" in column:
                part, resource = column.split(":", 1)
                if value == "":
                    continue
                try:
                    number = _number(part, value)
                except ValueError:
                    kind = "a number" if part == "wants" else "a whole number"
                    raise RosterError(f"roster row {k}: {column} must be {kind} (got {value!r})") from None
                spec[part][resource] = number  # type: ignore[index]
        try:
            specs.append(ParticipantSpec.model_validate(spec))
        except ValidationError as exc:
            raise RosterError(f"roster row {k}: {describe_validation_error(exc)}") from None
    return specs
