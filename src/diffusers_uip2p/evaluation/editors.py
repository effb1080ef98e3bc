"""Editors: one calling convention, ``editor(image, *, instruction, source_prompt, target_prompt) -> PIL image``,
for the pipelines a benchmark can run, with a ``describe()`` dict for result files and a ``details`` dict
about the last edit.

`InstructionEditor` runs `UIP2PPipeline` or diffusers' `StableDiffusionInstructPix2PixPipeline` on the
instruction; `PromptEditor` runs `AutoEditPipeline`: Dual-Schedule Inversion with the source prompt, then an
edit towards the target prompt with a chosen ``edit_method``. Both fix their seed on every call.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import PIL.Image
import torch

from ..shapes.pretrained import shared_components

PIPELINE_KINDS = ("uip2p", "instruct-pix2pix", "auto-edit")
_KIND_OF_CLASS = {"UIP2PPipeline": "uip2p", "StableDiffusionInstructPix2PixPipeline": "instruct-pix2pix",
                  "AutoEditPipeline": "auto-edit", "StableDiffusionPipeline": "auto-edit"}


def weights_fingerprint(pipe) -> str:
    """SHA-256 of every weight of a pipeline's modules (names, dtypes, shapes, values), so a result folder
    knows which weights it measured: a model id such as "shipped Shapes pipeline" stays the same when the
    weights behind it are retrained, and a resumed run must not mix the two."""
    digest = hashlib.sha256()
    for name, component in sorted(pipe.components.items()):
        if not isinstance(component, torch.nn.Module):
            continue
        for key, tensor in component.state_dict().items():
            digest.update(f"{name}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class InstructionEditor:
    """Instruction-based editing with `UIP2PPipeline` or `StableDiffusionInstructPix2PixPipeline`; the
    defaults are that pipeline's own (100 steps, text guidance 7.5, image guidance 1.5)."""

    def __init__(self, pipe, *, model_id: str, seed: int = 0, num_inference_steps: int = 100,
                 guidance_scale: float = 7.5, image_guidance_scale: float = 1.5):
        self.pipe, self.model_id, self.seed = pipe, model_id, seed
        self.options = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                        "image_guidance_scale": image_guidance_scale}
        pipe.set_progress_bar_config(disable=True)

    def __call__(self, image, *, instruction=None, source_prompt=None, target_prompt=None) -> PIL.Image.Image:
        if not instruction:
            raise ValueError(f"{type(self.pipe).__name__} edits by instruction, and this item has none; use a "
                             "prompt-based model (AutoEditPipeline) on benchmarks without instructions.")
        generator = torch.Generator().manual_seed(self.seed)
        return self.pipe(instruction, image=image, generator=generator, **self.options).images[0]

    def describe(self) -> dict:
        return {"method": type(self.pipe).__name__, "model": self.model_id, "weights": weights_fingerprint(self.pipe),
                "input": "instruction", "seed": self.seed, **self.options, "dtype": str(self.pipe.unet.dtype),
                "safety_checker": self.pipe.safety_checker is not None}


