"""Benchmark runners: any editor over a benchmark, resumable, sharded across processes, with paper tables.

An *editor* is any callable ``editor(image, *, instruction, source_prompt, target_prompt) -> PIL image``
with a ``describe()`` dict (see `editors.py`).

A run's output folder holds:

* ``settings.json``: what the numbers depend on (benchmark, dataset path, editor with model id, seed and a
  fingerprint of its weights, metric descriptions). A rerun into the same folder must match it, and resumes
  where the last one stopped;
* ``items-rank<r>-of-<w>.jsonl``: one line per finished item, written by process r of w, so every process
  writes its own file and a killed run loses at most the item it was editing;
* ``results.json`` and ``results.md`` (main process, once every process finished): the settings, the
  command line, the summary, and a Markdown table laid out like the paper's table for that benchmark.

Process r of w handles items i with i % w == r (`accelerate launch` sets r and w; see ``__main__``).
Values are written as Python's json writes them: NaN where a metric is undefined, Infinity for the PSNR
of identical images.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .. import strict_json
from ..checks import check_number
from .benchmarks import PIE_EDITING_TYPES, EditItem, EditTurn, ShapesBenchmark, natural_key
from .editors import weights_fingerprint
from .metrics import SCALES, SPECS, Metrics, summarize
from .reconstruction import ddim_round_trip, ddim_steps_for_same_budget, dsi_round_trip


# The papers' tables: (metric, column, better), and the decimals they print.
# PIE-Bench: DSI Table 1 and UIP2P's supplementary Table 1; Emu Edit: UIP2P's supplementary Table 2;
# MagicBrush: UIP2P's supplementary Table 3.
TABLES = {
    "pie-bench": ([("structure_distance", "Structure Distance", "↓"), ("psnr_unedited", "PSNR", "↑"),
                   ("lpips_unedited", "LPIPS", "↓"), ("mse_unedited", "MSE", "↓"), ("ssim_unedited", "SSIM", "↑"),
                   ("clip_whole", "CLIP Whole", "↑"), ("clip_edited", "CLIP Edited", "↑")], 2),
    "emu-edit": ([("clip_dir", "CLIP_dir", "↑"), ("clip_im", "CLIP_im", "↑"), ("clip_out", "CLIP_out", "↑"),
                  ("l1", "L1", "↓"), ("dino", "DINO", "↑")], 3),
    "magicbrush": ([("l1", "L1", "↓"), ("l2", "L2", "↓"), ("clip_i", "CLIP-I", "↑"), ("dino", "DINO", "↑"),
                    ("clip_t", "CLIP-T", "↑")], 4),
}
DEFAULT_METRICS = {name: [metric for metric, _, _ in columns] for name, (columns, _) in TABLES.items()}
SHAPES_COLUMNS = [("success", "Success", "↑"), ("edit_applied", "Edit applied", "↑"),
                  ("preserved", "Preserved", "↑"), ("psnr_outside", "PSNR outside (dB)", "↑")]
JUDGEMENT_FIELDS = ("success", "edit_applied", "preserved", "psnr_outside", "l1_outside", "psnr_to_true",
                    "l1_to_true")


# ---------------------------------------------------------------------------------------------- scoring


def to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float [1, 3, H, W] tensor in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def metric_scorer(metrics: Metrics) -> Callable[[EditTurn, PIL.Image.Image, str | None], dict]:
    """Scores an output with ``metrics`` against the turn's reference, prompts, captions and mask."""

    def score(turn: EditTurn, output: PIL.Image.Image, category: str | None) -> dict:
        mask = None if turn.mask is None else turn.mask[None]
        return metrics.compute(to_tensor(turn.reference), to_tensor(output), source_prompt=turn.source_prompt,
                               target_prompt=turn.target_prompt, source_caption=turn.source_caption,
                               target_caption=turn.target_caption, mask=mask)[0]

    return score


