"""Argument checks every layer shares (the pipelines, attention, classifier, evaluation and training): a clear
error that names the argument and what was expected, instead of a failure deep inside torch or a silent
NaN. Pure Python and torch, so that any module can import it without a cycle."""

from __future__ import annotations

import math

import torch


def check_number(value, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False, optional: bool = False) -> None:
    """``value`` is a finite number (an int where ``integer``) in the given range, or a clear error."""
    if value is None and optional:
        return
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not (isinstance(value, int) or float(value).is_integer())):
        raise TypeError(f"`{name}` must be {kind}, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    if low is not None and (value <= low if low_open else value < low) or high is not None and value > high:
        if high is None:
            bounds = f"{'>' if low_open else '≥'} {low}"
        elif low is None:
            bounds = f"≤ {high}"
        else:
            bounds = f"in {'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"`{name}` must be {bounds}, got {value!r}.")


def check_finite(tensor, name: str) -> None:
    if tensor is not None and not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")


def check_text(value, name: str) -> None:
    """A str with at least one letter or digit in it."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a str, got {type(value).__name__}.")
    if not any(character.isalnum() for character in value):
        raise ValueError(f"`{name}` must contain a word, got {value!r}.")