class PromptEditor:
    """`AutoEditPipeline`: invert the image with Dual-Schedule Inversion and its source prompt, then edit it
    towards the target prompt with ``edit_method`` ("direct", "p2p", "masactrl", "sdedit" or "auto").
    ``details`` holds the method (and, with "auto", the task) the last edit used."""

    def __init__(self, pipe, *, model_id: str, seed: int = 0, edit_method: str = "auto",
                 num_inference_steps: int = 50, guidance_scale: float = 7.5):
        self.pipe, self.model_id, self.seed, self.details = pipe, model_id, seed, {}
        self.options = {"edit_method": edit_method, "num_inference_steps": num_inference_steps,
                        "guidance_scale": guidance_scale}
        pipe.set_progress_bar_config(disable=True)

    def __call__(self, image, *, instruction=None, source_prompt=None, target_prompt=None) -> PIL.Image.Image:
        if source_prompt is None or target_prompt is None:
            raise ValueError("AutoEditPipeline edits from a source prompt to a target prompt, and this item has "
                             "none; use an instruction-based model (UIP2P, InstructPix2Pix) on this benchmark.")
        torch.manual_seed(self.seed)  # DSI editing draws no noise; this pins anything else that might
        out = self.pipe(target_prompt, image=image, source_prompt=source_prompt, **self.options)
        self.details = {"edit_method": out.edit_method} | ({"edit_task": out.edit_task} if out.edit_task else {})
        return out.images[0]

    def describe(self) -> dict:
        return {"method": f"DSI + {self.options['edit_method']}", "model": self.model_id,
                "weights": weights_fingerprint(self.pipe), "input": "prompts", "seed": self.seed, **self.options,
                "dtype": str(self.pipe.unet.dtype),
                "safety_checker": self.pipe.safety_checker is not None}


def editor_for(pipe, model_id: str, *, seed: int = 0, **options):
    """The editor for a loaded pipeline: `PromptEditor` for `AutoEditPipeline`, `InstructionEditor` for
    InstructPix2Pix-architecture pipelines. ``options`` are the editor's (num_inference_steps, guidance_scale,
    edit_method or image_guidance_scale); those left as None keep the editor's defaults."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from ..pipelines import AutoEditPipeline

    options = {name: value for name, value in options.items() if value is not None}
    if isinstance(pipe, AutoEditPipeline):
        if "image_guidance_scale" in options:
            raise ValueError("image_guidance_scale applies to instruction-based pipelines, not AutoEditPipeline.")
        return PromptEditor(pipe, model_id=model_id, seed=seed, **options)
    if isinstance(pipe, StableDiffusionInstructPix2PixPipeline):
        if "edit_method" in options:
            raise ValueError(f"edit_method applies to AutoEditPipeline (prompt-based editing), not to "
                             f"{type(pipe).__name__}.")
        return InstructionEditor(pipe, model_id=model_id, seed=seed, **options)
    raise TypeError(f"pipe must be an AutoEditPipeline, UIP2PPipeline or StableDiffusionInstructPix2PixPipeline, "
                    f"got {type(pipe).__name__}.")


def load_pipeline(model: str, kind: str | None = None, dtype: torch.dtype | None = None):
    """``model`` (a local folder or a Hub id) loaded with ``from_pretrained`` as ``kind`` ("uip2p",
    "instruct-pix2pix" or "auto-edit"; by default read from its model_index.json), safetensors only and
    without a safety checker (it would blacken images the metrics then score)."""
    from diffusers import DiffusionPipeline, StableDiffusionInstructPix2PixPipeline

    from ..pipelines import AutoEditPipeline, UIP2PPipeline

    if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(f"No pipeline folder at {model} (`model`).")
    if kind is None:
        class_name = DiffusionPipeline.load_config(model).get("_class_name")
        kind = _KIND_OF_CLASS.get(class_name)
        if kind is None:
            raise ValueError(f"{model} holds a {class_name}; say how to run it with `pipeline` "
                             f"(one of {', '.join(PIPELINE_KINDS)}).")
    classes = {"uip2p": UIP2PPipeline, "instruct-pix2pix": StableDiffusionInstructPix2PixPipeline,
               "auto-edit": AutoEditPipeline}
    if kind not in classes:
        raise ValueError(f"pipeline must be one of {', '.join(PIPELINE_KINDS)}, got {kind!r}.")
    kwargs = {"safety_checker": None, "feature_extractor": None, "use_safetensors": True, "dtype": dtype}
    if kind != "auto-edit":
        kwargs["requires_safety_checker"] = False
    shared = shared_components(model, dtype) if Path(model).is_dir() else {}
    return classes[kind].from_pretrained(model, **shared, **kwargs)
