"""A claim's verdict on a run: whether it holds, how far its value is from its bound (the margin), and
what each seed on its own says (the seed spread), so a reader sees when a claim holds by luck.

The margin is in the bound's units and signed so that positive is inside: a bound `max: 0.03` on a largest
|bootstrap error| of 0.021 has a margin of +0.9 points; a rank correlation of 0.78 against `≥ 0.8` has
-0.02. A claim with several bounds has one margin per bound. The seed spread is the claim evaluated on each
seed's trials alone (its Real World trials, Ideal World trials and pairs of that seed): its margins there,
and in how many seeds it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

WORDS = {True: "holds", False: "FAILS", None: "not checkable"}


@dataclass
class Margin:
    """How far a claim's value is from one of its bounds, positive inside."""

    name: str  # which bound, when the claim has several ('train error'); '' when it has one
    value: float  # in the bound's units (NaN: undefined, e.g. a ratio to zero)
    show: Callable[[float], str]  # the signed value in words: '+0.9 points', '+12 steps', '-0.020'

    def text(self) -> str:
        shown = "undefined" if self.value != self.value else self.show(self.value)
        return f"{self.name} {shown}" if self.name else shown


class NotCheckable(Exception):
    """A claim that cannot be checked on this run (missing trials, pairs or values): the message says why."""


@dataclass
class Outcome:
    """What a claim's check returns (claims.py): the numbers behind the verdict, whether it holds, the margins."""

    evidence: str
    holds: bool
    margins: list[Margin]  # one per bound: how far inside it


@dataclass
class Verdict:
    claim: str  # the claim in words
    evidence: str  # the numbers behind it
    holds: bool | None  # None: not checkable on this run (missing trials, pairs or values; the evidence says which)
    margins: list[Margin] = field(default_factory=list)  # one per bound (none when not checkable)
    seeds: dict = field(default_factory=dict)  # seed -> the Verdict on that seed's trials alone

    @property
    def word(self) -> str:
        return WORDS[self.holds]

    def spread(self) -> str:
        """'margin +0.9 points; each seed alone: seed 0 +1.2 points, seed 1 -0.4 points (FAILS): holds in 1
        of 2' ('' when not checkable)."""
        if self.holds is None:
            return ""
        parts = [("margin " if len(self.margins) == 1 else "margins: ") + ", ".join(m.text() for m in self.margins)] \
            if self.margins else []
        if len(self.seeds) > 1:
            alone = "; ".join(f"seed {s} {_alone(v)}" for s, v in self.seeds.items())
            held = sum(v.holds is True for v in self.seeds.values())
            parts.append(f"each seed alone: {alone}: holds in {held} of {len(self.seeds)}")
        return "; ".join(parts)

    def line(self) -> str:
        """The report's line: the claim, its evidence, and its verdict with margin and seed spread."""
        spread = self.spread()
        return f"{self.claim}: {self.evidence}: {self.word}" + (f" ({spread})" if spread else "")

    def check_line(self) -> str:
        """`report --check`'s line (after '[claim] '): the verdict first, aligned, then the same."""
        spread = self.spread()
        return f"{self.word:>11}: {self.claim} ({self.evidence})" + (f"; {spread}" if spread else "")


def _alone(v: Verdict) -> str:
    if v.holds is None:
        return "not checkable"
    margins = ", ".join(m.text() for m in v.margins)
    return (margins or v.word) + (" (FAILS)" if v.holds is False and margins else "")
