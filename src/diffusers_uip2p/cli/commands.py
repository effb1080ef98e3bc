"""What each ``diffusers-uip2p`` subcommand does, given its parsed arguments; each returns a JSON-ready
report that the CLI prints and also writes next to the pictures."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import PIL.Image
import torch

from .. import strict_json
from ..evaluation import ddim_round_trip, ddim_steps_for_same_budget, psnr, relative_error
from ..pipelines.progress import progress_label
from ..shapes.pretrained import resolve_model, shared_components
from .images import fit_to_model, open_image, sample_caption, side_by_side

SHIPPED = "shipped Shapes {}"


def _on_shapes_models(args: argparse.Namespace) -> bool:
    """The command runs a shipped Shapes model (the default, or ``--model shapes:NAME``)."""
    return args.model is None or args.model.startswith("shapes:")


def _vocabulary_check(args: argparse.Namespace, forgiving: bool = False, **texts: str | None) -> None:
    """Every text must hold a word; the shipped Shapes models know only the Shapes world's words: say so
    before running them. ``forgiving``: the instruction is rewritten in the templates' words first
    (`_judgeable`), so the synonyms it rewrites away pass."""
    for argument, text in texts.items():
        if text is not None and not re.search(r"\w", text):
            raise ValueError(f"{argument} {text!r} has no word in it; say what the edit should do.")
    if _on_shapes_models(args):
        from ..shapes.language import FORGIVEN_WORDS, check_vocabulary

        for argument, text in texts.items():
            if text is not None:
                check_vocabulary(text, argument, FORGIVEN_WORDS if forgiving and argument == "instruction" else
                                 frozenset())


def _judgeable(args: argparse.Namespace, path: Path, **instructions: str | None) -> dict[str, str | None]:
    """On a shipped sample with a Shapes model: an instruction the evaluator cannot read on that scene would
    run the model for nothing and come back unjudged, so it is refused first, with the reason; one it can
    read comes back in the templates' phrasing (the one the Shapes editors learned), e.g. "Make the circle
    BLUE!" → "make the red circle blue". Otherwise the instructions come back as given."""
    caption = sample_caption(path)
    if caption is None or not _on_shapes_models(args):
        return instructions
    from ..shapes.language import canonical_instruction, parse_caption

    read = {}
    for argument, instruction in instructions.items():
        if instruction is None or not re.search(r"\w", instruction):  # nothing to read: _vocabulary_check says so
            read[argument] = instruction
            continue
        scene = parse_caption(caption)
        try:
            read[argument] = canonical_instruction(scene, instruction) if argument == "instruction" else instruction
        except ValueError as error:
            raise ValueError(f"{argument} {instruction!r} is not an edit the Shapes evaluator can read on "
                             f"{path.stem} ({caption!r}): {error}") from error
    return read


def _source_caption(path: Path, given: str | None, argument: str) -> str:
    """``given``, else the caption of a shipped sample scene, else a clear error."""
    if given is not None:
        return given
    caption = sample_caption(path)
    if caption is None:
        raise ValueError(f"{argument} is required for {str(path)!r}: the caption the image is inverted with "
                         "(it is known only for the shipped sample scenes).")
    return caption


def caption(args: argparse.Namespace, load: Loader | None = None) -> dict:
    """The source prompt to invert ``args.image`` with, and where it came from: a shipped sample's own
    caption; else, on the shipped Shapes models, the scene the Shapes evaluator reads off the image (a
    Shapes-world picture is read exactly); else the pipeline's captioner (BLIP), if it has one."""
    from ..shapes.evaluator import read_scene
    from ..shapes.scenes import Scene

    image, path = open_image(args.image)
    known = sample_caption(path)
    if known is not None:
        return {"source_prompt": known, "from": "the sample's own caption"}
    if _on_shapes_models(args):
        reading = read_scene(image) if image.size == (64, 64) else None
        if reading is None or not reading.readable or not reading.objects:
            raise ValueError(f"{str(path)!r} does not read as a Shapes-world scene (a 64×64 picture of up to "
                             "three shapes), and the shipped models know no other words: type its caption.")
        scene = Scene(reading.objects, reading.background, reading.pattern, reading.style)
        return {"source_prompt": scene.caption(), "from": "the Shapes evaluator's reading of the image"}
    pipe = (load or load_auto_edit_pipeline)(args.model)
    if getattr(pipe, "captioner", None) is None or getattr(pipe, "caption_processor", None) is None:
        raise ValueError(f"the model {args.model!r} has no captioner: type the source prompt.")
    from ..pipelines.routing import caption_image

    return {"source_prompt": caption_image(pipe.captioner, pipe.caption_processor, image),
            "from": "the pipeline's captioner"}


