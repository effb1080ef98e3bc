"""The README's quoted command outputs and their pictures are what the shipped models produce today
(`scripts/readme_outputs.py` regenerates them)."""

import importlib.util
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_outputs", ROOT / "scripts" / "readme_outputs.py")
readme_outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_outputs)


@pytest.mark.parametrize("name", sorted(readme_outputs.BLOCKS))
def test_readme_quotes_what_the_command_prints(name, tmp_path):
    text, grid = readme_outputs.run_block(name, tmp_path)
    assert readme_outputs.quoted(readme_outputs.README.read_text(), name) == text, (
        f"README.md's `{name}` output is stale: run `.venv/bin/python scripts/readme_outputs.py`.")
    shipped = np.asarray(PIL.Image.open(readme_outputs.BLOCKS[name][2]).convert("RGB"), dtype=np.int16)
    fresh = np.asarray(PIL.Image.open(grid).convert("RGB"), dtype=np.int16)
    assert shipped.shape == fresh.shape
    assert np.abs(shipped - fresh).max() <= 2, f"{readme_outputs.BLOCKS[name][2]} is stale"  # thread-count rounding


def test_readme_blocks_are_found_and_replaced():
    readme = "intro\n<!-- output: x -->\n```\nold\ntext\n```\nafter\n"
    assert readme_outputs.quoted(readme, "x") == "old\ntext"
    assert readme_outputs.with_block(readme, "x", "new") == "intro\n<!-- output: x -->\n```\nnew\n```\nafter\n"
    with pytest.raises(ValueError, match="no `<!-- output: y -->`"):
        readme_outputs.quoted(readme, "y")


def test_readme_code_blocks_are_closed():
    """A fence inside a block closes it and carries no language: "```python" there means a block was left
    open (the auto-edit output once ran into the Python example below it)."""
    inside = False
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), start=1):
        if line.startswith("```"):
            assert not (inside and line.strip() != "```"), f"README.md:{number}: {line!r} inside an open code block"
            inside = not inside
    assert not inside, "README.md ends inside a code block"


def offline_snippets(readme: str) -> list[str]:
    """The README's Python blocks marked ``<!-- snippet: offline -->`` (those that need no Hub model)."""
    import re

    return re.findall(r"<!-- snippet: offline -->\n```python\n(.*?)\n```", readme, re.DOTALL)


@pytest.mark.parametrize("index", range(4))
def test_readme_snippets_run_as_written(index, tmp_path, monkeypatch):
    snippets = offline_snippets(readme_outputs.README.read_text())
    assert len(snippets) == 4, "a snippet lost or gained its offline marker: update this test's count"
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    exec(compile(snippets[index], f"README.md offline snippet {index}", "exec"), {"__name__": "readme_snippet"})
