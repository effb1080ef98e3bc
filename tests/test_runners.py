"""Benchmark runners end to end on tiny fixtures written in each benchmark's format: PIE-Bench, Emu Edit,
MagicBrush (single- and multi-turn), reconstruction and the Shapes world; resume after an interruption;
sharded runs (in process and with `accelerate launch`) merging to the single-process result; bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from transformers import CLIPImageProcessor, CLIPProcessor

from diffusers_uip2p import AutoEditPipeline, UIP2PPipeline
from diffusers_uip2p.evaluation.__main__ import main
from diffusers_uip2p.evaluation.benchmarks import EmuEdit, MagicBrush, PieBench
from diffusers_uip2p.evaluation.metrics import Metrics
from diffusers_uip2p.evaluation.editors import editor_for, load_pipeline
from diffusers_uip2p.evaluation.runners import run_benchmark, run_reconstruction
from diffusers_uip2p.testing import tiny_clip_model, tiny_instruct_pix2pix_components, tiny_text_to_image_components

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
PIE_METRICS = ["psnr_unedited", "mse_unedited", "ssim_unedited", "clip_whole", "clip_edited"]
NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
STEPS = 2


def image(seed: int, size: int = 16) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), np.uint8))


# ---------------------------------------------------------------- fixtures in each benchmark's format


def write_pie_bench(folder: Path, size: int = 16) -> Path:
    """mapping_file.json with RLE masks (start, length pairs) and annotation_images/, as PIE-Bench ships them."""
    entries = {}
    for i, (type_id, mask) in enumerate([("0", [20, 30, 100, 40]), ("1", [0, size * size]), ("1", [50, 8])]):
        key, path = f"{i:012d}", f"{type_id}_type/{i:012d}.jpg"
        (folder / "annotation_images" / path).parent.mkdir(parents=True, exist_ok=True)
        image(i, size).save(folder / "annotation_images" / path)
        entries[key] = {"image_path": path, "original_prompt": "a [red] circle on grass",
                        "editing_prompt": "a [blue] circle on grass", "editing_instruction": "make the circle blue",
                        "editing_type_id": type_id, "blended_word": "circle circle", "mask": mask}
    (folder / "mapping_file.json").write_text(json.dumps(entries))
    return folder


def write_emu_edit(folder: Path) -> Path:
    """Emu Edit's 🤗 columns, a DatasetDict with a test and a validation split, saved with save_to_disk."""
    features = datasets.Features({"image": datasets.Image(), "instruction": datasets.Value("string"),
                                  "input_caption": datasets.Value("string"), "output_caption": datasets.Value("string"),
                                  "task": datasets.Value("string"), "idx": datasets.Value("int64")})

    def split(offset):
        return datasets.Dataset.from_dict({
            "image": [image(offset + i) for i in range(3)], "instruction": ["add a hat", "make it night", "remove it"],
            "input_caption": ["a dog", "a street", "a cat on a sofa"],
            "output_caption": ["a dog with a hat", "a street at night", "a sofa"],
            "task": ["add", "global", "remove"], "idx": [offset + i for i in range(3)]}, features=features)

    datasets.DatasetDict({"test": split(0), "validation": split(10)}).save_to_disk(str(folder))
    return folder


