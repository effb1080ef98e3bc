"""Elo as in the UIP2P supplement §3: worked examples, draws, order-shuffled intervals, table and plot."""

import random

import numpy as np
import PIL.Image
import pytest

from diffusers_uip2p.evaluation.elo import (
    elo_confidence,
    elo_ratings,
    expected_score,
    leaderboard_markdown,
    plot_elo,
    vote_score,
)


def simulated_votes(count=400, seed=0):
    """Votes between four models of clearly different strength (Bradley–Terry), 10% draws."""
    strength = {"UIP2P": 8.0, "MagicBrush": 3.0, "IP2P": 1.0, "HIVE": 0.3}
    rng = random.Random(seed)
    votes = []
    for _ in range(count):
        a, b = rng.sample(sorted(strength), 2)
        r = rng.random()
        votes.append((a, b, "draw" if r < 0.1 else "a" if r < 0.1 + 0.9 * strength[a] / (strength[a] + strength[b])
                      else "b"))
    return votes


def test_expected_score():
    assert expected_score(1500, 1500) == 0.5
    assert expected_score(1900, 1500) == pytest.approx(10 / 11)  # 400 points: 10 times more likely to win
    assert expected_score(1500, 1900) + expected_score(1900, 1500) == pytest.approx(1)


def test_supplement_worked_example():
    assert elo_ratings([("A", "B", "a")]) == {"A": 1516.0, "B": 1484.0}
    assert elo_ratings([("A", "B", "b")]) == {"A": 1484.0, "B": 1516.0}
    assert elo_ratings([("A", "B", 1.0)]) == {"A": 1516.0, "B": 1484.0}
    assert elo_ratings([("A", "B", "a")], k=16, initial=1000) == {"A": 1008.0, "B": 992.0}


def test_draws():
    assert elo_ratings([("A", "B", "draw")]) == {"A": 1500.0, "B": 1500.0}
    # After A beats B (1516 vs 1484), a draw moves them toward each other by K (0.5 − E_A).
    ratings = elo_ratings([("A", "B", "a"), ("B", "A", "draw")])
    move = 32 * (0.5 - expected_score(1516, 1484))
    assert ratings["A"] == pytest.approx(1516 + move) and ratings["B"] == pytest.approx(1484 - move)
    assert 1500 < ratings["A"] < 1516 and 1484 < ratings["B"] < 1500
    assert vote_score("draw") == vote_score(0.5) == 0.5


def test_ratings_are_zero_sum():
    ratings = elo_ratings(simulated_votes())
    assert sum(ratings.values()) == pytest.approx(1500 * len(ratings))


def test_bad_votes():
    with pytest.raises(ValueError, match="outcome"):
        elo_ratings([("A", "B", "win")])
    with pytest.raises(ValueError, match="outcome"):
        elo_ratings([("A", "B", 2)])
    with pytest.raises(ValueError, match="two different models"):
        elo_ratings([("A", "A", "a")])
    with pytest.raises(ValueError, match=r"\(model_a, model_b, outcome\)"):
        elo_ratings([("A", "B")])
    with pytest.raises(ValueError, match="empty"):
        elo_ratings([])


def test_confidence_over_shuffled_orders():
    votes = simulated_votes()
    result = elo_confidence(votes, num_orders=200, seed=0)
    assert [e.model for e in result.estimates] == ["UIP2P", "MagicBrush", "IP2P", "HIVE"]
    single = elo_ratings(votes)
    for e in result.estimates:
        assert e.rating == pytest.approx(single[e.model])
        assert e.low <= e.mean <= e.high
        assert e.low <= e.rating <= e.high
    assert sum(e.votes for e in result.estimates) == 2 * len(votes)
    assert sum(e.score for e in result.estimates) == pytest.approx(len(votes))
    # Reproducible for a seed; a smaller K makes the ratings less sensitive to the order: narrower intervals.
    assert elo_confidence(votes, num_orders=200, seed=0) == result
    narrow = {e.model: e.high - e.low for e in elo_confidence(votes, num_orders=200, k=8).estimates}
    assert all(narrow[e.model] < e.high - e.low for e in result.estimates)


def test_order_free_votes_have_a_zero_width_interval():
    # Only draws between equals: every order leaves everyone at 1500. Identical votes: every order is the same.
    result = elo_confidence([("A", "B", "draw"), ("B", "C", "draw"), ("C", "A", "draw")] * 5, num_orders=50)
    assert all(e.rating == e.mean == e.low == e.high == 1500 for e in result.estimates)
    repeated = elo_confidence([("A", "B", "a")] * 10, num_orders=20)
    assert all(e.low == pytest.approx(e.high) == pytest.approx(e.rating) for e in repeated.estimates)
    with pytest.raises(ValueError, match="num_orders"):
        elo_confidence([("A", "B", "a")], num_orders=0)


def test_leaderboard_and_plot(tmp_path):
    result = elo_confidence(simulated_votes(), num_orders=100)
    table = leaderboard_markdown(result)
    lines = table.splitlines()
    assert lines[0].startswith("| Rank | Model | Elo (mean of 100 orders) | 95% interval")
    assert lines[2].startswith("| 1 | UIP2P |") and lines[5].startswith("| 4 | HIVE |")
    assert "K = 32" in table and "initial 1500" in table
    path = plot_elo(result, tmp_path / "plots" / "elo.png")
    image = np.asarray(PIL.Image.open(path).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 400
    assert (image == [70, 110, 200]).all(-1).any()  # interval bars
    assert (image == [20, 40, 120]).all(-1).any()  # mean dots
