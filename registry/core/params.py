"""Registry deployment parameters (the contract's `Params` struct), with named presets.

Durations are in blocks. Attestations are commit-reveal: `commit_period` blocks after the seed block for
commitments, then `reveal_period` blocks for reveals (earlier once every member has committed).

`default` suits a public chain with ~12 s blocks; `dev` suits local chains where
tests and demos mine blocks on demand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

ETHER = 10**18


@dataclass(frozen=True)
class RegistryParams:
    training_bond: int = ETHER // 10
    inference_bond: int = ETHER // 20
    challenge_bond: int = ETHER // 20
    verifier_stake: int = ETHER
    challenge_window: int = 7200  # ~1 day
    seed_delay: int = 2
    commit_period: int = 300  # ~1 hour: committee members commit to their verdicts
    reveal_period: int = 300  # ~1 hour: then they reveal them
    exit_delay: int = 50_400  # ~1 week
    committee_size: int = 3
    quorum: int = 2
    samples: int = 8
    minority_slash_bps: int = 1000
    silent_slash_bps: int = 500
    verifier_reward_bps: int = 2000

    def as_tuple(self) -> tuple[int, ...]:
        """ABI order of the contract's `Params` struct."""
        return tuple(getattr(self, f.name) for f in fields(self))

    @classmethod
    def from_tuple(cls, values: tuple[int, ...] | list[int]) -> RegistryParams:
        return cls(*(int(v) for v in values))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryParams:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown registry parameter(s): {', '.join(sorted(unknown))}")
        return cls(**{k: int(v) for k, v in data.items()})

    def with_overrides(self, **overrides: int | None) -> RegistryParams:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: dict[str, RegistryParams] = {
    "default": RegistryParams(),
    "dev": RegistryParams(challenge_window=200, commit_period=40, reveal_period=20, exit_delay=100),
}


def preset(name: str) -> RegistryParams:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown parameter preset {name!r} (known: {', '.join(PRESETS)})") from None
