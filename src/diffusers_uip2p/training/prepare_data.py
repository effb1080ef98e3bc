"""Turn image–caption pairs (or edit records lacking reverse instructions) into UIP2P training records.

The supplement's recipe (§8): keep the pairs whose CLIP image–caption similarity reaches 0.2, expand each
caption into several edits with an LLM, and give every edit a reverse instruction (the LLM, or rules).

    python -m diffusers_uip2p.training.prepare_data --input_path pairs/ --output_dir data/uip2p \\
        --clip_model openai/clip-vit-large-patch14 --llm path/to/causal-lm --multi_edit

Input: a JSONL file, or a folder holding ``records.jsonl``, ``metadata.jsonl`` or ``captions.jsonl``; each
line has ``image`` (or ``file_name``, relative to the JSONL) and ``caption`` (or ``input_caption``), and may
hold ``edit_instruction``, ``edited_caption``, ``reverse_instruction`` and ``edited_image``. Output: a folder
that `diffusers_uip2p.training.data.open_edit_dataset` reads. Every dropped line is counted with its reason.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import PIL.Image
import torch
from tqdm.auto import tqdm

from .data import EDITED_IMAGE, RECORD_FIELDS, write_jsonl_records
from .clip_filter import clip_filter
from .instructions import generate_multi_edits, generate_reverse_instructions

INPUT_FILES = ("records.jsonl", "metadata.jsonl", "captions.jsonl")


def input_file(path: Path) -> Path:
    """The JSONL to read: ``path`` itself or the first of `INPUT_FILES` in it."""
    if path.is_file():
        return path
    found = [path / name for name in INPUT_FILES if (path / name).is_file()]
    if not found:
        raise ValueError(f"`--input_path` {str(path)!r} is neither a JSONL file nor a folder holding one of "
                         f"{', '.join(INPUT_FILES)}.")
    return found[0]


def _readable(path: Path) -> bool:
    try:
        with PIL.Image.open(path) as image:
            image.verify()
        return True
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return False


def read_rows(path: Path, dropped: Counter, max_rows: int | None = None) -> list[dict]:
    """Up to ``max_rows`` rows with an absolute ``image`` path and an ``input_caption``; bad lines are printed
    with their file:line and counted in ``dropped``."""
    path = input_file(path)
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(tqdm(lines, desc="reading", unit="line"), 1):
        if not line.strip() or len(rows) == max_rows:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            dropped["not a JSON object"] += 1
            print(f"{path}:{number}: not a JSON object; dropped")
            continue
        image, caption = record.get("image") or record.get("file_name"), record.get("input_caption", record.get(
            "caption"))
        if not isinstance(image, str) or not isinstance(caption, str) or not caption.strip():
            dropped["no image or caption"] += 1
            print(f"{path}:{number}: needs `image` and a non-empty `caption`; dropped")
            continue
        if not _readable(path.parent / image):
            dropped["unreadable image"] += 1
            print(f"{path}:{number}: unreadable image {image!r}; dropped")
            continue
        row = {"image": str((path.parent / image).resolve()), "input_caption": caption,
               **{field: record[field] for field in RECORD_FIELDS[2:] if record.get(field)}}
        if record.get(EDITED_IMAGE):
            row[EDITED_IMAGE] = str((path.parent / record[EDITED_IMAGE]).resolve())
        rows.append(row)
    return rows


def load_clip(name: str, device: str):
    """(CLIPModel, tokenizer, image processor or None) from a folder or Hub id; safetensors weights only."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(name, use_safetensors=True).to(device).eval()
    try:
        image_processor = CLIPImageProcessor.from_pretrained(name)
    except OSError:  # no preprocessor config: standard CLIP preprocessing at the model's size
        image_processor = None
    return model, AutoTokenizer.from_pretrained(name), image_processor


def load_llm(name: str, device: str):
    """(causal LM, tokenizer) from a folder or Hub id; safetensors weights only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(name, use_safetensors=True).to(device).eval(), \
        AutoTokenizer.from_pretrained(name)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Prepare UIP2P training records (supplement §8).")
    parser.add_argument("--input_path", type=Path, required=True, help="JSONL file or folder of image-caption pairs")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--clip_model", help="CLIP folder or Hub id; filter pairs by image-caption similarity")
    parser.add_argument("--clip_threshold", type=float, default=0.2)
    parser.add_argument("--clip_batch_size", type=int, default=32)
    parser.add_argument("--llm", help="causal LM folder or Hub id for reverse instructions (else rules only)")
    parser.add_argument("--multi_edit", action="store_true", help="expand each caption into edits with --llm")
    parser.add_argument("--num_edits", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default: 48 per reverse, 400 per caption")
    parser.add_argument("--no_rule_fallback", action="store_true", help="drop what the LLM leaves unparsed")
    parser.add_argument("--max_records", type=int, default=None, help="use only the first N good input lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.multi_edit and not args.llm:
        parser.error("--multi_edit needs --llm: the edits are written by the language model.")
    if not -1 <= args.clip_threshold <= 1:
        parser.error(f"--clip_threshold must be a cosine similarity in [-1, 1], got {args.clip_threshold}.")
    return args


def main(argv=None) -> dict:
    """Run the preparation; print and return the counts."""
    args = parse_args(argv)
    dropped = Counter()
    rows = read_rows(args.input_path, dropped, args.max_records)
    counts = {"read": len(rows)}
    if args.clip_model:
        model, tokenizer, image_processor = load_clip(args.clip_model, args.device)
        result = clip_filter([r["image"] for r in rows], [r["input_caption"] for r in rows], model, tokenizer,
                             image_processor, threshold=args.clip_threshold, batch_size=args.clip_batch_size)
        for row, similarity in zip(rows, result.similarities.tolist(), strict=True):
            row["clip_similarity"] = round(similarity, 4)
        dropped[f"CLIP similarity below {args.clip_threshold}"] += int((~result.keep).sum())
        rows = [row for row, keep in zip(rows, result.keep.tolist(), strict=True) if keep]
    llm, tokenizer = load_llm(args.llm, args.device) if args.llm else (None, None)
    records = [row for row in rows if row.get("edit_instruction") and row.get("edited_caption")]
    pairs = [row for row in rows if not (row.get("edit_instruction") and row.get("edited_caption"))]
    tokens = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    if args.multi_edit:
        edits, edit_counts = generate_multi_edits([p["input_caption"] for p in pairs], llm, tokenizer,
                                                  num_edits=args.num_edits, seed=args.seed,
                                                  fallback_to_rules=not args.no_rule_fallback, **tokens)
        for edit in edits:
            records.append({"image": pairs[edit.pop("caption_index")]["image"], **edit})
        counts["edits generated"] = edit_counts["edits"]
        dropped["caption got no edit from the LLM"] += edit_counts["captions_without_edits"]
        dropped["generated edit without a reverse"] += edit_counts["dropped"]
    else:
        dropped["pair without an edit (use --llm with --multi_edit)"] += len(pairs)
    records, reverse_counts = generate_reverse_instructions(records, llm, tokenizer, seed=args.seed,
                                                            fallback_to_rules=not args.no_rule_fallback, **tokens)
    dropped["no reverse instruction (LLM and rules failed)"] += reverse_counts.pop("dropped")
    counts.update({f"reverse instructions: {k}": v for k, v in reverse_counts.items()})
    path = write_jsonl_records(records, args.output_dir)
    counts["written"] = len(records)
    counts.update({f"dropped: {reason}": n for reason, n in dropped.items() if n})
    for name, value in counts.items():
        print(f"{name}: {value}")
    print(f"wrote {path}")
    return counts


if __name__ == "__main__":
    main()
