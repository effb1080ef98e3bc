"""Elo ratings from pairwise human votes, as UIP2P ranks editing methods (supplement §3).

Every model starts at 1500; after each vote R'_A = R_A + K (S_A − E_A) with K = 32,
E_A = 1 / (1 + 10^((R_B − R_A)/400)) and S_A = 1 for a win, 0 for a loss, 0.5 for a draw (B symmetrically,
so every vote moves the two ratings by opposite amounts). A single pass depends on the order of the
votes, so :func:`elo_confidence` also reports the mean and a percentile interval over many shuffled
orders; :func:`leaderboard_markdown` and :func:`plot_elo` present them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

INITIAL_RATING = 1500.0
K_FACTOR = 32.0
_OUTCOMES = {"a": 1.0, "b": 0.0, "draw": 0.5}


def expected_score(rating_a: float, rating_b: float) -> float:
    """E_A: the probability that A beats B (a 400-point lead means 10:1 odds)."""
    return 1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / 400.0))


def vote_score(outcome: str | float) -> float:
    """S_A of one vote: ``"a"`` → 1, ``"b"`` → 0, ``"draw"`` → 0.5, or a number in [0, 1] taken as is."""
    if isinstance(outcome, str):
        if outcome not in _OUTCOMES:
            raise ValueError(f"a vote's outcome must be 'a', 'b', 'draw' or a score in [0, 1], got {outcome!r}")
        return _OUTCOMES[outcome]
    if isinstance(outcome, bool) or not isinstance(outcome, (int, float)) or not 0 <= outcome <= 1:
        raise ValueError(f"a vote's outcome must be 'a', 'b', 'draw' or a score in [0, 1], got {outcome!r}")
    return float(outcome)


def _parse_votes(votes: Iterable[Sequence]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(models in order of first appearance, index of A, index of B, S_A) per vote."""
    models: dict[str, int] = {}
    a_idx, b_idx, scores = [], [], []
    for number, vote in enumerate(votes):
        if isinstance(vote, str) or len(vote) != 3:
            raise ValueError(f"vote {number} must be (model_a, model_b, outcome), got {vote!r}")
        model_a, model_b, outcome = vote
        if not isinstance(model_a, str) or not isinstance(model_b, str) or model_a == model_b:
            raise ValueError(f"vote {number} must compare two different models named by strings, got {vote!r}")
        a_idx.append(models.setdefault(model_a, len(models)))
        b_idx.append(models.setdefault(model_b, len(models)))
        scores.append(vote_score(outcome))
    if not scores:
        raise ValueError("votes is empty: Elo needs at least one vote")
    return list(models), np.array(a_idx), np.array(b_idx), np.array(scores, dtype=np.float64)


def _run(a_idx, b_idx, scores, orders: np.ndarray, num_models: int, k: float, initial: float) -> np.ndarray:
    """Final ratings [len(orders), num_models], every row playing the votes in its own order."""
    ratings = np.full((len(orders), num_models), initial, dtype=np.float64)
    rows = np.arange(len(orders))
    for step in range(orders.shape[1]):
        vote = orders[:, step]
        a, b, s = a_idx[vote], b_idx[vote], scores[vote]
        change = k * (s - 1.0 / (1.0 + 10.0 ** ((ratings[rows, b] - ratings[rows, a]) / 400.0)))
        ratings[rows, a] += change
        ratings[rows, b] -= change
    return ratings


def elo_ratings(votes: Iterable[Sequence], k: float = K_FACTOR, initial: float = INITIAL_RATING) -> dict[str, float]:
    """Ratings after one pass over ``votes`` ((model_a, model_b, outcome) in the order given), keyed by
    model in order of first appearance."""
    models, a_idx, b_idx, scores = _parse_votes(votes)
    ratings = _run(a_idx, b_idx, scores, np.arange(len(scores))[None], len(models), k, initial)[0]
    return dict(zip(models, ratings.tolist(), strict=True))


@dataclass(frozen=True)
class EloEstimate:
    """One model's rating: ``rating`` from the votes in their given order; ``mean``, ``low`` and ``high``
    over shuffled orders; ``votes`` it took part in and ``score`` (points won: wins + draws / 2)."""

    model: str
    rating: float
    mean: float
    low: float
    high: float
    votes: int
    score: float


@dataclass(frozen=True)
class EloResult:
    """Estimates sorted by mean rating (best first), with the settings that produced them."""

    estimates: list[EloEstimate]
    num_votes: int
    num_orders: int
    level: float
    seed: int
    k: float
    initial: float

    def to_dict(self) -> dict:
        return asdict(self)


