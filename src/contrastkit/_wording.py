"""Small helpers that word the messages people read (errors, warnings, progress lines)."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` with ``noun`` in the number that agrees with it: "1 epoch", "3 epochs".

    Args:
        count: how many.
        noun: the singular noun.
        plural: the plural where it is not ``noun + "s"`` (e.g. "processes").

    Example:
        >>> counted(1, "epoch"), counted(3, "epoch"), counted(2, "process", "processes")
        ('1 epoch', '3 epochs', '2 processes')
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
