"""Train the Shapes world's CLIP (text and image towers) contrastively on (rendered scene, caption) pairs.

Its text tower is the text encoder of the Shapes diffusion models (like SD's frozen CLIP ViT-L/14), and
the whole model serves the CLIP losses and metrics. The loss is CLIP's: symmetric cross-entropy over the
batch's image–text cosine similarities, with a learned temperature.

    python -m diffusers_uip2p.shapes.train_clip --output src/diffusers_uip2p/shapes/models/clip
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from ..evaluation.clip_features import clip_image_embeddings, clip_text_embeddings
from .dataset import split_scenes
from .tokenizer import shapes_tokenizer
from .training_utils import command_line, cosine_lr, scenes_to_tensor, set_lr, start_run, write_model_card

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation, kept for familiarity
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def shapes_clip_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    text = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=128, **ids)
    vision = dict(image_size=64, patch_size=8, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=4, projection_dim=128)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images → CLIP pixel values (what the image processor produces from the same PNGs)."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


@torch.no_grad()
def retrieval_top1(model: CLIPModel, tokenizer: CLIPTokenizer, scenes, batch_size: int = 100) -> float:
    """Caption → image top-1 accuracy within groups of ``batch_size`` scenes."""
    model.eval()
    device = next(model.parameters()).device
    hits = 0
    for i in range(0, len(scenes), batch_size):
        group = scenes[i: i + batch_size]
        tokens = tokenizer([s.caption() for s in group], padding=True, return_tensors="pt").to(device)
        text = clip_text_embeddings(model, tokens.input_ids, tokens.attention_mask)
        image = clip_image_embeddings(model, normalise(scenes_to_tensor(group).to(device)))
        hits += (text @ image.T).argmax(1).eq(torch.arange(len(group), device=device)).sum().item()
    model.train()
    return hits / len(scenes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--num-scenes", type=int, default=100000, help="training scenes (rendered per batch)")
    parser.add_argument("--validation-scenes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=500)
    args = parser.parse_args(argv)
    device = start_run(args.threads, args.seed)

    tokenizer = shapes_tokenizer()
    model = CLIPModel(shapes_clip_config(tokenizer)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    train = split_scenes("train", args.num_scenes)
    validation = split_scenes("validation", args.validation_scenes)
    generator = torch.Generator().manual_seed(args.seed)

    start = time.time()
    progress = tqdm(range(args.steps), desc="clip")
    for step in progress:
        set_lr(optimizer, cosine_lr(step, args.steps, args.lr))
        batch = [train[i] for i in torch.randint(len(train), (args.batch_size,), generator=generator).tolist()]
        tokens = tokenizer([s.caption() for s in batch], padding=True, return_tensors="pt").to(device)
        pixels = normalise(scenes_to_tensor(batch).to(device))
        logits = model(**tokens, pixel_values=pixels).logits_per_text
        labels = torch.arange(len(batch), device=device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # temperature at most 100, as CLIP
        progress.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            progress.write(f"step {step + 1}: validation retrieval top-1 (of 100) "
                           f"{retrieval_top1(model, tokenizer, validation):.3f}")
    seconds = time.time() - start

    model.eval().to("cpu").save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    image_processor().save_pretrained(args.output)
    figures = {f"validation caption→image top-1 among 100 scenes ({args.validation_scenes} scenes)":
               f"{retrieval_top1(model, tokenizer, validation):.3f}",
               "parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"}
    write_model_card(args.output, "Shapes world CLIP",
                     "A tiny CLIP (ViT 64×64/8 image tower, 4-layer text tower, width 128, 128-d embeddings) with "
                     "the world's tokenizer, trained contrastively on `train`-split scenes and their exact "
                     "captions.", command_line(__spec__.name, argv), args.seed, seconds, figures)
    print(figures)


if __name__ == "__main__":
    main()