def _shapes_verdict(path: Path, edited: PIL.Image.Image, instruction: str | None = None,
                    target_prompt: str | None = None) -> dict | None:
    """The Shapes evaluator's verdict on an edit of a shipped sample scene (whose true caption is known):
    by the instruction's true result, or (auto-edit) by whether the output shows the target caption."""
    from ..shapes.evaluator import judge_caption, judge_edit

    caption = sample_caption(path)
    if caption is None:
        return None
    try:
        if instruction is not None:
            judged = judge_edit(caption, instruction, edited)
            return {"success": judged.success, "edit_applied": judged.edit_applied, "preserved": judged.preserved}
        judged = judge_caption(target_prompt, edited)
        return {"objects_correct": judged.objects_correct, "exact": judged.exact}
    except ValueError as error:  # a phrasing the world's templates do not cover
        return {"not_judged": str(error)}


@dataclass
class Result:
    """What a command computed, before anything is written: the command line saves it (`write`), the app
    shows it. ``output`` is the pipeline's own output, every field of it; ``columns`` are the grid's
    (edit: input | edit [| reverse edit]; auto-edit: input | exact reconstruction | edit)."""

    name: str
    report: dict
    image: PIL.Image.Image
    columns: list[PIL.Image.Image]
    output: Any = None
    attention: PIL.Image.Image | None = None


def write(output: str, result: Result, scale: int) -> dict:
    """Save the image, the grid, the attention maps (if drawn) and the JSON report; return the report."""
    folder, name, report = Path(output), result.name, result.report
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{name}.png", folder / f"{name}-grid.png"]
    result.image.save(files[0])
    side_by_side(result.columns, scale).save(files[1])
    if result.attention is not None:
        files.append(folder / f"{name}-attention.png")
        result.attention.save(files[-1])
    files.append(folder / f"{name}.json")
    report["files"] = [str(f) for f in files]
    files[-1].write_text(strict_json.dumps(report, indent=2))
    return report


def _attention_picture(image: PIL.Image.Image, output, asked: bool) -> PIL.Image.Image | None:
    """The first image's per-token cross-attention maps over ``image``, when they were asked for."""
    if not asked:
        return None
    from ..attention import draw_token_maps

    return draw_token_maps(image, output.attention_maps[0], cell_size=96)


def _shared(model: str) -> dict:
    folder = Path(resolve_model(model))
    return shared_components(folder) if folder.is_dir() else {}


def load_auto_edit_pipeline(model: str | None):
    """The text-to-image pipeline `auto-edit` and `reconstruct` run: ``model``, or the shipped Shapes one."""
    from ..pipelines import AutoEditPipeline

    if model is None:
        from ..shapes.pretrained import load_shapes_pipeline

        return load_shapes_pipeline()
    return AutoEditPipeline.from_pretrained(resolve_model(model), **_shared(model), safety_checker=None,
                                            feature_extractor=None)


def load_edit_pipeline(model: str | None):
    """The instruction editor `edit` runs: ``model``, or the shipped Shapes UIP2P model."""
    from ..pipelines import UIP2PPipeline

    if model is None:
        from ..shapes.pretrained import load_shapes_editor

        return load_shapes_editor("uip2p")
    return UIP2PPipeline.from_pretrained(resolve_model(model), **_shared(model), safety_checker=None,
                                         feature_extractor=None)


