"""Line charts on a log-scale y axis, drawn with Pillow (the benchmarks' pictures; no plotting dependency)."""

from __future__ import annotations

import math
from pathlib import Path

import PIL.Image
import PIL.ImageDraw


def log_line_chart(curves: dict[str, tuple[list[float], list[float]]], colours: dict[str, tuple], title: str,
                   x_label: str, path: Path, levels: dict[str, float] | None = None,
                   size: tuple[int, int] = (560, 320)) -> None:
    """``curves``: label → (xs, ys > 0), one line each; ``levels``: label → y, drawn as dotted horizontal lines
    (a bar, a reference model). Decades label the y axis; the legend sits top left in each line's colour."""
    width, height = size
    left, top, bottom, right = 60, 30, 40, 20
    image = PIL.Image.new("RGB", (width, height), "white")
    draw = PIL.ImageDraw.Draw(image)
    levels = levels or {}
    values = [math.log10(y) for _, ys in curves.values() for y in ys] + [math.log10(y) for y in levels.values()]
    lo, hi = math.floor(min(values)), math.ceil(max(values))
    hi = hi if hi > lo else lo + 1
    x_lo = min(min(xs) for xs, _ in curves.values())
    x_hi = max(max(xs) for xs, _ in curves.values())
    x_span = (x_hi - x_lo) or 1
    x_of = lambda x: left + (x - x_lo) / x_span * (width - left - right)  # noqa: E731
    y_of = lambda v: top + (hi - v) / (hi - lo) * (height - top - bottom)  # noqa: E731
    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black")
    for decade in range(lo, hi + 1):
        draw.text((5, y_of(decade) - 5), f"1e{decade}", fill="black")
        draw.line([(left - 4, y_of(decade)), (left, y_of(decade))], fill="black")
    draw.text((left, height - bottom + 8), x_label, fill="black")
    draw.text((left, 8), title, fill="black")
    legend = 0
    for label, y in levels.items():
        colour = colours.get(label, (128, 128, 128))
        for x in range(left, width - right, 8):
            draw.line([(x, y_of(math.log10(y))), (x + 3, y_of(math.log10(y)))], fill=colour)
        draw.text((width - right - 7 * len(label), y_of(math.log10(y)) - 12), label, fill=colour)
    for label, (xs, ys) in curves.items():
        colour = colours.get(label, (0, 0, 0))
        points = [(x_of(x), y_of(math.log10(y))) for x, y in zip(xs, ys, strict=True)]
        draw.line(points, fill=colour, width=2) if len(points) > 1 else draw.ellipse(
            [points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
        draw.text((left + 10, top + 5 + 14 * legend), label, fill=colour)
        legend += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
