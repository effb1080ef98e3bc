"""Task-classifier accuracy on the generated triples' disjoint test split, against the rule fallback.

No real CLIP can be downloaded here, so the text encoder is `word_class_text_encoder`: tiny, random, but
each word's embedding carries its word class (as CLIP's pretraining would give it). The classifier is
trained by `train_task_classifier` on the train split and tested on the test split, whose templates and
content words never occur in training. `classify_by_rules` runs on the same test pairs.

    .venv/bin/python benchmarks/task_classifier.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from diffusers_uip2p.classifier import EDIT_TASKS, classify_by_rules, load_triples
from diffusers_uip2p.classifier.triples import words_by_class
from diffusers_uip2p.testing import word_class_text_encoder
from diffusers_uip2p.training.train_task_classifier import accuracy_by_task
from diffusers_uip2p.training.train_task_classifier import main as train

ROOT = Path(__file__).resolve().parents[1]


def rule_accuracy(triples) -> dict[str, float]:
    return accuracy_by_task(triples, [classify_by_rules(t.source, t.target).task for t in triples])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "task-classifier.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        text_encoder, tokenizer = word_class_text_encoder(words_by_class(), hidden_size=32)
        text_encoder.save_pretrained(Path(folder) / "text_encoder")
        tokenizer.save_pretrained(Path(folder) / "tokenizer")
        classifier = train(["--pretrained_model_name_or_path", folder, "--output_dir", str(Path(folder) / "out"),
                            "--hidden_dim", str(args.hidden_dim), "--num_layers", str(args.layers), "--num_heads", "4",
                            "--num_epochs", str(args.epochs), "--learning_rate", "1e-3"])
    rules = rule_accuracy(load_triples("test"))
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "classifier": classifier, "rules": rules,
              "train_pairs": len(load_triples("train")), "test_pairs": len(load_triples("test"))}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print("| task | classifier (word-class tiny encoder) | rules |\n|---|---:|---:|")
    for task in [*EDIT_TASKS, "all"]:
        print(f"| {task} | {classifier[task]:.3f} | {rules[task]:.3f} |")
    return result


if __name__ == "__main__":
    main()
