"""The README and RESULTS pictures that are drawn from tracked records (not from running a model) are
redrawn here and must equal the committed files pixel for pixel: a picture cannot drift from its data.
The pictures that run the shipped models are checked by `tests/test_readme.py`."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import PIL.Image

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_same_picture(drawn: Path, committed: Path) -> None:
    a, b = (np.asarray(PIL.Image.open(p).convert("RGB")) for p in (drawn, committed))
    assert a.shape == b.shape, f"{committed.name}: drawn {a.shape}, committed {b.shape}"
    assert (a != b).sum() == 0, f"{committed.name} differs from what its records draw: run scripts/regenerate-docs.sh"


def test_health_curves_match_their_tracked_logs(tmp_path):
    _load("training_curves").main(["--from-results", "--pictures", str(tmp_path)])
    for name in ("health-erc.png", "health-ip2p.png"):
        _assert_same_picture(tmp_path / name, ROOT / "docs" / "images" / name)


def test_uip2p_table_pictures_and_text_match_their_tracked_runs(tmp_path):
    runs = tmp_path / "shapes-tables"
    shutil.copytree(ROOT / "benchmarks" / "results" / "shapes-tables", runs)
    text = _load("shapes_tables").main(["--sections", "uip2p", "--from-runs", "--runs", str(runs), "--no-write"])
    for name in ("shapes-uip2p.png", "shapes-elo.png"):
        _assert_same_picture(runs / name, ROOT / "docs" / "images" / name)
    committed = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    table = text.split("### UIP2P Table 3")[1].split("![Elo]")[0]
    assert table in committed, "RESULTS.md's UIP2P table differs from its tracked runs: run scripts/regenerate-docs.sh"
