"""A user sees progress and results, never a warning they cannot act on: loading every shipped model and
running the demo's command (shortened) in a fresh interpreter print nothing but labelled progress bars
to stderr."""

import re
import subprocess
import sys
from pathlib import Path

PROGRESS = re.compile(r"^[^:]*: +\d+%\|.*\]$")  # a tqdm frame: "label:  50%|█████     | 3/6 [00:00<...]"


def _not_progress(stderr: str) -> list[str]:
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", stderr)  # tqdm's cursor moves between nested bars
    frames = (part.strip() for part in re.split(r"[\r\n]", plain))
    return [frame for frame in frames if frame and not PROGRESS.match(frame)]


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_loading_every_shipped_model_prints_no_warning(tmp_path):
    done = _run("from diffusers_uip2p.shapes.pretrained import load_shapes_clip, load_shapes_editor, "
                "load_shapes_pipeline\nload_shapes_pipeline(); load_shapes_editor('uip2p'); "
                "load_shapes_editor('ip2p'); load_shapes_clip()", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _not_progress(done.stderr) == []
    assert done.stdout == ""


def test_the_demo_command_prints_no_warning(tmp_path):
    done = _run("import sys\nfrom diffusers_uip2p.cli import main\nsys.exit(main(['edit', 'three-objects', "
                "'make the red triangle blue', '--reverse', 'make the blue triangle red', '--candidates', '2', "
                "'--steps', '3', '--output', 'out']))", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _not_progress(done.stderr) == []
    assert "Traceback" not in done.stdout and "warn" not in done.stdout.lower()


def test_a_warning_would_be_caught():
    stderr = ("edit (candidate 1/2, forward):  50%|█████     | 1/2 [00:01<00:01,  1.0s/it]\r"
              "/x.py:3: FutureWarning: something\n  value = f()\n")
    assert _not_progress(stderr) == ["/x.py:3: FutureWarning: something", "value = f()"]