def shapes_scorer(metrics: Metrics | None = None) -> Callable[[EditTurn, PIL.Image.Image, str | None], dict]:
    """Scores a Shapes-world output with the Shapes evaluator (`judge_edit`), plus ``metrics`` if given."""
    from ..shapes.evaluator import judge_edit

    also = metric_scorer(metrics) if metrics is not None else None

    def score(turn: EditTurn, output: PIL.Image.Image, category: str | None) -> dict:
        judgement = judge_edit(turn.source_prompt, turn.instruction, output, category)
        row = {name: getattr(judgement, name) for name in JUDGEMENT_FIELDS}
        return (row | also(turn, output, category)) if also is not None else row

    return score


def check_inputs(benchmark, metrics: Metrics) -> None:
    """Fail before editing anything when the benchmark lacks a text or mask a metric reads."""
    turn = benchmark[0].turns[0]
    lacking = {name: [i for i in SPECS[name].inputs if getattr(turn, i) is None] for name in metrics.names}
    lacking = {name: inputs for name, inputs in lacking.items() if inputs}
    if lacking:
        missing = sorted({i for inputs in lacking.values() for i in inputs})
        hint = " (add the local captions as an `output_caption` column)" if benchmark.name == "magicbrush" else ""
        raise ValueError(f"{benchmark.name} items have no {', '.join(missing)}, which the metrics {sorted(lacking)} "
                         f"read{hint}; leave those metrics out.")


# ---------------------------------------------------------------------------------------------- runs


def finished_records(folder: str | Path) -> dict[int, dict]:
    """The finished item records (index, key, seconds, rows) in a run folder, by index, from every process."""
    records: dict[int, dict] = {}
    for shard in sorted(Path(folder).glob("items-rank*.jsonl")):
        for line in shard.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the line a killed process was writing
                continue
            records.setdefault(record["index"], record)
    return records


def finished_rows(folder: str | Path) -> dict[str, dict]:
    """key → the scored row of each finished item in a run folder (an editor's item has one row)."""
    return {record["key"]: record["rows"][0] for record in finished_records(folder).values()}


class ShardedRun:
    """One process's view of a run folder (see the module docstring): settings check, resume, merge."""

    def __init__(self, folder: str | Path, settings: dict, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, "
                             f"world_size={world_size}.")
        self.folder, self.rank, self.world_size = Path(folder), rank, world_size
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard = self.folder / f"items-rank{rank:03d}-of-{world_size:03d}.jsonl"
        self.settings = json.loads(json.dumps(settings))
        self._check_settings()

    def _check_settings(self) -> None:
        path = self.folder / "settings.json"
        if path.is_file():
            previous = json.loads(path.read_text())
            changed = sorted(k for k in previous.keys() | self.settings.keys()
                             if previous.get(k) != self.settings.get(k))
            if changed:
                raise ValueError(f"{self.folder} (`output`) holds a run with other settings ({', '.join(changed)} "
                                 "differ); rerun with the same settings to resume it, or use another folder.")
            return
        temporary = path.with_name(f"settings.json.rank{self.rank}")  # every process may write; replace is atomic
        temporary.write_text(json.dumps(self.settings, indent=2) + "\n")
        temporary.replace(path)

    def finished(self) -> dict[int, dict]:
        """Every finished item in the folder, from any process of this or an earlier run, by index."""
        return finished_records(self.folder)

    def _cut_partial_line(self) -> None:
        """Drop an unfinished last line of this process's shard, so that appending starts a fresh line."""
        if not self.shard.is_file():
            return
        data = self.shard.read_bytes()
        if data and not data.endswith(b"\n"):
            self.shard.write_bytes(data[: data.rfind(b"\n") + 1])

    def run(self, count: int, work: Callable[[int], tuple[str, list[dict]]], desc: str) -> None:
        """Run ``work(index) -> (key, rows)`` on this process's unfinished items among the first ``count``."""
        mine = range(self.rank, count, self.world_size)
        done = self.finished()
        pending = [i for i in mine if i not in done]
        self._cut_partial_line()
        if self.world_size > 1:
            desc = f"{desc} [process {self.rank + 1}/{self.world_size}]"
        with self.shard.open("a") as out, tqdm(total=len(mine), initial=len(mine) - len(pending), desc=desc,
                                               position=self.rank, unit="item") as bar:
            for index in pending:
                start = time.perf_counter()
                key, rows = work(index)
                record = {"index": index, "key": key, "seconds": round(time.perf_counter() - start, 3), "rows": rows}
                out.write(json.dumps(record) + "\n")
                out.flush()
                bar.update()

    def merged(self, count: int) -> list[dict]:
        """The records of items 0..count-1 in order; every one must be finished."""
        records = self.finished()
        missing = [i for i in range(count) if i not in records]
        if missing:
            raise RuntimeError(f"{len(missing)} of {count} items have no result in {self.folder} (first: "
                               f"{missing[:5]}): a process stopped early; run the same command again to finish.")
        return [records[i] for i in range(count)]


