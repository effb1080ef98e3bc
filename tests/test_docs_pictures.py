"""The README and RESULTS pictures that are drawn from tracked records (not from running a model) are
redrawn here and must equal the committed files pixel for pixel: a picture cannot drift from its data.
The pictures that run the shipped models are checked by `tests/test_readme.py`."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

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
    for name in ("shapes-uip2p.png", "shapes-elo.png", "shapes-elo-chosen.png"):
        _assert_same_picture(runs / name, ROOT / "docs" / "images" / name)
    committed = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    table = text.split("### UIP2P Table 3")[1].split("Measured by")[0]
    assert table in committed, "RESULTS.md's UIP2P table differs from its tracked runs: run scripts/regenerate-docs.sh"
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- uip2p-summary:start -->\n")[1].split("\n<!-- uip2p-summary:end -->")[0]
    assert block + "\n" == (runs / "readme-summary.md").read_text(), \
        "the README's UIP2P summary differs from its tracked runs: run scripts/regenerate-docs.sh"


def test_uip2p_tables_choose_guidance_on_validation_with_stated_ties():
    """Most successes wins; ties go to more preserved, then to the earlier pair of the grid."""
    tables = _load("uip2p_tables")

    def run(*verdicts):
        return {str(i): {"success": s, "preserved": p} for i, (s, p) in enumerate(verdicts)}

    grid = {(7.5, 1.5): run((1, 1), (0, 0)), (3.0, 1.5): run((1, 0), (1, 0)), (3.0, 3.0): run((1, 1), (1, 1))}
    assert tables.choose_guidance(grid) == (3.0, 3.0)  # 2 successes, 2 preserved against 2 and 0
    grid[(3.0, 3.0)] = run((1, 0), (1, 0))
    assert tables.choose_guidance(grid) == (3.0, 1.5)  # a full tie: the earlier pair
    assert tables.guidance_pair(" 3/1.5") == (3.0, 1.5)
    with pytest.raises(ValueError, match="--guidance-grid takes TEXT/IMAGE guidance pairs such as 3/1.5, got '3:1.5'"):
        tables.guidance_pair("3:1.5")
