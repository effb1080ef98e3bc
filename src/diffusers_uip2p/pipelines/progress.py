"""Labelled progress bars: a pipeline that runs several loops in one call (inversion then sampling, k
candidates each edited forward and back) says which one each bar is, after the caller's own description
(``set_progress_bar_config(desc=...)``)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_label(pipe, label: str):
    """Bars opened inside show ``"<desc> · <label>"`` (or ``label`` alone); the caller's config comes back."""
    config = dict(getattr(pipe, "_progress_bar_config", {}))
    base = config.get("desc")
    pipe._progress_bar_config = {**config, "desc": f"{base} · {label}" if base else label}
    try:
        yield
    finally:
        pipe._progress_bar_config = config