def _count(benchmark, limit: int | None) -> int:
    """How many items to run: all of them, or the first ``limit``."""
    if len(benchmark) == 0:
        raise ValueError(f"The {benchmark.name} dataset has no items.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items, got {limit}.")
    return len(benchmark) if limit is None else min(limit, len(benchmark))


def _command(command: str | None) -> str:
    return command if command is not None else shlex.join([Path(sys.executable).name, *sys.argv])


def _finish(run: ShardedRun, records: list[dict], summary: dict, table: str, command: str | None,
            title: str) -> dict:
    """Write results.json and results.md (settings, command, summary, table); return the result."""
    seconds = [r["seconds"] for r in records]
    result = {**run.settings, "command": _command(command), "processes": run.world_size, "items": len(records),
              "seconds_per_item": float(np.mean(seconds)) if seconds else None, "summary": summary, "table": table}
    (run.folder / "results.json").write_text(strict_json.dumps(result, indent=2) + "\n")
    settings, editor = run.settings, run.settings.get("editor", {})
    model, seed = settings.get("model", editor.get("model")), settings.get("seed", editor.get("seed"))
    backbones = ((settings.get("metrics") or {}).get("backbones", {})).items()
    lines = [f"- dataset: `{settings['benchmark']['dataset']}`",
             f"- model: `{model}`; seed: {seed}",
             "- metric backbones: " + (", ".join(f"{name} `{b['id']}`" for name, b in backbones) or "none"),
             f"- command: `{result['command']}`", f"- processes: {run.world_size}; items: {len(records)}"]
    (run.folder / "results.md").write_text(
        f"# {title}\n\n{table}\n\n" + "\n".join(lines) + "\n\n<details><summary>All settings, with the metric "
        f"definitions</summary>\n\n```json\n{json.dumps(settings, indent=2)}\n```\n\n</details>\n")
    return result


# ---------------------------------------------------------------------------------------------- tables


def _scale_suffix(scale: float) -> str:
    if scale == 1:
        return ""
    digits = str(round(np.log10(scale))).translate(str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))
    return f" ×10{digits}"


def markdown_table(method: str, summary: dict[str, dict], columns: list[tuple[str, str, str]], decimals: int,
                   scales: dict[str, float] = SCALES) -> str:
    """One row per subset of ``summary`` ({subset: {"count", metric: value}}), one column per metric."""
    header = ["Method", "Subset", *[f"{label}{_scale_suffix(scales.get(name, 1))} {better}".rstrip()
                                    for name, label, better in columns]]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(columns)]
    for subset, values in summary.items():
        cells = [f"{float(values[name]):.{decimals}f}" if values.get(name) is not None else "n/a"
                 for name, _, _ in columns]
        lines.append("| " + " | ".join([method, f"{subset} (n={values['count']})", *cells]) + " |")
    return "\n".join(lines)