Loader = Callable[[str | None], Any]


def compute_edit(args: argparse.Namespace, load: Loader = load_edit_pipeline) -> Result:
    """Instruction editing with UIP2PPipeline; with --reverse, also the reverse edit and its reversibility
    score; with --candidates k, k seeds ranked by that score. Every check runs before ``load``."""
    if args.candidates != 1 and args.reverse is None:
        raise ValueError(f"--candidates {args.candidates} ranks edits by reversibility: give --reverse too.")
    image, path = open_image(args.image)
    _vocabulary_check(args, instruction=args.instruction, **{"--reverse": args.reverse},
                      forgiving=sample_caption(path) is not None)
    instruction = _judgeable(args, path, instruction=args.instruction)["instruction"]
    pipe = load(args.model)
    pipe.set_progress_bar_config(desc="edit", leave=False)
    image = fit_to_model(image, pipe, args.size)
    checked = args.reverse is not None
    out = pipe(instruction, image=image, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
               image_guidance_scale=args.image_guidance_scale, return_attention_maps=args.attention,
               **({"reverse_instruction": args.reverse, "num_candidates": args.candidates, "seed": args.seed}
                  if checked else {"generator": torch.Generator().manual_seed(args.seed)}))
    edited = out.images[0]
    report = {"command": "edit", "image": str(path), "instruction": instruction,
              **({"instruction_given": args.instruction} if instruction != args.instruction else {}),
              "reverse": args.reverse,
              "model": args.model or SHIPPED.format("UIP2P (ERC-trained)"), "size": list(image.size),
              "num_inference_steps": args.steps, "guidance_scale": args.guidance_scale,
              "image_guidance_scale": args.image_guidance_scale, "seed": args.seed}
    columns = [image, edited]
    if checked:
        report |= {"candidates": args.candidates, "chosen_seed": out.seeds[0],
                   "reversibility": out.reversibility[:args.candidates], "seeds": out.seeds[:args.candidates]}
        columns.append(out.reconstructions[0])
    report["shapes_evaluator"] = _shapes_verdict(path, edited, instruction=instruction)
    return Result("edit", report, edited, columns, out, _attention_picture(image, out, args.attention))


def edit(args: argparse.Namespace) -> dict:
    return write(args.output, compute_edit(args), args.scale)


def compute_auto_edit(args: argparse.Namespace, load: Loader = load_auto_edit_pipeline) -> Result:
    """Dual-Schedule Inversion with the source prompt, then an edit towards the target prompt by the chosen
    (or, with --method auto, the classifier's) method. The source branch's latents are the exact
    reconstruction: the report gives their error against the image's own latents, and the grid shows them."""
    _vocabulary_check(args, **{"target prompt": args.target_prompt, "--source-prompt": args.source_prompt})
    image, path = open_image(args.image)
    source = args.source_prompt
    if args.model is None:  # the shipped pipeline has no captioner: fail before loading it
        source = _source_caption(path, source, "--source-prompt")
    pipe = load(args.model)
    pipe.set_progress_bar_config(desc="auto-edit", leave=False)
    image = fit_to_model(image, pipe, args.size)
    if getattr(pipe, "captioner", None) is None:
        source = _source_caption(path, source, "--source-prompt")
    out = pipe(args.target_prompt, image=image, source_prompt=source, edit_method=args.method,
               target_rule=args.target_rule, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
               return_attention_maps=args.attention)
    with torch.no_grad():
        latents = pipe.encode_images(pipe.preprocess_images(image)).to(out.source_latents)
        reconstruction = pipe.decode_latents_to_images(out.source_latents, "pil")[0]
    report = {"command": "auto-edit", "image": str(path), "source_prompt": out.source_prompt or source,
              "target_prompt": args.target_prompt, "model": args.model or SHIPPED.format("text-to-image pipeline"),
              "size": list(image.size), "method_asked": args.method, "edit_method": out.edit_method,
              "edit_task": out.edit_task, "task_probabilities": out.task_probabilities, "task_rule": out.task_rule,
              "edit_parameters": out.edit_parameters, "num_inference_steps": args.steps,
              "guidance_scale": args.guidance_scale,
              "reconstruction_latent_relative_error": relative_error(out.source_latents, latents)}
    edited = out.images[0]
    report["shapes_evaluator"] = _shapes_verdict(path, edited, target_prompt=args.target_prompt)
    return Result("auto-edit", report, edited, [image, reconstruction, edited], out,
                  _attention_picture(image, out, args.attention))


