"""The app's cost: one instruction edit through the page's API (gradio_client → the live server on 127.0.0.1 →
`compute_edit`) against the same edit through the command line's code path, side by side in one process.

* ``cli-code-path``: `commands.compute_edit` with the editor already loaded (what the app runs; the ratio
  is the app's own overhead: queue, serialisation, the enlarged pictures it sends);
* ``cli-command``: `commands.edit`, as ``diffusers-uip2p edit`` runs it (loads the editor, writes the files).

Repeats alternate between the three, and each figure is a median; the machine's load is noted beside them.

    .venv/bin/python benchmarks/app.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "results" / "app.json"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from gradio_client import Client

    from diffusers_uip2p import app as app_module
    from diffusers_uip2p.cli import commands

    instruction, reverse = "make the red triangle blue", "make the blue triangle red"
    fields = ["three-objects", None, instruction, reverse, args.candidates, 7.5, 1.5, args.steps, 0]
    argv_edit = ["edit", "--attention", "--candidates", str(args.candidates), "--guidance-scale", "7.5",
                 "--image-guidance-scale", "1.5", "--steps", str(args.steps), "--seed", "0", "--reverse", reverse]
    page = app_module.launch(port=7862, block=False)
    client = Client("http://127.0.0.1:7862/", verbose=False, download_files=False)
    editor = commands.load_edit_pipeline(None)
    scratch = tempfile.mkdtemp()
    variants = {
        "app": lambda: client.predict(*fields, api_name="/instruction_edit"),
        "cli-code-path": lambda: commands.compute_edit(
            app_module.cli_arguments([*argv_edit, "--", "three-objects", instruction]), load=lambda _: editor),
        "cli-command": lambda: commands.edit(app_module.cli_arguments(
            [*argv_edit, "--output", scratch, "--", "three-objects", instruction])),
    }
    try:
        for run in variants.values():  # warm-up: the app loads its models on first use
            run()
        seconds = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()),
                  file=sys.stderr)
    finally:
        page.close()
    median = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "command": "python benchmarks/app.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "edit": {"image": "three-objects", "candidates": args.candidates, "steps": args.steps, "attention": True},
        "threads": args.threads, "load_average_1min": os.getloadavg()[0], "seconds": seconds,
        "median_seconds": median,
        "app_over_cli_code_path": median["app"] / median["cli-code-path"],
        "app_over_cli_command": median["app"] / median["cli-command"],
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    return result


if __name__ == "__main__":
    main()