def elo_confidence(votes: Iterable[Sequence], num_orders: int = 1000, seed: int = 0, level: float = 0.95,
                   k: float = K_FACTOR, initial: float = INITIAL_RATING) -> EloResult:
    """Elo over ``num_orders`` random orders of the votes: per model the single-pass rating, the mean, and
    the central ``level`` percentile interval of the final ratings. Reproducible for a given ``seed``."""
    if num_orders < 1:
        raise ValueError(f"num_orders must be at least 1, got {num_orders}")
    if not 0 < level <= 1:
        raise ValueError(f"level must lie in (0, 1], got {level}")
    models, a_idx, b_idx, scores = _parse_votes(votes)
    single = _run(a_idx, b_idx, scores, np.arange(len(scores))[None], len(models), k, initial)[0]
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(len(scores)) for _ in range(num_orders)])
    shuffled = _run(a_idx, b_idx, scores, orders, len(models), k, initial)
    low, high = np.quantile(shuffled, [(1 - level) / 2, (1 + level) / 2], axis=0)
    estimates = []
    for i, model in enumerate(models):
        as_a, as_b = a_idx == i, b_idx == i
        estimates.append(EloEstimate(model, float(single[i]), float(shuffled[:, i].mean()), float(low[i]),
                                     float(high[i]), int(as_a.sum() + as_b.sum()),
                                     float(scores[as_a].sum() + (1 - scores[as_b]).sum())))
    estimates.sort(key=lambda e: -e.mean)
    return EloResult(estimates, len(scores), num_orders, level, seed, k, initial)


def leaderboard_markdown(result: EloResult) -> str:
    """A Markdown table: rank, model, mean Elo with its interval, single-pass Elo, votes and win rate."""
    percent = f"{result.level * 100:g}%"
    lines = [f"| Rank | Model | Elo (mean of {result.num_orders} orders) | {percent} interval | Elo (votes in order) "
             "| Votes | Score |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for rank, e in enumerate(result.estimates, 1):
        lines.append(f"| {rank} | {e.model} | {e.mean:.1f} | {e.low:.1f} – {e.high:.1f} | {e.rating:.1f} "
                     f"| {e.votes} | {e.score / e.votes:.1%} |")
    lines.append("")
    lines.append(f"Elo: initial {result.initial:g}, K = {result.k:g}, E_A = 1/(1 + 10^((R_B − R_A)/400)), draws "
                 f"score 0.5 (UIP2P supplement §3); {result.num_votes} votes; interval over shuffled vote orders "
                 f"(seed {result.seed}). Score = points won per vote.")
    return "\n".join(lines) + "\n"


def _tick_step(span: float, max_ticks: int = 8) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if span / step <= max_ticks:
            return float(step)
    return 10 ** np.ceil(np.log10(span / max_ticks))


def plot_elo(result: EloResult, path: str | Path, title: str | None = None) -> Path:
    """A PNG with one row per model (best on top): the interval as a bar with caps, the mean as a dot and
    the single-pass rating as a tick. Drawn with Pillow, so no plotting library is needed."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    heading = title or (f"Elo: mean (dot) and {result.level * 100:g}% interval over {result.num_orders} vote "
                        "orders; red tick: votes in order")
    label_width = max(font.getlength(e.model) for e in result.estimates) + 20
    row, top, plot_width = 30, 50, 480
    width = int(max(label_width + plot_width + 30, font.getlength(heading) + 20))
    image = Image.new("RGB", (width, top + row * len(result.estimates) + 50), "white")
    draw = ImageDraw.Draw(image)
    values = [v for e in result.estimates for v in (e.low, e.high, e.rating)]
    pad = max(10.0, (max(values) - min(values)) * 0.08)
    lo, hi = min(values) - pad, max(values) + pad

    def x_of(value: float) -> float:
        return label_width + (value - lo) / (hi - lo) * plot_width

    def text(x: float, y: float, string: str, align: str) -> None:
        """Draw ``string`` with its right edge ("right") or its centre ("centre") at x, vertically centred at y."""
        left, upper, right, lower = draw.textbbox((0, 0), string, font=font)
        shift = right - left if align == "right" else (right - left) / 2
        draw.text((x - shift - left, y - (upper + lower) / 2), string, fill="black", font=font)

    step = _tick_step(hi - lo)
    axis_y = top + row * len(result.estimates) + 5
    draw.line([(label_width, axis_y), (label_width + plot_width, axis_y)], fill="black")
    for tick in np.arange(np.ceil(lo / step) * step, hi, step):
        x = x_of(tick)
        draw.line([(x, top - 5), (x, axis_y)], fill=(225, 225, 225))
        draw.line([(x, axis_y), (x, axis_y + 4)], fill="black")
        text(x, axis_y + 14, f"{tick:g}", "centre")
    for i, e in enumerate(result.estimates):
        y = top + row * i + row // 2
        text(label_width - 10, y, e.model, "right")
        draw.line([(x_of(e.low), y), (x_of(e.high), y)], fill=(70, 110, 200), width=3)
        for end in (e.low, e.high):
            draw.line([(x_of(end), y - 6), (x_of(end), y + 6)], fill=(70, 110, 200), width=2)
        draw.line([(x_of(e.rating), y - 9), (x_of(e.rating), y + 9)], fill=(200, 60, 60), width=2)
        draw.ellipse([x_of(e.mean) - 5, y - 5, x_of(e.mean) + 5, y + 5], fill=(20, 40, 120))
    draw.text((10, 15), heading, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