def _columns(benchmark_name: str, names: list[str]) -> tuple[list[tuple[str, str, str]], int]:
    """The paper's columns that were computed, then any other computed metric."""
    columns, decimals = TABLES.get(benchmark_name, ([], 3))
    known = [column for column in columns if column[0] in names]
    return known + [(n, n, "") for n in names if n not in {c[0] for c in known}], decimals


def _subsets(benchmark, rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each subset a paper reports: all items and each category; MagicBrush's turn settings."""
    if benchmark.name == "magicbrush":
        if benchmark.multi_turn:
            return {"multi-turn, final turn": [r for r in rows if r.get("final", True)],
                    "multi-turn, all turns (chained)": rows}
        return {"single-turn, all turns": rows}
    subsets = {"all": rows}
    labels = {c: f"{c} {PIE_EDITING_TYPES.get(c, '')}".strip() if benchmark.name == "pie-bench" else c
              for c in sorted({r["category"] for r in rows if r["category"] is not None}, key=natural_key)}
    for category, label in labels.items():
        subsets[label] = [r for r in rows if r["category"] == category]
    return subsets


def _metric_summary(subsets: dict[str, list[dict]], names: list[str], scales=SCALES) -> dict[str, dict]:
    return {subset: {"count": len(rows), **summarize([{n: r[n] for n in names} for r in rows], scales)}
            for subset, rows in subsets.items()}


# ---------------------------------------------------------------------------------------------- editing runs


def edit_item(item: EditItem, editor, score, images: Path | None = None) -> list[dict]:
    """Edit ``item`` turn by turn (each turn edits the previous output) and score every output.

    An output of another size than the turn's reference is resized to it (bicubic, as MagicBrush's
    evaluation does) and its size recorded as ``output_size``."""
    rows, image, chained = [], item.image, len(item.turns) > 1
    for number, turn in enumerate(item.turns, 1):
        output = editor(image, instruction=turn.instruction, source_prompt=turn.source_prompt,
                        target_prompt=turn.target_prompt)
        if not isinstance(output, PIL.Image.Image):
            raise TypeError(f"The editor must return a PIL image, got {type(output).__name__}.")
        row = {"key": item.key, "category": item.category, **item.extra, **getattr(editor, "details", {})}
        if chained:
            row |= {"turn": number, "final": number == len(item.turns)}
        output = output.convert("RGB")
        if output.size != turn.reference.size:
            row["output_size"] = list(output.size)
            output = output.resize(turn.reference.size, PIL.Image.BICUBIC)
        row |= score(turn, output, item.category)
        if images is not None:
            name = item.key.replace("/", "_") + (f"-turn{number}" if chained else "")
            output.save(images / f"{name}.png")
        rows.append(row)
        image = output
    return rows


def run_benchmark(benchmark, editor, metrics: Metrics | None, output: str | Path, *, limit: int | None = None,
                  save_images: bool = False, rank: int = 0, world_size: int = 1,
                  barrier: Callable[[], None] | None = None, command: str | None = None) -> dict | None:
    """Edit and score every item of a benchmark reader (or the first ``limit``) with ``metrics``; Shapes-world
    outputs are also judged by the Shapes evaluator (and ``metrics`` may then be None).

    Returns the result (also written to ``output``/results.json and results.md) on process 0 and None
    elsewhere. ``barrier`` (Accelerate's ``wait_for_everyone``) makes process 0 merge after all finish."""
    shapes = isinstance(benchmark, ShapesBenchmark)
    if metrics is None and not shapes:
        raise ValueError(f"metrics is required for {benchmark.name}; only Shapes runs can go without.")
    count = _count(benchmark, limit)
    if metrics is not None:
        check_inputs(benchmark, metrics)
    score = shapes_scorer(metrics) if shapes else metric_scorer(metrics)
    settings = {"benchmark": benchmark.describe(), "editor": editor.describe(),
                "metrics": metrics.describe() if metrics is not None else None}
    run = ShardedRun(output, settings, rank, world_size)
    images = run.folder / "images" if save_images else None
    if images is not None:
        images.mkdir(exist_ok=True)
    run.run(count, lambda i: (benchmark.keys[i], edit_item(benchmark[i], editor, score, images)), benchmark.name)
    (barrier or (lambda: None))()
    if rank != 0:
        return None
    records = run.merged(count)
    rows = [row for record in records for row in record["rows"]]
    method = f"{settings['editor']['method']} ({settings['editor']['model']})"
    names = metrics.names if metrics is not None else []
    if shapes:
        summary = _shapes_summary(rows, names)
        table = markdown_table(method, summary, SHAPES_COLUMNS + [(n, n, "") for n in names], 2)
    else:
        summary = _metric_summary(_subsets(benchmark, rows), names)
        table = markdown_table(method, summary, *_columns(benchmark.name, names))
    return _finish(run, records, summary, table, command, f"{benchmark.name}: {method}")


def run_shapes(editor, output: str | Path, *, split: str = "test", num_edits: int = 50,
               metrics: Metrics | None = None, **options) -> dict | None:
    """`run_benchmark` on Shapes-world edits of ``split``, judged by the Shapes evaluator (success, edit applied,
    preserved, PSNR outside the changed region, per category), plus ``metrics`` if given."""
    return run_benchmark(ShapesBenchmark(split, num_edits), editor, metrics, output, **options)


def _shapes_summary(rows: list[dict], names: list[str]) -> dict[str, dict]:
    """The Shapes evaluator's per-category aggregate (all first), with the metrics' means beside it."""
    from ..shapes.evaluator import EditJudgement, aggregate

    judgements = [EditJudgement(category=r["category"], reading=None, **{f: r[f] for f in JUDGEMENT_FIELDS})
                  for r in rows]
    judged = aggregate(judgements)
    judged = {"all": judged.pop("all"), **judged}
    if not names:
        return judged
    subsets = {"all": rows} | {c: [r for r in rows if r["category"] == c] for c in judged if c != "all"}
    measured = _metric_summary(subsets, names)
    return {subset: values | measured[subset] for subset, values in judged.items()}


# ---------------------------------------------------------------------------------------------- reconstruction


@torch.no_grad()
def reconstruct(pipe, image: PIL.Image.Image, prompt: str, num_inference_steps: int,
                guidance_scales: list[float], metrics: Metrics) -> list[dict]:
    """PSNR/SSIM against the input of: the VAE round trip (the ceiling of any latent inversion), and, per
    guidance scale, DSI with N steps and DDIM inversion with 2N − 2 steps (the same UNet calls)."""
    pixels = pipe.preprocess_images(image)
    reference = pipe.image_processor.postprocess(pixels, output_type="pt").cpu()
    latents = pipe.encode_images(pixels).to(pipe._execution_device, pipe.unet.dtype)

    def score(method: str, guidance_scale: float | None, reconstructed: torch.Tensor) -> dict:
        images = pipe.decode_latents_to_images(reconstructed.to(latents.dtype), "pt").float().cpu()
        return {"method": method, "guidance_scale": guidance_scale, **metrics.compute(reference, images)[0]}

    rows = [score("vae", None, latents)]
    for guidance_scale in guidance_scales:
        model_fn = pipe.guided_model_fn(prompt, guidance_scale)
        dsi, _ = dsi_round_trip(pipe.scheduler, latents, model_fn, num_inference_steps)
        ddim, _ = ddim_round_trip(pipe.scheduler.config, latents, model_fn,
                                  ddim_steps_for_same_budget(num_inference_steps))
        rows += [score("dsi", guidance_scale, dsi), score("ddim", guidance_scale, ddim)]
    return rows


def run_reconstruction(benchmark, pipe, output: str | Path, *, model_id: str, num_inference_steps: int = 50,
                       guidance_scales: tuple[float, ...] = (1.0, 4.0, 7.5), limit: int | None = None,
                       rank: int = 0, world_size: int = 1, barrier: Callable[[], None] | None = None,
                       command: str | None = None) -> dict | None:
    """DSI Table 2 on a benchmark's images and source prompts: PSNR and SSIM (raw, averaged over images and
    guidance scales) of DDIM inversion, Dual-Schedule Inversion and the VAE upper bound."""
    from ..pipelines import AutoEditPipeline

    if not isinstance(pipe, AutoEditPipeline):
        raise TypeError(f"Reconstruction inverts a text-to-image model loaded as AutoEditPipeline, got "
                        f"{type(pipe).__name__}.")
    if benchmark[0].turns[0].source_prompt is None:
        raise ValueError(f"Reconstruction needs each image's prompt; {benchmark.name} items have none (use "
                         "PIE-Bench, Emu Edit or Shapes).")
    if isinstance(guidance_scales, (int, float)) or not guidance_scales:
        raise ValueError(f"`guidance_scales` must be a non-empty sequence of numbers, got {guidance_scales!r}.")
    for scale in guidance_scales:
        check_number(scale, "guidance_scales", low=0)
    ddim_steps = ddim_steps_for_same_budget(num_inference_steps)  # checks num_inference_steps ≥ 2
    pipe.set_progress_bar_config(disable=True)
    metrics, count = Metrics(["psnr", "ssim"]), _count(benchmark, limit)
    settings = {"benchmark": benchmark.describe(), "model": model_id, "weights": weights_fingerprint(pipe),
                "seed": None,  # no noise is drawn
                "pipeline": type(pipe).__name__,
                "dtype": str(pipe.unet.dtype), "num_inference_steps": num_inference_steps, "ddim_steps": ddim_steps,
                "guidance_scales": list(guidance_scales), "metrics": metrics.describe()}
    run = ShardedRun(output, settings, rank, world_size)

    def work(index: int) -> tuple[str, list[dict]]:
        item = benchmark[index]
        return item.key, reconstruct(pipe, item.image, item.turns[0].source_prompt, num_inference_steps,
                                     list(guidance_scales), metrics)

    run.run(count, work, f"{benchmark.name} reconstruction")
    (barrier or (lambda: None))()
    if rank != 0:
        return None
    records = run.merged(count)
    rows = [row for record in records for row in record["rows"]]
    labels = {"ddim": f"DDIM Inversion ({ddim_steps} steps)",
              "dsi": f"Dual-Schedule Inversion ({num_inference_steps} steps)", "vae": "Upper Bound (VAE round trip)"}
    by_method = _metric_summary({labels[m]: [r for r in rows if r["method"] == m] for m in labels}, metrics.names, {})
    by_guidance = _metric_summary({f"{labels[m]}, guidance {g:g}": [r for r in rows if r["method"] == m
                                                                     and r["guidance_scale"] == g]
                                   for m in ("ddim", "dsi") for g in guidance_scales}, metrics.names, {})
    lines = ["| Method | Tuning-free | PSNR ↑ | SSIM ↑ |", "|---|:-:|---:|---:|"]
    lines += [f"| {label} | {'' if label.startswith('Upper') else '✓'} | {v['psnr']:.3f} | {v['ssim']:.3f} |"
              for label, v in by_method.items()]
    table = "\n".join(lines) + "\n\nBy guidance scale:\n\n" + markdown_table(model_id, by_guidance, [
        ("psnr", "PSNR", "↑"), ("ssim", "SSIM", "↑")], 3, {})
    summary = {"by_method": by_method, "by_guidance_scale": by_guidance}
    return _finish(run, records, summary, table, command, f"Reconstruction on {benchmark.name}: {model_id}")
