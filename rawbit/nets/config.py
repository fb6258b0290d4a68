"""What every network configuration shares: a frozen dataclass that round-trips through the JSON of
presets and weights files (lists there, tuples here, so configs stay hashable and comparable)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TypeVar

C = TypeVar("C", bound="NetConfig")


class NetConfig:
    """Mixin for a frozen dataclass of plain fields."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict) -> C:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
