"""train_uip2p end to end on tiny models: saving, resuming, LoRA, the Hub check, bad bases, two processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from diffusers_uip2p import UIP2PPipeline
from diffusers_uip2p.shapes.dataset import export_jsonl, split_edits
from diffusers_uip2p.testing import (
    tiny_clip_model,
    tiny_instruct_pix2pix_components,
    tiny_text_to_image_components,
)
from diffusers_uip2p.training import encoded_records, train_uip2p
from diffusers_uip2p.training.batches import RunClock

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state; each run here sets its own precision, as a new process would."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny IP2P pipeline, a tiny text-to-image pipeline, a tiny CLIP and six Shapes training records."""
    root = tmp_path_factory.mktemp("train_uip2p")
    UIP2PPipeline(**tiny_instruct_pix2pix_components(), safety_checker=None, feature_extractor=None,
                  requires_safety_checker=False).save_pretrained(root / "ip2p")
    StableDiffusionPipeline(**tiny_text_to_image_components(), safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(root / "t2i")
    clip, tokenizer = tiny_clip_model()
    clip.save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    export_jsonl(split_edits("train", 6), root / "records")
    return root


def arguments(assets, output, *extra, steps=4, base="ip2p", data=None):
    return ["--pretrained_model_name_or_path", str(assets / base), "--train_data", str(data or assets / "records"),
            "--clip_model_name_or_path", str(assets / "clip"), "--output_dir", str(output), "--resolution", "16",
            "--train_batch_size", "2", "--max_train_steps", str(steps), "--learning_rate", "1e-3",
            "--checkpointing_steps", "2", *extra]


def log(output) -> list[dict]:
    return [json.loads(line) for line in (Path(output) / "training_log.jsonl").read_text().splitlines()]


def test_erc_run_saves_a_pipeline_that_edits(assets, tmp_path):
    output = tmp_path / "run"
    train_uip2p.main(arguments(assets, output, "--use_ema", "--ema_decay", "0.9", "--gradient_checkpointing",
                               "--validation_image",
                               str(assets / "records" / "images" / "000000.png"), "--validation_prompt",
                               "make the circle red", "--validation_steps", "2"))
    assert [row["step"] for row in log(output)] == [1, 2, 3, 4]
    assert {"clip", "sim", "recon", "attn"} <= set(log(output)[0])
    pipe = UIP2PPipeline.from_pretrained(output, safety_checker=None, feature_extractor=None)
    edited = pipe("make the circle red", image=torch.rand(1, 3, 16, 16), num_inference_steps=2,
                  output_type="np").images
    assert edited.shape == (1, 16, 16, 3) and torch.isfinite(torch.from_numpy(edited)).all()
    card = (output / "README.md").read_text()
    assert "lambda_attn" in card and "ip2p" in card and "validation/step-000004.png" in card
    assert (output / "validation" / "step-000002.png").is_file()
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_resumed_run_continues_exactly(assets, tmp_path):
    """Stopped after step 2 and resumed, a run logs the same losses and saves the same (EMA) weights as an
    uninterrupted one."""
    extra = ("--use_ema", "--ema_decay", "0.9", "--random_flip", "--lr_scheduler", "cosine")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_uip2p.main(arguments(assets, whole, *extra))
    train_uip2p.main(arguments(assets, parts, *extra))
    # Simulate a cut after step 3: checkpoint-2 is the last one; the log already holds step 3.
    for name in ("checkpoint-4", "unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json",
                 "README.md"):
        path = parts / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    rows = log(parts)[:3]
    (parts / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    train_uip2p.main(arguments(assets, parts, *extra, "--resume_from_checkpoint", "latest"))
    assert [r["step"] for r in log(parts)] == [1, 2, 3, 4]
    for a, b in zip(log(whole), log(parts), strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)

    def loss_line(run):  # the card's loss means cover the steps before the resume too
        return next(line for line in (run / "README.md").read_text().splitlines() if line.startswith("Mean of"))

    assert loss_line(parts) == loss_line(whole) and "clip" in loss_line(parts)
    first = UNet2DConditionModel.from_pretrained(whole / "unet").state_dict()
    second = UNet2DConditionModel.from_pretrained(parts / "unet").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_supervised_run_and_a_text_to_image_base(assets, tmp_path):
    output = tmp_path / "supervised"
    train_uip2p.main(arguments(assets, output, "--mode", "supervised", steps=2, base="t2i"))
    assert set(log(output)[0]) == {"step", "loss", "lr"}
    unet = UNet2DConditionModel.from_pretrained(output / "unet")
    assert unet.config.in_channels == 8


def test_lora_weights_load_into_the_pipeline(assets, tmp_path):
    output = tmp_path / "lora"
    train_uip2p.main(arguments(assets, output, "--lora_rank", "4", "--mixed_precision", "bf16", steps=2))
    assert (output / "pytorch_lora_weights.safetensors").is_file()
    pipe = UIP2PPipeline.from_pretrained(assets / "ip2p", safety_checker=None, feature_extractor=None)
    torch.manual_seed(0)
    sample, text = torch.randn(1, 8, 8, 8), torch.randn(1, 77, 32)

    def unet_output():
        with torch.no_grad():
            return pipe.unet(sample, 500, encoder_hidden_states=text).sample

    before = unet_output()
    pipe.load_lora_weights(output)
    assert (unet_output() - before).abs().max() > 1e-6


def test_push_to_hub_refuses_before_training_offline_or_without_a_token(assets, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        train_uip2p.main(arguments(assets, tmp_path / "hub", "--push_to_hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(ValueError, match="token"):
        train_uip2p.main(arguments(assets, tmp_path / "hub", "--push_to_hub"))
    assert not (tmp_path / "hub").exists()


def test_bad_bases_and_mismatched_data(assets, tmp_path):
    wrong = tmp_path / "wrong"
    StableDiffusionPipeline(**tiny_text_to_image_components(), safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(wrong)
    config = UNet2DConditionModel.load_config(wrong / "unet")
    UNet2DConditionModel.from_config({**config, "in_channels": 6}).save_pretrained(wrong / "unet")
    with pytest.raises(ValueError, match="6 input channels"):
        train_uip2p.main(["--pretrained_model_name_or_path", str(wrong), *arguments(assets, tmp_path / "o1")[2:]])
    with pytest.raises(ValueError, match="LoRA"):
        train_uip2p.main(arguments(assets, tmp_path / "o2", "--lora_rank", "2", base="t2i"))
    records = tmp_path / "unpaired"
    lines = (assets / "records" / "records.jsonl").read_text().splitlines()
    records.mkdir()
    (records / "images").symlink_to(assets / "records" / "images")
    (records / "records.jsonl").write_text("".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "edited_image"}) + "\n" for line in lines))
    args = arguments(assets, tmp_path / "o3", "--mode", "supervised")
    args[args.index("--train_data") + 1] = str(records)
    with pytest.raises(ValueError, match="edited"):
        train_uip2p.main(args)


def test_health_checks_are_logged_and_carded(assets, tmp_path):
    output = tmp_path / "health"
    train_uip2p.main(arguments(assets, output, "--mode", "supervised", "--health_data", str(assets / "records"),
                               "--health_records", "4", "--health_steps", "2"))
    checks = [row for row in log(output) if "health" in row]
    assert [row["step"] for row in checks] == [2, 4]
    health = checks[-1]["health"]
    for name in ("edit_eps_low", "edit_eps_high", "input_eps_low", "input_eps_high", "edit_eps_ratio",
                 "input_eps_ratio", "bound_edit_eps_low", "bound_edit_eps_high", "bound_input_eps_low",
                 "bound_input_eps_high"):
        assert health[name] > 0, name
    assert checks[0]["health"]["bound_edit_eps_low"] == health["bound_edit_eps_low"]  # the base's, computed once
    assert all(isinstance(row["improving"], bool) for row in checks)
    assert [row["step"] for row in log(output) if "health" not in row] == [1, 2, 3, 4]
    card = (output / "README.md").read_text()
    assert "## Health checks" in card and "edit_eps_ratio" in card and "Base model's bounds" in card


def test_shapes_health_checks_judge_sampled_edits(assets, tmp_path):
    output = tmp_path / "shapes-health"
    train_uip2p.main(arguments(assets, output, "--health_data", "shapes", "--health_records", "3",
                               "--health_edits", "2", "--lambda_attn", "0", steps=2))
    health = [row for row in log(output) if "health" in row][-1]["health"]
    assert health["judged_edits"] == 2 and 0 <= health["success"] <= health["preserved"] + 1e-9 <= 1 + 1e-9
    assert "denoise" in log(output)[0]  # ERC runs with the denoising anchor by default


def test_health_and_recipe_bad_input(assets, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_uip2p.main(arguments(assets, tmp_path / "a", "--lambda_denoise", "-1"))
    assert "--lambda_denoise must be a finite number >= 0, got -1.0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--health_data 'missing-folder' is neither 'shapes' nor an existing"):
        train_uip2p.main(arguments(assets, tmp_path / "b", "--health_data", "missing-folder", steps=1))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "records.jsonl").write_text(json.dumps({"image": "images/none.png", "input_caption": "a",
                                                     "edit_instruction": "b", "edited_caption": "c",
                                                     "edited_image": "images/none.png"}) + "\n")
    with pytest.raises(ValueError, match=r"--health_data .*empty: No usable records"):
        train_uip2p.main(arguments(assets, tmp_path / "c", "--mode", "supervised", "--health_data", str(empty),
                                   steps=1))
    run = tmp_path / "d"
    train_uip2p.main(arguments(assets, run, "--mode", "supervised", steps=2))
    with pytest.raises(ValueError, match=r"recipe differs .*--snr_gamma \(5.0 there, 0.0 here\)"):
        train_uip2p.main(arguments(assets, run, "--mode", "supervised", "--snr_gamma", "0",
                                   "--resume_from_checkpoint", "latest", steps=4))


def test_two_processes_agree_and_only_the_main_one_writes(assets, tmp_path):
    """Two data-parallel processes on the CPU (gloo), launched with the documented config. Accelerate 1.x starts
    several CPU processes through its torchrun launcher (``--multi_gpu``); ``--cpu`` alone starts one process
    (or several under MPI)."""
    output = tmp_path / "ddp"
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [str(accelerate), "launch", "--config_file", str(CONFIGS / "cpu_2_processes.yaml"),
               "-m", "diffusers_uip2p.training.train_uip2p", *arguments(assets, output, steps=2)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"Timed out; stdout: {timeout.stdout}\nstderr: {timeout.stderr}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) agree on the weights" in result.stdout + result.stderr
    assert [row["step"] for row in log(output)] == [1, 2]  # one writer: each step logged once
    UIP2PPipeline.from_pretrained(output, safety_checker=None, feature_extractor=None)


@pytest.mark.parametrize("name", ["multi_gpu", "deepspeed_zero2", "cpu_2_processes"])
def test_documented_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.num_processes >= 2 and config.main_training_function == "main"


def test_task_classifier_push_refuses_before_training_without_a_token(monkeypatch):
    from diffusers_uip2p.training import train_task_classifier

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.setattr(train_task_classifier, "Accelerator", lambda: pytest.fail("training started"))
    with pytest.raises(ValueError, match="token"):
        train_task_classifier.main(["--pretrained_model_name_or_path", "unused", "--output_dir", "unused",
                                    "--push_to_hub"])


def test_run_clock_continues_from_its_checkpointed_seconds():
    clock = RunClock()
    clock.load_state_dict({"seconds": 3600.0})
    assert 3600.0 <= clock.state_dict()["seconds"] < 3660.0


def test_training_bad_input_is_named_before_any_work(assets, tmp_path):
    records = tmp_path / "no-images"
    records.mkdir()
    lines = (assets / "records" / "records.jsonl").read_text().splitlines()
    (records / "records.jsonl").write_text("".join(  # every image path points nowhere
        json.dumps({**json.loads(line), "image": "missing.png"}) + "\n" for line in lines))
    args = arguments(assets, tmp_path / "a")
    args[args.index("--train_data") + 1] = str(records)
    with pytest.warns(UserWarning, match="Skipping"), pytest.raises(ValueError, match="None of the dataset's 6 records"):
        train_uip2p.main(args)
    with pytest.raises(ValueError, match=r"--resolution 18 is not a multiple of 4"):
        train_uip2p.main(arguments(assets, tmp_path / "b", "--resolution", "18"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="--output_dir .*a-file/run: cannot write there"):
        train_uip2p.main(arguments(assets, blocker / "run"))
    with pytest.raises(SystemExit):
        train_uip2p.main(arguments(assets, tmp_path / "c", "--max_bad_fraction", "2"))


def test_bad_records_stop_at_the_threshold():
    from diffusers_uip2p.training.batches import BadRecords

    bad = BadRecords(max_fraction=0.5, minimum=10)
    bad.count(8, 2)  # 6 of 8 bad, but fewer than 10 asked
    with pytest.raises(ValueError, match=r"10 of the 12 records read so far were unusable \(over --max_bad_fraction 0.5\)"):
        bad.count(4, 0)


def test_resume_refuses_broken_checkpoints(assets, tmp_path):
    run = tmp_path / "run"
    train_uip2p.main(arguments(assets, run, steps=2))
    good = run / "checkpoint-2"
    cases = {"empty": lambda p: p.mkdir(), "renamed": lambda p: shutil.copytree(good, p)}
    for name, make in cases.items():
        folder = tmp_path / (name if name == "empty" else "checkpoint-two")
        make(folder)
        match = "holds no model.safetensors" if name == "empty" else "named checkpoint-<step>, got 'checkpoint-two'"
        if name == "empty":
            folder = folder.rename(tmp_path / "checkpoint-9")
        with pytest.raises(ValueError, match=match):
            train_uip2p.main(arguments(assets, run, "--resume_from_checkpoint", str(folder), steps=4))
    corrupt = tmp_path / "checkpoint-2"
    shutil.copytree(good, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="model.safetensors is unreadable"):
        train_uip2p.main(arguments(assets, run, "--resume_from_checkpoint", str(corrupt), steps=4))


def test_a_run_killed_while_saving_resumes_from_the_last_whole_checkpoint(assets, tmp_path, monkeypatch):
    """The save of checkpoint-4 dies half-way (model written, the rest not): resume takes checkpoint-2 and logs
    the same losses as an uninterrupted run."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train_uip2p.main(arguments(assets, whole, steps=6))
    save = train_uip2p.save_training_state

    def dies_at_step_4(folder, *args):
        if "checkpoint-4" in str(folder):
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt("killed while saving")
        return save(folder, *args)

    monkeypatch.setattr(train_uip2p, "save_training_state", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_uip2p.main(arguments(assets, cut, steps=6))
    monkeypatch.setattr(train_uip2p, "save_training_state", save)
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4.partial"]
    train_uip2p.main(arguments(assets, cut, "--resume_from_checkpoint", "latest", steps=6))
    for a, b in zip(log(whole), log(cut), strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_checkpoints_are_safetensors_and_json_and_resume_unpickles_nothing(assets, tmp_path, monkeypatch):
    """Accelerate's save_state pickles the optimizer, the random states and registered objects (and reads the
    last back with weights_only=False); a checkpoint here is safetensors and JSON, and a resume must not call
    any unpickler."""
    import pickle

    run = tmp_path / "run"
    train_uip2p.main(arguments(assets, run, "--use_ema", steps=2))
    names = sorted(p.name for p in (run / "checkpoint-2").iterdir())
    assert names == ["model.safetensors", "random_states_0.json", "random_states_0.safetensors", "recipe.json",
                     "training_state.json", "training_state.safetensors"]

    def refuse(*args, **kwargs):
        raise AssertionError("a resume unpickled a file")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    train_uip2p.main(arguments(assets, run, "--use_ema", "--resume_from_checkpoint", "latest", steps=3))
    assert [r["step"] for r in log(run)] == [1, 2, 3]
    (run / "checkpoint-3" / "training_state.json").unlink()
    with pytest.raises(ValueError, match=r"checkpoint-3: it holds no training_state.json"):
        train_uip2p.main(arguments(assets, run, "--use_ema", "--resume_from_checkpoint", "latest", steps=4))


def test_learning_curves_keep_every_health_row_and_average_the_loss(tmp_path):
    """`benchmarks/training_curves.py` ships compact logs; the tracked curves must match the full ones."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "training_curves.py"
    spec = importlib.util.spec_from_file_location("training_curves", path)
    curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curves)
    rows = [{"step": s, "loss": float(s)} for s in range(1, 8)] + [{"step": 4, "health": {"input_eps_ratio": 3.0}}]
    log_file = tmp_path / "training_log.jsonl"
    log_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    compact = curves.compact(log_file, window=3)
    assert [r for r in compact if "health" in r] == [rows[-1]]
    assert [(r["step"], r["loss"], r["steps_averaged"]) for r in compact if "loss" in r] == [(3, 2.0, 3), (6, 5.0, 3),
                                                                                            (7, 7.0, 1)]
    assert curves.health_curve(compact, "input_eps_ratio") == ([4], [3.0])


@pytest.mark.parametrize("mode", ["supervised", "erc"])
def test_encoded_records_train_as_encoding_every_step_does(assets, tmp_path, mode):
    """Latents encoded once (`encoded_records`) give the run the same losses and weights, bit for bit, as
    encoding the images every step."""
    latents = tmp_path / "latents.safetensors"
    encoded_records.main(["--pretrained_model_name_or_path", str(assets / "ip2p"), "--train_data",
                          str(assets / "records"), "--resolution", "16", "--batch_size", "2", "--output", str(latents)])
    runs = {}
    for name, extra in (("every step", ()), ("encoded", ("--encoded_records", str(latents)))):
        train_uip2p.main(arguments(assets, tmp_path / name, "--mode", mode, *extra, steps=3))
        runs[name] = tmp_path / name
    assert log(runs["every step"]) == log(runs["encoded"])
    first, second = (UNet2DConditionModel.from_pretrained(run / "unet").state_dict() for run in runs.values())
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_encoded_records_made_from_other_inputs_are_refused(assets, tmp_path):
    latents = tmp_path / "latents.safetensors"
    encode = ["--pretrained_model_name_or_path", str(assets / "ip2p"), "--train_data", str(assets / "records"),
              "--batch_size", "2", "--output", str(latents)]
    encoded_records.main([*encode, "--resolution", "8"])
    with pytest.raises(ValueError, match=r"--encoded_records .*resolution \('8' there, '16' here\)"):
        train_uip2p.main(arguments(assets, tmp_path / "a", "--encoded_records", str(latents), steps=1))
    with pytest.raises(ValueError, match="--encoded_records .*drop --random_flip"):
        train_uip2p.main(arguments(assets, tmp_path / "b", "--encoded_records", str(latents), "--random_flip", steps=1))
    with pytest.raises(ValueError, match="--encoded_records .*expected a .safetensors file"):
        train_uip2p.main(arguments(assets, tmp_path / "c", "--encoded_records", str(tmp_path / "none.pt"), steps=1))
    # Same records file and names, new pixels: caught on the first batch.
    records = tmp_path / "records"
    shutil.copytree(assets / "records", records)
    encode[3] = str(records)
    encoded_records.main([*encode, "--resolution", "16"])
    for image in (records / "images").glob("*.png"):
        Image.new("RGB", (64, 64), "black").save(image)
    with pytest.raises(ValueError, match="--encoded_records .*does not match the training images"):
        train_uip2p.main(arguments(assets, tmp_path / "d", "--encoded_records", str(latents), steps=1, data=records))
