"""SimulationConfig: the one description of a run, validated at the edge."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from commonpool.personalities import BUILTIN, Personality

ResourceKind = Literal["good", "skill", "time"]
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
RESOURCE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _\-']{0,39}$"
MAX_PARTICIPANTS = 100_000
# Sane upper bounds for a roster's cells: sums over 100,000 members and 64 resources
# stay exact in int64 and float64, and utility (weight x units) stays finite.
MAX_UNITS = 1_000_000
MAX_WANT = 1_000.0


class ResourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=RESOURCE_NAME_PATTERN)
    kind: ResourceKind = "good"


DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec(name="books", kind="good"),
    ResourceSpec(name="tools", kind="good"),
    ResourceSpec(name="vegetables", kind="good"),
    ResourceSpec(name="bread loaves", kind="good"),
    ResourceSpec(name="bike repairs", kind="skill"),
    ResourceSpec(name="cooking lessons", kind="skill"),
    ResourceSpec(name="childcare hours", kind="time"),
    ResourceSpec(name="gardening hours", kind="time"),
)


class ParticipantSpec(BaseModel):
    """One row of a roster: a real (or imagined) member of a community."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    personality: str
    holdings: dict[str, int] = Field(default_factory=dict)
    needs: dict[str, int] = Field(default_factory=dict)
    wants: dict[str, float] = Field(default_factory=dict)
    produces: dict[str, int] = Field(
        default_factory=dict, description="units made each period (a capacity for time and skills); used when periods > 1"
    )
    notes: str = Field("", max_length=2000)
    brain: str | None = Field(None, description="'rules', a LiteLLM model string, or None for the run default")

    @field_validator("holdings", "needs", "produces")
    @classmethod
    def _non_negative_units(cls, value: dict[str, int]) -> dict[str, int]:
        for resource, units in value.items():
            if units < 0:
                raise ValueError(f"units of {resource!r} must be 0 or more (got {units})")
            if units > MAX_UNITS:
                raise ValueError(f"units of {resource!r} must be at most {MAX_UNITS:,} (got {units})")
        return value

    @field_validator("wants")
    @classmethod
    def _non_negative_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for resource, weight in value.items():
            if not 0 <= weight <= MAX_WANT:  # also refuses NaN and infinity
                raise ValueError(f"want weight of {resource!r} must be from 0 to {MAX_WANT:,g} (got {weight})")
        return value


