"""Start-up cost of the command line: ``--help``, an argument error and a one-step edit (model loading to the
first step), against ``python -c "import argparse"`` and ``python -c "import torch"`` on the same machine.

Each command runs ``--repeats`` times in a fresh interpreter; the median wall time is reported.

    .venv/bin/python benchmarks/startup.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "diffusers_uip2p"]


def seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        commands = {
            "python -c 'import argparse'": [sys.executable, "-c", "import argparse"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "diffusers-uip2p --help": [*CLI, "--help"],
            "diffusers-uip2p edit --help": [*CLI, "edit", "--help"],
            "diffusers-uip2p edit ... --steps 0 (argument error)": [*CLI, "edit", "three-objects", "x", "--steps", "0"],
            "diffusers-uip2p edit ... --steps 1 (load to first step)": [
                *CLI, "edit", "three-objects", "make the red triangle blue", "--steps", "1", "--output", folder],
        }
        times = {name: seconds(command, args.repeats if "--steps 1" not in name else max(1, args.repeats // 2))
                 for name, command in commands.items()}
    base = times["python -c 'import argparse'"]
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "repeats": args.repeats,
              "median_seconds": times,
              "help_over_import_argparse": times["diffusers-uip2p --help"] / base,
              "help_bar_seconds": 1.5 * base + 0.5,
              "first_step_over_import_torch": times["diffusers-uip2p edit ... --steps 1 (load to first step)"]
              / times["python -c 'import torch'"]}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    for name, value in times.items():
        print(f"{name:55s} {value:7.3f} s")
    print(f"--help: {result['help_over_import_argparse']:.2f}x import argparse (bar: ≤ {result['help_bar_seconds']:.2f} s)")
    return result


if __name__ == "__main__":
    main()
