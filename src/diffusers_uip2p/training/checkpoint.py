"""Training checkpoints in safetensors and JSON only, so that resuming a run never unpickles a file.

Accelerate's ``save_state`` writes the optimizer, the learning-rate schedule, the random states and every
registered object with ``torch.save``, and ``load_state`` reads registered objects back with
``weights_only=False``: a checkpoint folder from someone else could then run code on resume. Here each
state dict is split into its tensors (``NAME.safetensors``) and everything else (``NAME.json``, with the
tensors' places marked), and rebuilt from the two on load.

A folder holds ``model.safetensors`` (the unwrapped UNet), ``training_state.{safetensors,json}`` (optimizer,
schedule and the objects the run names: EMA, clock), written by the main process, and
``random_states_RANK.{safetensors,json}`` per process (its batch generator and the global random states).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TRAINING_STATE = "training_state"


def _encode(value, tensors: dict, path: str):
    """``value`` as JSON, with each tensor (or numpy array) moved into ``tensors`` under its path."""
    if torch.is_tensor(value):
        tensors[path] = value.detach().cpu().contiguous()
        return {"tensor": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(value.astype(np.int64) if value.dtype.kind in "iu" else value.copy())
        return {"ndarray": path, "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {"dict": [[k, _encode(v, tensors, f"{path}.{k}")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"a checkpoint stores tensors and plain values; {path} is a {type(value).__name__}")


def _decode(node: dict, tensors: dict):
    (kind, content), = ((k, v) for k, v in node.items() if k != "dtype")
    if kind == "tensor":
        return tensors[content]
    if kind == "ndarray":
        return tensors[content].numpy().astype(np.dtype(node["dtype"]))
    if kind == "dict":
        return {k: _decode(v, tensors) for k, v in content}
    if kind in ("list", "tuple"):
        items = [_decode(v, tensors) for v in content]
        return tuple(items) if kind == "tuple" else items
    return content


def write_state(folder: Path, name: str, state: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    layout = _encode(state, tensors, name)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(layout))


def read_state(folder: Path, name: str) -> dict:
    for suffix in (".safetensors", ".json"):
        if not (folder / f"{name}{suffix}").is_file():
            raise ValueError(f"--resume_from_checkpoint {folder}: it holds no {name}{suffix} (a checkpoint written "
                             "by an older train_uip2p, or an incomplete one); start a new --output_dir.")
    return _decode(json.loads((folder / f"{name}.json").read_text()), load_file(str(folder / f"{name}.safetensors")))


def random_states(generator: torch.Generator) -> dict:
    """The batch generator, and the global random states (as accelerate saves them) in case a library draws."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_states(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(folder: Path, accelerator, unet, optimizer, lr_schedule, objects: dict,
                        generator: torch.Generator) -> None:
    """Everything a resume needs, into ``folder`` (which the caller renames into place once whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in accelerator.unwrap_model(unet).state_dict().items()},
                  str(folder / "model.safetensors"))
        write_state(folder, TRAINING_STATE, {"optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(),
                                             **{name: obj.state_dict() for name, obj in objects.items()}})
    write_state(folder, f"random_states_{accelerator.process_index}", random_states(generator))


def load_training_state(folder: Path, accelerator, unet, optimizer, lr_schedule, objects: dict,
                        generator: torch.Generator) -> None:
    state = read_state(folder, TRAINING_STATE)
    missing = [name for name in ("optimizer", "lr_schedule", *objects) if name not in state]
    if missing:
        raise ValueError(f"--resume_from_checkpoint {folder}: its training state has no {', '.join(missing)} "
                         "(a run with another recipe); start a new --output_dir.")
    accelerator.unwrap_model(unet).load_state_dict(load_file(str(folder / "model.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    lr_schedule.load_state_dict(state["lr_schedule"])
    for name, obj in objects.items():
        obj.load_state_dict(state[name])
    set_random_states(generator, read_state(folder, f"random_states_{accelerator.process_index}"))
