"""JSON that strict parsers read: Python's ``json`` writes ``Infinity`` and ``NaN``, which are not JSON.

A non-finite number becomes ``null`` and its dict gains ``<key>_reason`` saying what it was (a PSNR of
identical images is +inf; a figure over no pixels is NaN), so nothing is lost and nothing is guessed."""

from __future__ import annotations

import json
import math

REASONS = {math.inf: "+inf (no error at all: identical inputs)", -math.inf: "-inf", "nan": "NaN (undefined)"}


def _reason(value: float) -> str:
    return REASONS["nan"] if math.isnan(value) else REASONS[value]


def _not_finite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def strict(value):
    """``value`` with every non-finite float replaced by None, and a ``<key>_reason`` beside it in dicts."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if _not_finite(item):
                out[key], out[f"{key}_reason"] = None, _reason(item)
            elif isinstance(item, (list, tuple)) and any(_not_finite(x) for x in item):
                out[key] = [None if _not_finite(x) else strict(x) for x in item]
                out[f"{key}_reason"] = {str(i): _reason(x) for i, x in enumerate(item) if _not_finite(x)}
            else:
                out[key] = strict(item)
        return out
    if isinstance(value, (list, tuple)):
        return [None if _not_finite(x) else strict(x) for x in value]
    return None if _not_finite(value) else value


def dumps(value, **kwargs) -> str:
    """`json.dumps` of `strict` ``value``; refuses (ValueError) anything still not finite."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)
