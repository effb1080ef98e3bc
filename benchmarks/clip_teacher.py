"""Is the Shapes CLIP a teacher ERC could learn edits from? Its L_CLIP and L_sim on *true* edits against
edits that do the wrong thing, on Shapes validation edits.

ERC learns an edit only through CLIP: L_CLIP asks the image to move the way the caption moved, L_sim asks the
edit to match its caption. If the shipped Shapes CLIP scored true edits no better than wrong ones, ERC's
failure to edit (issue 19) would be the teacher's. This measures, with `training/losses.py`'s own functions:

* L_CLIP of the true edit (input → edited image, input → edited caption);
* L_CLIP of a wrong edit: another record's edited image in place of this one's;
* L_CLIP of the true edit against another record's caption direction;
* L_sim of the edited image and of the unedited input, both against the edited caption;
* top-1 retrieval: the edited image's nearest edited caption, and the image direction's nearest caption
  direction, among all the records; and L_CLIP per edit kind;
* ERC's own losses (`erc_step`, no L_attn, no dropout, one seed) of the shipped editors and of the
  run folders given with ``--editors``, on the first 64 of the edits, with t and t̂ drawn from the whole
  range and from its high and middle parts: does Algorithm 1's one-step edit score an editor that edits
  (supervised IP2P) better than one that does not?

    .venv/bin/python benchmarks/clip_teacher.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from diffusers_uip2p.shapes.pretrained import load_shapes_clip, load_shapes_pipeline, resolve_model
from diffusers_uip2p.training.erc import EditModels, ERCConfig, erc_step
from diffusers_uip2p.training.health import shapes_health_records
from diffusers_uip2p.training.losses import CLIPEmbedder, ERCLossWeights, clip_similarity_loss, directional_clip_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import environment, save_report  # noqa: E402


def per_edit(loss, *embeddings) -> list[float]:
    """``loss`` (a batch mean) of each edit alone."""
    return [loss(*(e[i:i + 1] for e in embeddings)).item() for i in range(len(embeddings[0]))]


RANGES = {"0-999": (0, 999), "600-999": (600, 999), "200-599": (200, 599)}


def erc_losses(clip, records: dict, edits, editors: list[str], count: int = 64) -> dict:
    """``erc_step``'s terms for each editor and t range, on the first ``count`` edits (same seed for all)."""
    models = EditModels.from_pipeline(load_shapes_pipeline(StableDiffusionPipeline), clip)
    batch = {key: value[:count] for key, value in records.items()}
    batch["reverse_instruction"] = [edit.reverse_instruction for edit in edits[:count]]
    results = {}
    for editor in editors:
        unet = UNet2DConditionModel.from_pretrained(resolve_model(editor), subfolder="unet").eval()
        results[editor] = {}
        for span, (low, high) in RANGES.items():
            config = ERCConfig(ERCLossWeights(attn=0), min_timestep=low, max_timestep=high, conditioning_dropout_prob=0)
            results[editor][span] = erc_step(unet, models, batch, config, torch.Generator().manual_seed(0)).losses
    return results


@torch.no_grad()
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=256, help="Shapes validation edits")
    parser.add_argument("--editors", nargs="*", default=["shapes:ip2p", "shapes:uip2p"],
                        help="editor folders or shapes:NAME whose ERC losses to measure")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clip_model, clip_tokenizer, _ = load_shapes_clip()
    clip = CLIPEmbedder(clip_model, clip_tokenizer)
    records, edits = shapes_health_records(args.edits)
    source, edited = clip.embed_images(records["pixel_values"]), clip.embed_images(records["edited_pixel_values"])
    source_text, edited_text = clip.embed_texts(records["input_caption"]), clip.embed_texts(records["edited_caption"])
    other = torch.roll(torch.arange(len(edits)), 1)  # each record paired with its neighbour's edit
    true_clip = per_edit(directional_clip_loss, source, edited, source_text, edited_text)
    kinds: dict[str, list[float]] = {}
    for edit, value in zip(edits, true_clip):
        kinds.setdefault(edit.kind, []).append(value)
    directions = F.normalize(edited - source, dim=-1) @ F.normalize(edited_text - source_text, dim=-1).T
    match = torch.arange(len(edits))
    results = {
        "L_CLIP, true edit": statistics.mean(true_clip),
        "L_CLIP, another record's edited image": directional_clip_loss(source, edited[other], source_text,
                                                                       edited_text).item(),
        "L_CLIP, true edit against another record's caption direction": directional_clip_loss(
            source, edited, source_text[other], edited_text[other]).item(),
        "L_CLIP, no change": 1.0,  # ΔI = 0: cos is 0 (losses.py), whatever the captions
        "L_sim, edited image": clip_similarity_loss(edited, edited_text).item(),
        "L_sim, unedited input": clip_similarity_loss(source, edited_text).item(),
        "edited image nearer its edited caption than the input is": (
            (edited * edited_text).sum(-1) > (source * edited_text).sum(-1)).float().mean().item(),
        "edited caption retrieval top-1": ((edited @ edited_text.T).argmax(1) == match).float().mean().item(),
        "edit direction retrieval top-1": (directions.argmax(1) == match).float().mean().item(),
    }
    by_kind = {kind: {"edits": len(v), "L_CLIP": statistics.mean(v)} for kind, v in sorted(kinds.items())}
    print(f"Shapes CLIP on {len(edits)} Shapes validation edits\n\n| measure | value |\n|---|---:|")
    for name, value in results.items():
        print(f"| {name} | {value:.3f} |")
    print("\n| edit kind | edits | L_CLIP of the true edit |\n|---|---:|---:|")
    for kind, row in by_kind.items():
        print(f"| {kind} | {row['edits']} | {row['L_CLIP']:.3f} |")
    erc = erc_losses(clip, records, edits, args.editors)
    print("\n| editor | t range | L_CLIP | L_sim | L_recon |\n|---|---|---:|---:|---:|")
    for editor, ranges in erc.items():
        for span, terms in ranges.items():
            print(f"| {editor} | {span} | {terms['clip']:.3f} | {terms['sim']:.3f} | {terms['recon']:.3f} |")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "edits": len(edits),
              "results": results, "by_kind": by_kind, "erc_losses_64_edits": erc, "environment": environment("cpu")}
    save_report(report, args.output, "clip-teacher-shapes.json")
    print(json.dumps(results))
    return report


if __name__ == "__main__":
    main()
