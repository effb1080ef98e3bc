"""The trained Shapes-world models that ship inside the package (see each folder's README.md).

    pipe = load_shapes_pipeline()                              # AutoEditPipeline
    sd = load_shapes_pipeline(StableDiffusionPipeline)         # the same folder as a plain SD pipeline
    editor = load_shapes_editor()                              # UIP2PPipeline trained with ERC only
    baseline = load_shapes_editor("ip2p")                      # InstructPix2Pix trained on the true edits
    clip, tokenizer, processor = load_shapes_clip()
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from pathlib import Path

MODEL_NAMES = ("pipeline", "clip", "uip2p", "ip2p")
EDITOR_NAMES = ("uip2p", "ip2p")
SHIPPED_PREFIX = "shapes:"  # command lines name a shipped model as shapes:NAME


def shapes_model_path(name: str) -> Path:
    """Folder of a shipped model: ``pipeline`` (text-to-image, with VAE, text encoder and tokenizer), ``clip``,
    ``uip2p`` (instruction editing trained with ERC only) or ``ip2p`` (the supervised InstructPix2Pix baseline)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {', '.join(MODEL_NAMES)}, got {name!r}.")
    path = Path(str(resources.files("diffusers_uip2p.shapes") / "models" / name))
    if not (path / "README.md").is_file():
        raise FileNotFoundError(f"The shipped Shapes model {name!r} is missing from {path}; reinstall the package "
                                "or train it (see the README's Shapes section).")
    return path


def resolve_model(model: str) -> str:
    """``"shapes:NAME"`` (e.g. ``shapes:ip2p``) → that shipped model's folder; any other id unchanged."""
    if model.startswith(SHIPPED_PREFIX):
        return str(shapes_model_path(model[len(SHIPPED_PREFIX):]))
    return model


SHARED_FILE = "shared_components.json"


def shared_components(folder, dtype=None) -> dict:
    """The components a pipeline folder shares with another instead of carrying a copy, loaded, as keyword
    arguments for ``from_pretrained`` (empty for an ordinary folder).

    A folder may hold ``shared_components.json``, ``{"vae": "../pipeline", ...}``: each named component is
    loaded from that folder (relative to this one), with the class its own ``model_index.json`` names. The
    shipped editors share the text-to-image pipeline's VAE, text encoder and tokenizer this way, which they
    were trained with, frozen: the same weights, once in the package.
    """
    folder = Path(folder)
    if not (folder / SHARED_FILE).is_file():
        return {}
    index = json.loads((folder / "model_index.json").read_text())
    components = {}
    for name, source in json.loads((folder / SHARED_FILE).read_text()).items():
        if name not in index:
            raise ValueError(f"{folder / SHARED_FILE} shares {name!r}, which {folder}/model_index.json does not list.")
        library, class_name = index[name]
        component = getattr(importlib.import_module(library), class_name).from_pretrained(
            (folder / source).resolve(), subfolder=name)
        if dtype is not None and hasattr(component, "to"):
            component = component.to(dtype)
        components[name] = component
    return components


def load_shapes_pipeline(pipeline_class=None, **kwargs):
    """The Shapes text-to-image pipeline folder loaded as ``pipeline_class`` (default `AutoEditPipeline`)."""
    if pipeline_class is None:
        from ..pipelines import AutoEditPipeline as pipeline_class
    kwargs.setdefault("safety_checker", None)
    kwargs.setdefault("feature_extractor", None)
    return pipeline_class.from_pretrained(shapes_model_path("pipeline"), **kwargs)


def load_shapes_editor(name: str = "uip2p", **kwargs):
    """A shipped instruction-editing model, ``uip2p`` or ``ip2p``, as a `UIP2PPipeline` (both are
    InstructPix2Pix-architecture folders; only their training differs)."""
    if name not in EDITOR_NAMES:
        raise ValueError(f"name must be one of {', '.join(EDITOR_NAMES)}, got {name!r}.")
    from ..pipelines import UIP2PPipeline

    kwargs.setdefault("safety_checker", None)
    kwargs.setdefault("feature_extractor", None)
    path = shapes_model_path(name)
    return UIP2PPipeline.from_pretrained(path, **{**shared_components(path, kwargs.get("dtype")), **kwargs})


def load_shapes_clip():
    """(CLIPModel, CLIPTokenizer, CLIPImageProcessor) of the Shapes world."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    path = shapes_model_path("clip")
    return CLIPModel.from_pretrained(path).eval(), CLIPTokenizer.from_pretrained(path), \
        CLIPImageProcessor.from_pretrained(path)
