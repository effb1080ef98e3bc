"""Task-classifier accuracy on the generated triples' disjoint test split, against the rule fallback.

No real CLIP can be downloaded here, so the text encoder is `word_class_text_encoder`: tiny, random, but
each word's embedding carries its word class and the class's broader kind (`triples.class_groups`), as
CLIP's pretraining would give them (``--no-class-groups``: classes only, unrelated to each other). The
classifier is trained by `train_task_classifier` on the train split and tested on the test split, whose
templates and content words never occur in training; its accuracy on its own training pairs is measured
too, to tell overfitting from a missing signal. `classify_by_rules` runs on the same test pairs.

    .venv/bin/python benchmarks/task_classifier.py --threads 1
    .venv/bin/python benchmarks/task_classifier.py --threads 1 --no-class-groups
    .venv/bin/python benchmarks/task_classifier.py --threads 1 --compare-tokens position  # the first version
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusers_uip2p.classifier import EDIT_TASKS, EditTaskClassifier, classify_by_rules, load_triples
from diffusers_uip2p.classifier.triples import class_groups, words_by_class
from diffusers_uip2p.testing import word_class_text_encoder
from diffusers_uip2p.training.train_task_classifier import accuracy_by_task, evaluate
from diffusers_uip2p.training.train_task_classifier import main as train

ROOT = Path(__file__).resolve().parents[1]


def rule_accuracy(triples) -> dict[str, float]:
    return accuracy_by_task(triples, [classify_by_rules(t.source, t.target).task for t in triples])


@torch.no_grad()
def confusion(classifier, triples, text_encoder, tokenizer) -> list[list[int]]:
    """Rows: the true task, columns: the predicted one, both in EDIT_TASKS order."""
    counts = [[0] * len(EDIT_TASKS) for _ in EDIT_TASKS]
    for i in range(0, len(triples), 256):
        group = triples[i: i + 256]
        labels = classifier.predict([t.source for t in group], [t.target for t in group], text_encoder,
                                    tokenizer).labels
        for triple, label in zip(group, labels, strict=True):
            counts[EDIT_TASKS.index(triple.task)][EDIT_TASKS.index(label)] += 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--compare-tokens", choices=("changes", "position", "none"), default="changes")
    parser.add_argument("--no-class-groups", action="store_true", help="word classes without their broader kinds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "task-classifier.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    groups = None if args.no_class_groups else class_groups()
    text_encoder, tokenizer = word_class_text_encoder(words_by_class(), hidden_size=32, class_groups=groups)
    train_triples, test_triples = load_triples("train"), load_triples("test")
    with tempfile.TemporaryDirectory() as folder:
        text_encoder.save_pretrained(Path(folder) / "text_encoder")
        tokenizer.save_pretrained(Path(folder) / "tokenizer")
        start = time.time()
        scores = train(["--pretrained_model_name_or_path", folder, "--output_dir", str(Path(folder) / "out"),
                        "--hidden_dim", str(args.hidden_dim), "--num_layers", str(args.layers), "--num_heads", "4",
                        "--num_epochs", str(args.epochs), "--learning_rate", "1e-3", "--seed", str(args.seed),
                        "--compare_tokens", args.compare_tokens])
        seconds = time.time() - start
        classifier = EditTaskClassifier.from_pretrained(Path(folder) / "out").eval()
    train_scores = evaluate(classifier, train_triples, text_encoder, tokenizer, 256)
    rules = rule_accuracy(test_triples)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "classifier": scores,
              "classifier_on_train": train_scores, "rules": rules,
              "confusion": {"tasks": list(EDIT_TASKS), "rows_true_columns_predicted":
                            confusion(classifier, test_triples, text_encoder, tokenizer)},
              "seconds_train_and_test": round(seconds, 1), "threads": torch.get_num_threads(),
              "class_groups": groups is not None, "compare_tokens": args.compare_tokens,
              "train_pairs": len(train_triples), "test_pairs": len(test_triples)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print("| task | classifier (word-class tiny encoder) | classifier on its train pairs | rules |")
    print("|---|---:|---:|---:|")
    for task in [*EDIT_TASKS, "all"]:
        print(f"| {task} | {scores[task]:.3f} | {train_scores[task]:.3f} | {rules[task]:.3f} |")
    print("confusion (rows true, columns predicted):", *result["confusion"]["rows_true_columns_predicted"], sep="\n")
    print(f"train + test: {seconds:.1f} s on {torch.get_num_threads()} thread(s)")
    return result


if __name__ == "__main__":
    main()
