"""A tiny seeded random number generator whose whole state is one integer.

The paper broker must continue identically after its file is closed and reopened, so
its randomness has to be stored with the rest of its state. SplitMix64 (Steele, Lea and
Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014) keeps a single
64-bit counter: persisting it is writing one integer, and its output does not depend on
the Python version (unlike `random.Random`, whose methods may change between releases).
It is not for cryptography; it makes a simulation reproducible.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PPM", "SplitMix64", "derive_seed", "ppm"]

_MASK: Final = (1 << 64) - 1
_GOLDEN_GAMMA: Final = 0x9E3779B97F4A7C15

PPM: Final = 1_000_000
"""Probabilities are compared in parts per million, as integers: no float arithmetic."""


def _mix(z: int) -> int:
    """SplitMix64's output function: a bijection of 64-bit integers that scatters bits."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def derive_seed(seed: int, stream: str) -> int:
    """An independent generator state for one named stream of a seed.

    The market and the fault injector draw from separate streams, so turning faults on
    or off never changes the market's prices or fills.
    """
    state = seed & _MASK
    for byte in stream.encode():
        state = _mix(((state ^ byte) + _GOLDEN_GAMMA) & _MASK)
    return state


def ppm(probability: float) -> int:
    """A probability in [0, 1] as parts per million (rounded half-even)."""
    return round(probability * PPM)


class SplitMix64:
    """SplitMix64: `state` is the whole generator; store it and the sequence continues."""

    __slots__ = ("state",)

    def __init__(self, state: int) -> None:
        """Continue the sequence from `state` (a stored state or a `derive_seed`)."""
        self.state = state & _MASK

    def next64(self) -> int:
        """The next 64-bit output."""
        self.state = (self.state + _GOLDEN_GAMMA) & _MASK
        return _mix(self.state)

    def below(self, n: int) -> int:
        """A uniform integer in [0, n), unbiased (rejection sampling)."""
        if n <= 0:
            msg = f"below() needs n > 0, got {n}"
            raise ValueError(msg)
        # Reject the top partial block of 2**64 so every residue is equally likely.
        limit = ((_MASK + 1) // n) * n
        while True:
            x = self.next64()
            if x < limit:
                return x % n

    def between(self, low: int, high: int) -> int:
        """A uniform integer in [low, high], both ends included."""
        return low + self.below(high - low + 1)

    def chance(self, parts_per_million: int) -> bool:
        """True with probability `parts_per_million` / 1,000,000; always draws once."""
        return self.below(PPM) < parts_per_million
