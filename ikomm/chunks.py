"""One helper: a list in slices of at most a given size (Python 3.11 has no itertools.batched)."""

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """items in consecutive slices of at most size, in order; nothing for an empty sequence."""
    if size < 1:
        raise ValueError(f"chunks: size must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
