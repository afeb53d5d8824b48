"""Numbered instances of a logical host: which N-courier.push.apple.com to dial next.

Devices pick a courier number at random; a probe that always dialled the same one would miss a
filter or a dead edge behind the others. Each target walks its numbers in order from a random
start, so every number is dialled once per len(numbers) runs and two probes do not move in step.
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable, Sequence

_SPAN = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
MAX_NUMBERS = 1000  # a range is written by hand; more than this is a typo


def parse_numbers(value: object) -> tuple[int, ...]:
    """ "1-50", "1-3, 7", 5, or a list of integers -> sorted unique numbers; ValueError if not."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    numbers: set[int] = set()
    if isinstance(value, str):
        for part in value.split(","):
            match = _SPAN.fullmatch(part)
            if not match:
                raise ValueError(f"must be numbers such as 1-50 or 1-3,7, got {value!r}")
            low, high = int(match[1]), int(match[2] or match[1])
            if low > high:
                raise ValueError(f"{part.strip()!r} runs backwards")
            if high - low >= MAX_NUMBERS:
                raise ValueError(f"{part.strip()!r} is more than {MAX_NUMBERS} numbers")
            numbers.update(range(low, high + 1))
    elif isinstance(value, list) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in value
    ):
        numbers.update(value)
    else:
        raise ValueError(f"must be numbers such as 1-50 or a list of integers, got {value!r}")
    if not numbers or len(numbers) > MAX_NUMBERS or min(numbers) < 0:
        raise ValueError(f"must be 1 to {MAX_NUMBERS} numbers >= 0")
    return tuple(sorted(numbers))


def numbered(number: int, host: str) -> str:
    """The host a device dials for instance `number`: 7, courier.push.apple.com -> 7-courier..."""
    return f"{number}-{host}"


class Rotation:
    """Per-target position in its numbers; one instance lives as long as the probe."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._next: dict[Hashable, int] = {}

    def next(self, key: Hashable, numbers: Sequence[int]) -> int:
        index = self._next.get(key)
        if index is None:
            index = self._rng.randrange(len(numbers))
        self._next[key] = (index + 1) % len(numbers)
        return numbers[index % len(numbers)]
