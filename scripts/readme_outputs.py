"""Regenerates the command outputs the README quotes, and their pictures, from the shipped models.

Each block is a `diffusers-uip2p` command run in-process at fixed settings. What it prints (less the lines
that name its output files) replaces the code block that follows ``<!-- output: NAME -->`` in README.md,
headed by the command itself, and its grid picture is copied to docs/images/. `tests/test_readme.py` reruns
every block and fails when the README or the picture differ, so a quoted output cannot go stale.

    .venv/bin/python scripts/readme_outputs.py
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# name: (command arguments, the grid it writes, where the README's picture lives)
BLOCKS = {
    # scripts/demo.sh: the library's main job, at the CLI's defaults.
    "demo": (["edit", "three-objects", "make the red triangle blue", "--reverse", "make the blue triangle red",
              "--candidates", "4"], "edit-grid.png", ROOT / "docs" / "images" / "edit-shapes.png"),
    "reconstruct": (["reconstruct", "three-objects"], "reconstruction-grid.png",
                    ROOT / "docs" / "images" / "reconstruction-shapes.png"),
    # The editing benchmark's settings (25 steps, guidance 5; benchmarks/shapes_editing.py).
    "auto-edit": (["auto-edit", "striped", "a large yellow square in the center and a large black hexagon on the "
                   "right on a striped gray background", "--steps", "25", "--guidance-scale", "5"],
                  "auto-edit-grid.png", ROOT / "docs" / "images" / "auto-edit-shapes.png"),
}


def run_block(name: str, folder: Path) -> tuple[str, Path]:
    """(the quoted text, the grid picture written into ``folder``) of one block."""
    from diffusers_uip2p.cli import main

    arguments, grid, _ = BLOCKS[name]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main([*arguments, "--output", str(folder)])
    if status != 0:
        raise RuntimeError(f"`diffusers-uip2p {shlex.join(arguments)}` exited with {status}.")
    lines = [line for line in printed.getvalue().splitlines() if not line.startswith("wrote ")]
    # A shipped sample's path, from wherever the package is installed.
    lines = [re.sub(r"\S*/(diffusers_uip2p/assets/)", r"\1", line) for line in lines]
    return "\n".join([f"$ diffusers-uip2p {shlex.join(arguments)}", *lines]), folder / grid


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- output: {re.escape(name)} -->\n```[^\n]*\n)(.*?)(\n```)(?=\n|$)", re.DOTALL)


def quoted(readme: str, name: str) -> str:
    """The text the README quotes for block ``name``."""
    match = _pattern(name).search(readme)
    if match is None:
        raise ValueError(f"README.md has no `<!-- output: {name} -->` followed by a code block.")
    return match.group(2)


def with_block(readme: str, name: str, text: str) -> str:
    quoted(readme, name)  # the marker must exist
    return _pattern(name).sub(lambda m: m.group(1) + text + m.group(3), readme, count=1)


def main() -> int:
    import torch

    torch.set_num_threads(1)  # as the test suite runs
    readme = README.read_text()
    with tempfile.TemporaryDirectory() as folder:
        for name, (_, _, picture) in BLOCKS.items():
            text, grid = run_block(name, Path(folder) / name)
            readme = with_block(readme, name, text)
            shutil.copyfile(grid, picture)
            print(f"{name}: {picture.relative_to(ROOT)}")
    README.write_text(readme)
    print(f"wrote {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