def auto_edit(args: argparse.Namespace) -> dict:
    return write(args.output, compute_auto_edit(args), args.scale)


def reconstruct(args: argparse.Namespace) -> dict:
    """Exact inversion and reconstruction, against DDIM inversion at the same number of UNet calls."""
    _vocabulary_check(args, **{"--prompt": args.prompt})
    image, path = open_image(args.image)
    prompt = _source_caption(path, args.prompt, "--prompt")
    pipe = load_auto_edit_pipeline(args.model)
    pipe.set_progress_bar_config(desc="reconstruct", leave=False)
    image = fit_to_model(image, pipe, args.size)

    unet_calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda *_: unet_calls.append(1))
    inversion = pipe.invert(image, prompt, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                            output_type="pt")
    dsi = pipe(prompt, inversion=inversion, output_type="pt")
    hook.remove()

    model_fn = pipe.guided_model_fn(prompt, args.guidance_scale)
    with torch.no_grad(), progress_label(pipe, "DDIM baseline"):
        ddim_latents, ddim_calls = ddim_round_trip(pipe.scheduler.config, inversion.latents, model_fn,
                                                   ddim_steps_for_same_budget(args.steps), pipe.progress_bar)
        ddim_images = pipe.decode_latents_to_images(ddim_latents, "pt")
    original = pipe.image_processor.postprocess(pipe.preprocess_images(image), output_type="pt")
    ceiling = inversion.vae_reconstruction
    report = {
        "command": "reconstruct", "image": str(path), "prompt": prompt,
        "model": args.model or SHIPPED.format("text-to-image pipeline"),
        "num_inference_steps": args.steps, "guidance_scale": args.guidance_scale,
        "dsi": {"unet_calls": len(unet_calls), "latent_relative_error": relative_error(dsi.latents, inversion.latents),
                "psnr_vs_vae_round_trip_db": psnr(dsi.images, ceiling)},
        "ddim": {"unet_calls": ddim_calls, "latent_relative_error": relative_error(ddim_latents, inversion.latents),
                 "psnr_vs_vae_round_trip_db": psnr(ddim_images, ceiling)},
        "vae_round_trip_psnr_vs_input_db": psnr(ceiling, original),
    }
    processor = pipe.image_processor
    columns = [processor.numpy_to_pil(processor.pt_to_numpy(x))[0]
               for x in (original, ceiling, dsi.images, ddim_images)]
    return write(args.output, Result("reconstruction", report, columns[2], columns), args.scale)


def convert(args: argparse.Namespace) -> dict:
    """Widen a text-to-image folder's UNet to InstructPix2Pix/UIP2P's 8 input channels (new channels zero)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from ..pipelines import UIP2PPipeline, convert_pipeline_folder

    pipeline_class = UIP2PPipeline if args.record_uip2p else StableDiffusionInstructPix2PixPipeline
    pipe = convert_pipeline_folder(args.model, args.output, pipeline_class=pipeline_class,
                                   euler_ancestral=not args.keep_scheduler)
    return {"command": "convert", "model": args.model, "output": str(Path(args.output)),
            "pipeline_class": pipeline_class.__name__, "unet_in_channels": pipe.unet.config.in_channels,
            "scheduler": type(pipe.scheduler).__name__}
