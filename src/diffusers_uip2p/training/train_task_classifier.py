"""Train an `EditTaskClassifier` on (source, target, task) triples over a frozen text encoder (DSI §4.3).

The classifier reads the text encoder's hidden states, so train it on the text encoder of the pipeline it
will route for (a Stable Diffusion checkpoint's own CLIP, or the Shapes world's): the two must match.

    accelerate launch -m diffusers_uip2p.training.train_task_classifier \\
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 --output_dir task-classifier

Data: the committed generated triples by default (`diffusers_uip2p.classifier.triples`), any JSONL of
{"source", "target", "task"} records, or ``--shapes`` for the Shapes world's edits.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from ..classifier import EDIT_TASKS, EditTaskClassifier, EditTriple, load_triples
from ..classifier.triples import read_triples
from ..shapes.training_utils import machine
from .hub import check_hub_push, push_folder

COMPARE_CHOICES = {"changes": "changes", "position": True, "none": False}  # --compare_tokens → the config value


def shapes_triples(split: str, num: int) -> list[EditTriple]:
    from ..shapes.dataset import split_edits
    return [EditTriple(e.source.caption(), e.target.caption(), e.category) for e in split_edits(split, num)]


def load_split(args, split: str) -> list[EditTriple]:
    if args.shapes:
        return shapes_triples(split, args.num_shapes_train if split == "train" else args.num_shapes_test)
    path = args.train_file if split == "train" else args.test_file
    return read_triples(path) if path else load_triples(split)


def accuracy_by_task(triples: list[EditTriple], labels: list[str]) -> dict[str, float]:
    """Fraction of ``labels`` equal to the triples' tasks, per task (those present) and over ``all``."""
    hits = {task: [0, 0] for task in EDIT_TASKS}
    for triple, label in zip(triples, labels, strict=True):
        hits[triple.task][0] += label == triple.task
        hits[triple.task][1] += 1
    scores = {task: right / total for task, (right, total) in hits.items() if total}
    scores["all"] = sum(r for r, _ in hits.values()) / max(1, len(triples))
    return scores


@torch.no_grad()
def evaluate(classifier, triples: list[EditTriple], text_encoder, tokenizer, batch_size: int) -> dict[str, float]:
    """The classifier's accuracy overall and per task (in eval mode; its mode is restored after)."""
    was_training = classifier.training
    classifier.eval()
    labels = []
    for i in range(0, len(triples), batch_size):
        group = triples[i: i + batch_size]
        labels += classifier.predict([t.source for t in group], [t.target for t in group], text_encoder,
                                     tokenizer).labels
    classifier.train(was_training)
    return accuracy_by_task(triples, labels)


@torch.no_grad()
def encode_prompts(classifier, prompts: list[str], text_encoder, tokenizer, batch_size: int):
    """The frozen text encoder's hidden states and attention masks of ``prompts``, computed once for the whole
    training run and kept on the CPU, cut after the longest prompt (the rest is padding, which the classifier
    masks): pairs × 2 × longest prompt × width numbers, 1.2 GB in float32 for 10,000 pairs of 20-token prompts
    over SD's 768-wide CLIP."""
    states, masks = [], []
    for i in range(0, len(prompts), batch_size):
        hidden, mask = classifier.embed_prompts(prompts[i: i + batch_size], text_encoder, tokenizer)
        states.append(hidden.cpu())
        masks.append(mask.cpu())
    states, masks = torch.cat(states), torch.cat(masks)
    length = int(torch.nonzero(masks.any(dim=0)).max()) + 1
    return states[:, :length].contiguous(), masks[:, :length].contiguous()


