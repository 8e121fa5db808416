"""Personalities are trait presets: every brain runs the same code on these numbers.

A trait changes *how much*, never *which branch*: a cautious and a strategic
participant differ only in the values below. Users add their own presets (a
name, traits, and free text that LLM brains read).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Traits(BaseModel):
    """The knobs of a negotiator (see the README's Model section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aspiration: float = Field(
        0.5, ge=0.0, le=1.0, description="share of the joint gain it asks for when it proposes"
    )
    concession: float = Field(
        0.1, ge=0.0, le=1.0, description="how much its asked share drops with each proposal it makes"
    )
    min_gain: float = Field(
        0.0,
        ge=-5.0,
        le=5.0,
        description="least change in its own utility it accepts (negative: tolerates a loss)",
    )
    altruism: float = Field(
        0.0, ge=0.0, le=2.0, description="weight on the partner's gain when judging a swap"
    )
    anchoring: float = Field(
        0.5, ge=0.0, le=5.0, description="pull of the facilitator's suggested rate on its proposals"
    )
    memory: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="how much a partner's record of accepting raises what it asks of them",
    )
    max_units: int = Field(4, ge=1, le=8, description="most units of one resource it moves in one swap")



def trait_meaning(trait: str, value: float) -> str:
    """What a trait's value makes a rules negotiator do, in one sentence (brains/rules.py)."""
    if trait == "aspiration":
        return f"Opens by asking for {value:.0%} of the joint gain."
    if trait == "concession":
        if value == 0:
            return "Never lowers what it asks."
        return f"Asks {value * 100:.0f} points less of the joint gain with each proposal it makes."
    if trait == "min_gain":
        if value > 0:
            return f"Accepts only a swap that raises its own utility by at least {value:g}."
        if value < 0:
            return f"Accepts a swap that lowers its own utility by up to {-value:g}."
        return "Accepts any swap that does not lower its own utility."
    if trait == "altruism":
        if value == 0:
            return "Counts only its own gain."
        if value == 1:
            return "Counts the partner's gain as much as its own."
        return f"Counts the partner's gain at {value:g} times its own."
    if trait == "anchoring":
        if value == 0:
            return "Ignores the facilitator's suggested rate."
        return f"Leans toward the facilitator's suggested rate, with weight {value:g} on a scale of 0 to 5."
    if trait == "memory":
        if value == 0:
            return "Asks the same of every partner, whatever their record."
        return (f"Asks up to {value * 50:.0f} points more of a partner who always accepts, "
                "and less of one who never does.")
    if trait == "max_units":
        n = int(value)
        return f"Moves at most {n} unit{'s' if n != 1 else ''} of a resource in one swap."
    raise ValueError(f"unknown trait {trait!r}; traits are {sorted(Traits.model_fields)}")


class Personality(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    traits: Traits = Traits()
    description: str = Field("", max_length=2000, description="free text for LLM brains")


BUILTIN: dict[str, Personality] = {
    p.name: p
    for p in (
        Personality(
            name="cautious",
            traits=Traits(
                aspiration=0.6, concession=0.05, min_gain=0.05, altruism=0.0, anchoring=1.0, max_units=2
            ),
            description="Demands a clear gain from every swap and moves in small steps.",
        ),
        Personality(
            name="generous",
            traits=Traits(
                aspiration=0.35, concession=0.1, min_gain=-0.3, altruism=1.0, anchoring=0.5, max_units=4
            ),
            description="Happy to take a small loss when the partner gains more.",
        ),
        Personality(
            name="strategic",
            traits=Traits(
                aspiration=0.85, concession=0.04, min_gain=0.0, altruism=0.0, anchoring=0.2, memory=0.3,
                max_units=4,
            ),
            description="Opens high, concedes slowly, and pushes harder on partners known to give in.",
        ),
    )
}