class SimulationConfig(BaseModel):
    """Everything that determines a run. The same config and seed give the same run."""

    model_config = ConfigDict(extra="forbid")

    simulation_id: str | None = Field(None, pattern=RUN_ID_PATTERN)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    num_participants: int = Field(10, ge=2, le=MAX_PARTICIPANTS)
    min_exchanges: int = Field(10, ge=1, le=100_000_000)
    max_exchanges: int = Field(20, ge=1, le=100_000_000)
    max_turns: int = Field(6, ge=2, le=20, description="messages per exchange, the opening proposal included")
    resources: list[ResourceSpec] = Field(default_factory=lambda: list(DEFAULT_RESOURCES), min_length=2, max_length=64)
    personalities: dict[str, float] = Field(
        default_factory=lambda: {"cautious": 1.0, "generous": 1.0, "strategic": 1.0},
        description="mix: exact counts when they add up to num_participants, otherwise shares",
    )
    custom_personalities: list[Personality] = Field(default_factory=list)
    facilitator: bool = True
    pairing: Literal["random", "need"] = "random"
    need_weight: float = Field(2.0, gt=0, le=100, description="utility of each unit up to a need")
    roster: list[ParticipantSpec] | None = None

    # Time: a run is a sequence of periods (production.py). One period is the fixed-endowment model.
    periods: int = Field(
        1, ge=1, le=10_000,
        description="periods the run's exchanges are split over; with more than one, every period "
        "produces, consumes and expires (see production.py)",
    )
    discount: float = Field(1.0, gt=0, le=1, description="weight of period t's utility is discount^(t-1)")
    storable: list[str] = Field(
        default_factory=list, description="time or skill resources whose unused units carry over (goods always do)"
    )
    spoilage: dict[str, float] = Field(
        default_factory=dict, description="share of a storable resource's stock lost at each period's end"
    )

    # Who decides: None means the offline rules brain.
    model: str | None = Field(None, max_length=200)
    facilitator_model: str | None = Field(None, max_length=200)
    personality_models: dict[str, str] = Field(default_factory=dict)
    api_base: str | None = Field(None, max_length=500)
    concurrency: int = Field(8, ge=1, le=256)
    budget_usd: float | None = Field(None, gt=0)
    llm_timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds a model may take to answer one request")
    llm_max_tokens: int | None = Field(
        None, ge=16, le=32_768, description="most tokens of one reply (default: 400 for a participant, 600 for the facilitator)"
    )
    structured_output: Literal["auto", "json_schema", "json_object", "off"] = Field(
        "auto", description="how the reply's shape is asked for: auto sends the protocol's JSON schema where it can"
    )
    llm_max_retries: int = Field(3, ge=0, le=10)
    temperature: float = Field(0.0, ge=0, le=2)
    on_llm_failure: Literal["fail", "fallback"] = "fail"
    cost_per_1k_prompt_tokens: float | None = Field(None, ge=0)
    cost_per_1k_completion_tokens: float | None = Field(None, ge=0)

    @field_validator("resources")
    @classmethod
    def _unique_resources(cls, value: list[ResourceSpec]) -> list[ResourceSpec]:
        names = [r.name for r in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"resource names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @field_validator("custom_personalities")
    @classmethod
    def _unique_personalities(cls, value: list[Personality]) -> list[Personality]:
        names = [p.name for p in value]
        for name in dict.fromkeys(names):
            if name in BUILTIN:
                raise ValueError(f"the name {name!r} is taken by a built-in personality; choose another")
            if names.count(name) > 1:
                raise ValueError(f"the name {name!r} is taken: {names.count(name)} personalities have it; choose another")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SimulationConfig:
        if self.min_exchanges > self.max_exchanges:
            raise ValueError(
                f"min_exchanges ({self.min_exchanges}) must not exceed max_exchanges ({self.max_exchanges})"
            )
        known = self.personality_names()
        for name, weight in self.personalities.items():
            if name not in known:
                raise ValueError(f"personalities: unknown personality {name!r}; allowed: {', '.join(known)}")
            if not 0 <= weight <= MAX_PARTICIPANTS:  # also refuses NaN and infinity
                raise ValueError(
                    f"personalities: weight of {name!r} must be from 0 to {MAX_PARTICIPANTS:,} (got {weight:g})"
                )
        if self.roster is None and not sum(self.personalities.values()) > 0:
            raise ValueError("personalities: at least one personality needs a weight above 0")
        for name in self.personality_models:
            if name not in known:
                raise ValueError(f"personality_models: unknown personality {name!r}; allowed: {', '.join(known)}")
        if self.roster is not None:
            self._check_roster(known)
        resources = [r.name for r in self.resources]
        for name in [*self.storable, *self.spoilage]:
            if name not in resources:
                raise ValueError(f"storable/spoilage: unknown resource {name!r}; allowed: {', '.join(resources)}")
        for name, share in self.spoilage.items():
            if not 0 <= share <= 1:  # also refuses NaN
                raise ValueError(f"spoilage: share of {name!r} must be from 0 to 1 (got {share:g})")
        return self

    def _check_roster(self, known: list[str]) -> None:
        assert self.roster is not None
        if len(self.roster) != self.num_participants:
            raise ValueError(
                f"num_participants ({self.num_participants}) must equal the roster's size ({len(self.roster)})"
            )
        if not any(units for member in self.roster for units in member.holdings.values()):
            raise ValueError("roster: every holding is 0; at least one member must hold something to trade")
        resources = {r.name for r in self.resources}
        for row, member in enumerate(self.roster, start=1):
            if member.personality not in known:
                raise ValueError(
                    f"roster row {row}: unknown personality {member.personality!r}; allowed: {', '.join(known)}"
                )
            for field in ("holdings", "needs", "wants", "produces"):
                unknown = sorted(set(getattr(member, field)) - resources)
                if unknown:
                    raise ValueError(
                        f"roster row {row}: {field} name unknown resource {unknown[0]!r}; "
                        f"allowed: {', '.join(sorted(resources))}"
                    )

    def personality_names(self) -> list[str]:
        return list(BUILTIN) + [p.name for p in self.custom_personalities]

    def personality(self, name: str) -> Personality:
        for p in self.custom_personalities:
            if p.name == name:
                return p
        return BUILTIN[name]

    def uses_llm(self) -> bool:
        roster_models = any(m.brain not in (None, "rules") for m in self.roster or [])
        return bool(self.model or self.facilitator_model or self.personality_models or roster_models)


def default(field: str) -> Any:
    """A SimulationConfig field's default: the one definition that `commonpool run --help`, the README and the
    dashboard's New simulation form all show, and that a run without the flag (or field) gets."""
    return SimulationConfig.model_fields[field].get_default(call_default_factory=True)


_PATTERN_WORDS: dict[str, str] = {
    RESOURCE_NAME_PATTERN: "1-40 letters, digits, spaces, - _ or ', starting with a letter or digit",
    RUN_ID_PATTERN: "1-64 letters, digits, . _ or -, starting with a letter or digit",
    Personality.model_fields["name"].metadata[-1].pattern: "a letter, then letters, digits, _ or -",
}


def field_of(loc: tuple[int | str, ...], message: str) -> str:
    """The config field a validation error is about.

    A whole-config rule has no location; its message starts with, or cites,
    the field it is about ("min_exchanges (12) must not exceed ..."), so look
    for the longest field name that it mentions.
    """
    if loc:
        return str(loc[0])
    for field in sorted(SimulationConfig.model_fields, key=len, reverse=True):
        if message.startswith(field) or f"{field} (" in message:
            return field
    return ""


def validation_problems(error: ValidationError) -> list[tuple[str, str]]:
    """Every problem as (config field, one line naming where, what is allowed and what was given).

    The one wording of bad input, shared by the CLI, the dashboard and roster files.
    """
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "string_pattern_mismatch":
            pattern = (item.get("ctx") or {}).get("pattern", "")
            message = "use " + _PATTERN_WORDS.get(pattern, f"text matching {pattern}")
        where = " ".join(f"row {p + 1}" if isinstance(p, int) else str(p) for p in loc)
        given = item.get("input")
        shown = "" if isinstance(given, (dict, list)) or given is None or not loc else f" (got {given!r})"
        problems.append((field_of(loc, message), f"{where}: {message}{shown}" if where else message))
    return problems


def describe_validation_error(error: ValidationError) -> str:
    """The first problem, in one line."""
    return validation_problems(error)[0][1]