def padded(states: torch.Tensor, masks: torch.Tensor, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut states and masks padded back to the classifier's ``length`` tokens per prompt (with zeros, masked)."""
    extra = length - states.shape[1]
    return (F.pad(states, (0, 0, 0, extra)).to(device, non_blocking=True),
            F.pad(masks, (0, extra)).to(device, non_blocking=True))


def write_card(args, classifier, scores: dict[str, float], seconds: float, num_train: int) -> None:
    table = "\n".join(f"| {task} | {score:.3f} |" for task, score in scores.items())
    config = {k: classifier.config[k] for k in ("input_dim", "num_tokens", "hidden_dim", "num_heads", "num_layers",
                                                "compare_tokens")}
    data = "the Shapes world's edits" if args.shapes else (args.train_file or "the generated triples")
    (Path(args.output_dir) / "README.md").write_text(
        f"# Edit-task classifier\n\nRoutes a (source prompt, target prompt) pair to one of the DSI paper's five "
        f"edit tasks. Trained over the frozen text encoder of `{args.pretrained_model_name_or_path}`, which it "
        f"must be used with.\n\n- configuration: {config}\n- data: {data}, {num_train} training pairs\n"
        f"- seed: {args.seed}\n- training time: {seconds / 60:.1f} min on {machine()}\n\n## Training\n\n```\n{args.command}\n```\n\n"
        f"## Test accuracy\n\n| task | accuracy |\n|---|---|\n{table}\n")


def register_in_pipeline(folder: str) -> None:
    """Add ``task_classifier`` to a pipeline folder's model_index.json, as `save_pretrained` would write it."""
    index_path = Path(folder) / "model_index.json"
    index = json.loads(index_path.read_text())
    index["task_classifier"] = [EditTaskClassifier.__module__, EditTaskClassifier.__name__]
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained_model_name_or_path", required=True,
                        help="pipeline folder or Hub id holding text_encoder/ and tokenizer/")
    parser.add_argument("--output_dir", help="where to save the classifier (or use --add_to_pipeline)")
    parser.add_argument("--add_to_pipeline", action="store_true",
                        help="save into the local pipeline folder's task_classifier/ and register it in its "
                             "model_index.json, so the pipeline loads with it and routes edit_method='auto'")
    parser.add_argument("--train_file", help="JSONL of {source, target, task}; default: the generated triples")
    parser.add_argument("--test_file", help="JSONL for the test accuracy; default: the generated test split")
    parser.add_argument("--shapes", action="store_true", help="train on the Shapes world's edits instead")
    parser.add_argument("--num_shapes_train", type=int, default=8000)
    parser.add_argument("--num_shapes_test", type=int, default=1000)
    parser.add_argument("--hidden_dim", type=int, default=512, help="Table S7: 512")
    parser.add_argument("--num_layers", type=int, default=6, help="Table S7: 6")
    parser.add_argument("--num_heads", type=int, default=8, help="Table S7: 8")
    parser.add_argument("--compare_tokens", choices=tuple(COMPARE_CHOICES), default="changes",
                        help="how the classifier compares the prompts (see EditTaskClassifier): 'changes' "
                             "(default), 'position' (the difference at each position) or 'none' (Table S7's "
                             "plain concatenation)")
    parser.add_argument("--num_epochs", type=int, default=3)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", help="repository for --push_to_hub (default: the output folder's name)")
    args = parser.parse_args(argv)
    if args.add_to_pipeline == bool(args.output_dir):
        parser.error("give exactly one of --output_dir and --add_to_pipeline")
    if args.add_to_pipeline:
        if not (Path(args.pretrained_model_name_or_path) / "model_index.json").is_file():
            parser.error("--add_to_pipeline needs a local pipeline folder (with model_index.json)")
        args.output_dir = str(Path(args.pretrained_model_name_or_path) / "task_classifier")
    args.command = shlex.join(["python", "-m", "diffusers_uip2p.training.train_task_classifier",
                               *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv=None):
    args = parse_args(argv)
    token = check_hub_push() if args.push_to_hub else None  # before training, not after
    accelerator = Accelerator()
    set_seed(args.seed)
    tokenizer = CLIPTokenizer.from_pretrained(args.pretrained_model_name_or_path, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="text_encoder")
    text_encoder.requires_grad_(False).eval().to(accelerator.device)
    train, test = load_split(args, "train"), load_split(args, "test")

    classifier = EditTaskClassifier(input_dim=text_encoder.config.hidden_size,
                                    num_tokens=2 * tokenizer.model_max_length, hidden_dim=args.hidden_dim,
                                    num_heads=args.num_heads, num_layers=args.num_layers,
                                    compare_tokens=COMPARE_CHOICES[args.compare_tokens])
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=args.learning_rate, weight_decay=0.01)
    # The text encoder is frozen, so every prompt is encoded once, not once an epoch.
    start = time.time()
    encoded = [encode_prompts(classifier, [getattr(t, field) for t in train], text_encoder, tokenizer,
                              4 * args.train_batch_size) for field in ("source", "target")]
    task_index = {task: i for i, task in enumerate(EDIT_TASKS)}
    labels = torch.tensor([task_index[t.task] for t in train])
    loader = torch.utils.data.DataLoader(torch.arange(len(train)), batch_size=args.train_batch_size, shuffle=True)
    total_steps = args.num_epochs * len(loader)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=total_steps,
                                                   pct_start=0.1)
    classifier, optimizer, loader, schedule = accelerator.prepare(classifier, optimizer, loader, schedule)
    model = accelerator.unwrap_model(classifier)

    progress = tqdm(total=total_steps, desc="task classifier", disable=not accelerator.is_local_main_process)
    for epoch in range(args.num_epochs):
        for index in loader:
            index = index.cpu()
            (source_embeds, source_mask), (target_embeds, target_mask) = (
                padded(states[index], masks[index], model.tokens_per_prompt, accelerator.device)
                for states, masks in encoded)
            logits = classifier(source_embeds, target_embeds, source_mask, target_mask)
            loss = F.cross_entropy(logits, labels[index].to(logits.device))
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            progress.update()
            progress.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
    progress.close()
    seconds = time.time() - start

    scores = evaluate(model, test, text_encoder, tokenizer, 4 * args.train_batch_size)
    accelerator.print({task: round(score, 4) for task, score in scores.items()})
    if accelerator.is_main_process:
        model.save_pretrained(args.output_dir)
        write_card(args, model, scores, seconds, len(train))
        if args.add_to_pipeline:
            register_in_pipeline(args.pretrained_model_name_or_path)
        if args.push_to_hub:
            push_folder(args.output_dir, args.hub_model_id, token, "Train task classifier")
    return scores


if __name__ == "__main__":
    main()