def write_magicbrush(folder: Path) -> Path:
    """MagicBrush's 🤗 columns as parquet files named as on the Hub: session 7 has two turns, session 12 one."""
    rows = [("12", 1, 0), ("7", 2, 1), ("7", 1, 2)]  # deliberately out of order
    data = datasets.Dataset.from_dict({
        "img_id": [r[0] for r in rows], "turn_index": [r[1] for r in rows],
        "source_img": [image(seed) for _, _, seed in rows], "mask_img": [image(50 + seed) for _, _, seed in rows],
        "instruction": ["put a hat on it", "make it snow", "turn it red"],
        "target_img": [image(100 + seed) for _, _, seed in rows],
    }, features=datasets.Features({"img_id": datasets.Value("string"), "turn_index": datasets.Value("int32"),
                                   "source_img": datasets.Image(), "mask_img": datasets.Image(),
                                   "instruction": datasets.Value("string"), "target_img": datasets.Image()}))
    (folder / "data").mkdir(parents=True)
    data.to_parquet(str(folder / "data" / "dev-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="module")
def clip():
    model, tokenizer = tiny_clip_model()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=processor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, clip):
    """Tiny pipelines and the tiny CLIP saved as a user would pass them to the command line."""
    root = tmp_path_factory.mktemp("models")
    UIP2PPipeline(**tiny_instruct_pix2pix_components(), **NO_SAFETY).save_pretrained(root / "uip2p")
    AutoEditPipeline(**tiny_text_to_image_components()).save_pretrained(root / "auto")
    clip[0].save_pretrained(root / "clip")
    clip[1].save_pretrained(root / "clip")
    return {name: str(root / name) for name in ("uip2p", "auto", "clip")}


@pytest.fixture
def uip2p_editor():
    pipe = UIP2PPipeline(**tiny_instruct_pix2pix_components(), **NO_SAFETY)
    return editor_for(pipe, "tiny-uip2p", seed=0, num_inference_steps=STEPS)


class Recording:
    """Wraps an editor: records each input image, and raises once on call number ``fail_at``."""

    def __init__(self, editor, fail_at=None):
        self.editor, self.fail_at, self.inputs = editor, fail_at, []
        self.describe = editor.describe

    def __call__(self, image, **texts):
        self.inputs.append(image)
        if len(self.inputs) == self.fail_at:
            raise RuntimeError("interrupted")
        return self.editor(image, **texts)


def rows(output: Path) -> list[dict]:
    """Every per-item row of a run folder, by item index, without the timing."""
    records = [json.loads(line) for shard in sorted(output.glob("items-*.jsonl"))
               for line in shard.read_text().splitlines()]
    return [record["rows"] for record in sorted(records, key=lambda r: r["index"])]


# ---------------------------------------------------------------- runners end to end


def test_pie_bench_resumes_where_it_stopped_and_ends_as_an_uninterrupted_run(tmp_path, clip, uip2p_editor):
    bench, metrics = PieBench(write_pie_bench(tmp_path / "pie"), mask_size=16), Metrics(PIE_METRICS, clip=clip)
    expected = run_benchmark(bench, uip2p_editor, metrics, tmp_path / "whole", command="test")

    flaky = Recording(uip2p_editor, fail_at=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_benchmark(bench, flaky, metrics, tmp_path / "resumed", command="test")
    assert len(rows(tmp_path / "resumed")) == 1
    with (tmp_path / "resumed" / "items-rank000-of-001.jsonl").open("a") as shard:
        shard.write('{"index": 1, "key": "0000')  # and the process was killed while writing item 2
    resumed = Recording(uip2p_editor)
    result = run_benchmark(bench, resumed, metrics, tmp_path / "resumed", command="test")
    assert len(resumed.inputs) == 2  # items 2 and 3 only
    assert result["summary"] == expected["summary"] and result["table"] == expected["table"]
    assert rows(tmp_path / "resumed") == rows(tmp_path / "whole")

    # PIE-Bench's conventions reach the rows: a mask over the whole image has NaN background metrics, skipped
    assert np.isnan(rows(tmp_path / "whole")[1][0]["psnr_unedited"])
    assert result["summary"]["all"]["psnr_unedited_nan_skipped"] == 1
    assert list(result["summary"]) == ["all", "0 random", "1 change object"]
    assert "| Method | Subset | PSNR ↑ | MSE ×10⁴ ↓ | SSIM ×10² ↑ | CLIP Whole ↑ | CLIP Edited ↑ |" in result["table"]
    saved = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(metrics.describe()))
    assert saved["editor"]["model"] == "tiny-uip2p" and saved["editor"]["seed"] == 0
    assert saved["benchmark"]["dataset"] == str((tmp_path / "pie").resolve()) and saved["command"] == "test"
    markdown = (tmp_path / "resumed" / "results.md").read_text()
    assert "tiny-uip2p" in markdown and "seed: 0" in markdown and str(tmp_path / "pie") in markdown


def test_a_rerun_with_other_settings_is_refused(tmp_path, clip, uip2p_editor):
    bench, metrics = PieBench(write_pie_bench(tmp_path / "pie"), mask_size=16), Metrics(["psnr"], clip=clip)
    run_benchmark(bench, uip2p_editor, metrics, tmp_path / "run", limit=1)
    uip2p_editor.seed = 1
    with pytest.raises(ValueError, match=r"other settings \(editor differ\)"):
        run_benchmark(bench, uip2p_editor, metrics, tmp_path / "run", limit=1)
    uip2p_editor.seed = 0  # the same settings again, but the weights behind the model id were retrained
    run_benchmark(bench, uip2p_editor, metrics, tmp_path / "run", limit=1)
    with torch.no_grad():
        next(uip2p_editor.pipe.unet.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(ValueError, match=r"other settings \(editor differ\)"):
        run_benchmark(bench, uip2p_editor, metrics, tmp_path / "run", limit=1)


def test_sharded_run_merges_to_the_single_process_result(tmp_path, clip, uip2p_editor):
    bench, metrics = PieBench(write_pie_bench(tmp_path / "pie"), mask_size=16), Metrics(PIE_METRICS, clip=clip)
    single = run_benchmark(bench, uip2p_editor, metrics, tmp_path / "single")
    assert run_benchmark(bench, uip2p_editor, metrics, tmp_path / "sharded", rank=1, world_size=2) is None
    merged = run_benchmark(bench, uip2p_editor, metrics, tmp_path / "sharded", rank=0, world_size=2)
    shards = {p.name: [json.loads(line)["index"] for line in p.read_text().splitlines()]
              for p in (tmp_path / "sharded").glob("items-*.jsonl")}
    assert shards == {"items-rank000-of-002.jsonl": [0, 2], "items-rank001-of-002.jsonl": [1]}
    assert merged["summary"] == single["summary"] and merged["processes"] == 2
    assert rows(tmp_path / "sharded") == rows(tmp_path / "single")


def test_emu_edit_from_the_command_line_with_dsi_editing(tmp_path, folders):
    data = write_emu_edit(tmp_path / "emu")
    result = main(["emu-edit", "--data", str(data), "--split", "test", "--model", folders["auto"], "--output",
                   str(tmp_path / "run"), "--clip-model", folders["clip"], "--metrics", "clip_dir", "clip_im",
                   "clip_out", "l1", "--steps", str(STEPS), "--save-images"])
    assert result["editor"]["method"] == "DSI + auto" and result["editor"]["model"] == folders["auto"]
    assert result["metrics"]["backbones"]["clip"]["id"] == folders["clip"]
    assert list(result["summary"]) == ["all", "add", "global", "remove"]
    assert "| CLIP_dir ↑ | CLIP_im ↑ | CLIP_out ↑ | L1 ↓ |" in result["table"]
    assert result["command"].startswith("python -m diffusers_uip2p.evaluation emu-edit --data")
    items = rows(tmp_path / "run")
    assert [r[0]["key"] for r in items] == ["0", "1", "2"] and all("edit_method" in r[0] for r in items)
    assert sorted(p.name for p in (tmp_path / "run" / "images").iterdir()) == ["0.png", "1.png", "2.png"]


def test_magicbrush_single_and_multi_turn_with_the_instruct_pix2pix_baseline(tmp_path):
    pipe = StableDiffusionInstructPix2PixPipeline(**tiny_instruct_pix2pix_components(), **NO_SAFETY)
    editor = editor_for(pipe, "tiny-ip2p", num_inference_steps=STEPS)
    data, metrics = write_magicbrush(tmp_path / "mb"), Metrics(["l1", "l2"])
    single = run_benchmark(MagicBrush(data), editor, metrics, tmp_path / "single")
    assert single["editor"]["method"] == "StableDiffusionInstructPix2PixPipeline"
    assert [r[0]["key"] for r in rows(tmp_path / "single")] == ["7-1", "7-2", "12-1"]
    assert list(single["summary"]) == ["single-turn, all turns"] and single["items"] == 3

    chained = Recording(editor)
    multi = run_benchmark(MagicBrush(data, multi_turn=True), chained, metrics, tmp_path / "multi")
    session_7, session_12 = rows(tmp_path / "multi")
    assert [(r["turn"], r["final"]) for r in session_7] == [(1, False), (2, True)] and "turn" not in session_12[0]
    first_output = editor(image(2), instruction="turn it red")
    assert np.array_equal(np.asarray(chained.inputs[1]), np.asarray(first_output))  # turn 2 edits turn 1's output
    assert {k: v["count"] for k, v in multi["summary"].items()} == {"multi-turn, final turn": 2,
                                                                    "multi-turn, all turns (chained)": 3}


def test_reconstruction_table_has_dsi_at_the_vae_ceiling(tmp_path):
    pipe = AutoEditPipeline(**tiny_text_to_image_components())
    bench = PieBench(write_pie_bench(tmp_path / "pie"), mask_size=16)
    result = run_reconstruction(bench, pipe, tmp_path / "run", model_id="tiny", num_inference_steps=3,
                                guidance_scales=(1.0, 7.5))
    by_method = result["summary"]["by_method"]
    dsi, vae = by_method["Dual-Schedule Inversion (3 steps)"], by_method["Upper Bound (VAE round trip)"]
    # exact inversion: every DSI row is bitwise its item's VAE round trip. The summaries are compared only to
    # float rounding, since DSI's mean runs over each item twice (two guidances) and the round trip's once.
    items = [json.loads(line) for path in (tmp_path / "run").rglob("items*.jsonl")
             for line in path.read_text().splitlines()]
    pairs = [(row, vae_row) for item in items for vae_row in item["rows"] if vae_row["method"] == "vae"
             for row in item["rows"] if row["method"] == "dsi"]
    assert len(pairs) == 6 and all(row[name] == vae_row[name] for row, vae_row in pairs for name in ("psnr", "ssim"))
    assert dsi["psnr"] == pytest.approx(vae["psnr"], rel=1e-12) and dsi["ssim"] == pytest.approx(vae["ssim"], rel=1e-12)
    assert by_method["DDIM Inversion (4 steps)"]["count"] == 6 and vae["count"] == 3
    assert "| Method | Tuning-free | PSNR ↑ | SSIM ↑ |" in result["table"]
    with torch.no_grad():  # same model id, other weights: the finished run must not be handed back as theirs
        next(pipe.vae.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(ValueError, match=r"other settings \(weights differ\)"):
        run_reconstruction(bench, pipe, tmp_path / "run", model_id="tiny", num_inference_steps=3,
                           guidance_scales=(1.0, 7.5))


def test_shapes_runner_judges_with_the_shapes_evaluator(tmp_path, folders):
    result = main(["shapes", "--model", folders["auto"], "--limit", "2", "--steps", str(STEPS), "--edit-method",
                   "direct", "--metrics", "psnr", "--output", str(tmp_path / "run")])
    assert result["benchmark"] == {"benchmark": "shapes", "dataset": "generated: diffusers_uip2p.shapes.dataset."
                                   "split_edits", "split": "test"}
    assert result["summary"]["all"]["count"] == 2 and "psnr" in result["summary"]["all"]
    assert "| Success ↑ | Edit applied ↑ | Preserved ↑ | PSNR outside (dB) ↑ | psnr |" in result["table"]
    row = rows(tmp_path / "run")[0][0]
    assert row["success"] is False and row["edit_method"] == "direct"  # a random tiny model edits nothing right


def test_accelerate_launch_on_two_processes_equals_one_process(tmp_path, folders):
    arguments = ["pie-bench", "--data", str(write_pie_bench(tmp_path / "pie")), "--mask-size", "16", "--model",
                 folders["uip2p"], "--steps", str(STEPS), "--metrics", "psnr_unedited", "mse_unedited"]
    editor = editor_for(load_pipeline(folders["uip2p"]), folders["uip2p"], num_inference_steps=STEPS)  # on the CPU
    single = run_benchmark(PieBench(tmp_path / "pie", mask_size=16), editor, Metrics(["psnr_unedited", "mse_unedited"]),
                           tmp_path / "single")
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    command = [str(accelerate), "launch", "--config_file", str(CONFIGS / "cpu_2_processes.yaml"),
               "-m", "diffusers_uip2p.evaluation", *arguments, "--output", str(tmp_path / "launched")]
    try:
        launched = subprocess.run(command, capture_output=True, text=True, env=env, timeout=90)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"Timed out; stdout: {timeout.stdout}\nstderr: {timeout.stderr}")
    assert launched.returncode == 0, launched.stderr[-3000:]
    result = json.loads((tmp_path / "launched" / "results.json").read_text())
    assert result["processes"] == 2 and len(list((tmp_path / "launched").glob("items-*.jsonl"))) == 2
    assert result["summary"] == json.loads(json.dumps(single["summary"])) and result["editor"] == single["editor"]
    assert rows(tmp_path / "launched") == rows(tmp_path / "single")


# ---------------------------------------------------------------- bad input


def test_a_benchmark_folder_missing_files_lists_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing mapping_file\.json, annotation_images/"):
        PieBench(tmp_path)
    folder = write_pie_bench(tmp_path / "pie")
    for name in ("000000000000.jpg", "000000000001.jpg"):
        next((folder / "annotation_images").rglob(name)).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing annotation_images/0_type/000000000000\.jpg, "
                                                r"annotation_images/1_type/000000000001\.jpg\."):
        PieBench(folder, mask_size=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing dataset_dict\.json or state\.json, \*\.parquet"):
        EmuEdit(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"lacks the columns \['image', 'input_caption', 'output_caption', 'task', "
                                         r"'idx'\]"):
        EmuEdit(write_magicbrush(tmp_path / "mb"))


def test_images_and_masks_of_different_sizes(tmp_path):
    with pytest.raises(ValueError, match=r"masks are 512×512 \(`mask_size`\), but these images have another size: "
                                         r"000000000000 \(16×16\), 000000000001 \(16×16\), 000000000002 \(16×16\)"):
        PieBench(write_pie_bench(tmp_path / "pie"))


def test_unknown_metric_name_and_missing_captions_are_usage_errors(tmp_path, folders, capsys):
    pie = write_pie_bench(tmp_path / "pie")
    with pytest.raises(SystemExit):
        main(["pie-bench", "--data", str(pie), "--mask-size", "16", "--model", folders["uip2p"], "--output",
              str(tmp_path / "run"), "--metrics", "psnr", "sharpness"])
    assert "unknown metric(s) ['sharpness']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["magicbrush", "--data", str(write_magicbrush(tmp_path / "mb")), "--model", folders["uip2p"],
              "--output", str(tmp_path / "run"), "--clip-model", folders["clip"], "--metrics", "l1", "clip_t"])
    assert "magicbrush items have no target_caption, which the metrics ['clip_t'] read (add the local captions " \
           "as an `output_caption` column)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["emu-edit", "--data", str(write_emu_edit(tmp_path / "emu")), "--model", folders["uip2p"],
              "--output", str(tmp_path / "run"), "--metrics", "l1"])
    assert "holds the splits ['test', 'validation']; choose one with `split`" in capsys.readouterr().err


def test_editors_refuse_items_without_their_inputs(tmp_path, uip2p_editor):
    prompt_editor = editor_for(AutoEditPipeline(**tiny_text_to_image_components()), "tiny", num_inference_steps=2)
    with pytest.raises(ValueError, match="use an instruction-based model"):
        run_benchmark(MagicBrush(write_magicbrush(tmp_path / "mb")), prompt_editor, Metrics(["l1"]), tmp_path / "run")
    with pytest.raises(ValueError, match="edit_method applies to AutoEditPipeline"):
        editor_for(uip2p_editor.pipe, "tiny", edit_method="p2p")
