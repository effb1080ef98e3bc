"""Reverse instructions and multi-edit expansion with an LLM: the data recipe of UIP2P (supplement §8.1).

ERC training needs, for every edit, a *reverse* instruction that undoes it. The paper asks an LLM (§8.1.1), and
expands plain image–caption pairs into several edits with another prompt (§8.1.2). This module holds those
prompts, robust parsers for what an LLM writes back, and the generation loops (any local causal LM,
text-generation pipeline or ``prompt -> text`` callable), with `reverse_rules` as the fallback.
"""

from __future__ import annotations

import re
from collections import Counter

import torch
from tqdm.auto import tqdm

from ..classifier.llm_triples import SMART_QUOTES, labelled_fields, text_generator
from .reverse_rules import reverse_instruction_by_rules

# --- LLM prompts (supplement §8.1) and parsers ----------------------------------------------------------------

# The Alpaca-style preamble both prompts open with.
_PREAMBLE = ("Below is an instruction that describes a task, paired with an input that provides further context. "
             "Write a response that appropriately completes the request.\n\n")
# §8.1.1, as printed (the paper's line breaks; "{...}" are the fields).
REVERSE_PROMPT = _PREAMBLE + (
    "### Instruction:\nYou are an expert in image editing instructions. Given an input caption, an edit "
    "instruction, and the resulting edited caption, generate a reverse instruction that would undo the edit and "
    "return to the original state.\n\n"
    "### Input:\nInput Caption: \"{input_caption}\"\nEdit Instruction: \"{edit_instruction}\"\n"
    "Edited Caption: \"{edited_caption}\"\n\n"
    "Examples:\n- Input: \"A man wearing a denim jacket\"\n-> \"make the jacket a rain coat\"\n"
    "-> \"A man wearing a rain coat\"\nReverse: \"make the coat a denim jacket\"\n"
    "- Input: \"A sofa in the living room\"\n-> \"add pillows\" -> \"A sofa in the living room with pillows\"\n"
    "Reverse: \"remove the pillows\"\n\n### Response:\n")
# §8.1.2, as printed with num_edits=4; the paper's response format follows as the start of the reply.
MULTI_EDIT_PROMPT = _PREAMBLE + (
    "### Instruction:\nGiven an input caption, generate {num_edits} different edit instructions along with their "
    "corresponding edited captions and reverse instructions. Focus on diverse edit types: color changes, object "
    "addition/removal, and positional changes. Ensure edits are realistic and reversible.\n\n"
    "### Input:\nInput Caption: \"{input_caption}\"\n\n### Response:\n")
# Ending the prompt with the paper's first response line lets a plain causal LM continue in that format.
MULTI_EDIT_CUE = "1. Edit Instruction:"

_FIELD = re.compile(r"(?<![a-z])(?P<label>reverse(?:[ \t]+edit)?(?:[ \t]+instruction)?|undo(?:[ \t]+instruction)?"
                    r"|edit(?:ed)?[ \t]+caption|new[ \t]+caption|result(?:ing[ \t]+caption)?"
                    r"|edit[ \t]+instruction|instruction|edit)[ \t*_\"']*[:：]", re.IGNORECASE)
_PLACEHOLDERS = {"instruction", "result", "undo instruction", "edited caption", "reverse instruction"}
_WRAPPING = " \t*_`\"',;.:-–—•|[]()"


def _clean(value: str) -> str:
    """One field's text: its first line (or quoted part), without bullets, numbering, markdown or quotes."""
    value = value.translate(SMART_QUOTES).lstrip(" \t*_`")
    value = value.lstrip().split("\n", 1)[0]
    quoted = re.match(r'\s*"([^"]+)"', value)
    if quoted:
        value = quoted.group(1)
    value = re.sub(r"^\s*(?:[-•*]|\(?\d+[.)])\s+", "", value.replace("**", "").replace("`", ""))
    value = " ".join(value.split()).strip(_WRAPPING)
    return "" if value.lower() in _PLACEHOLDERS else value


def _field_kind(label: str) -> str:
    words = label.lower().split()
    if words[0] in ("reverse", "undo"):
        return "reverse_instruction"
    return "edit_instruction" if words[-1] in ("instruction", "edit") else "edited_caption"


def parse_reverse_instruction(text: str) -> str | None:
    """The reverse instruction in an LLM's reply, or None if it wrote none.

    Takes the value after "Reverse:"/"Reverse Instruction:" if there is one, else the first line that is not
    chatter ("Sure! Here it is:") or an echo of the prompt; strips quotes, markdown and numbering."""
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    text = text.translate(SMART_QUOTES).split("###", 1)[0]
    labelled = [m for m in _FIELD.finditer(text) if _field_kind(m["label"]) == "reverse_instruction"]
    lines = [text[labelled[0].end():]] if labelled else text.splitlines()
    for line in lines:
        stripped = line.strip().lower()
        if not stripped or stripped.endswith(":") or re.match(r"(sure|okay|ok|certainly|here)\b", stripped):
            continue
        if "->" in stripped or stripped.lstrip("-* ").startswith(("input", "edit", "edited")):
            return None  # the model is repeating the prompt's examples
        value = _clean(line)
        return value if value and len(value.split()) <= 30 else None
    return None


def parse_multi_edits(text: str, require_reverse: bool = True) -> list[dict]:
    """Every complete edit in a reply to the multi-edit prompt, in order, without repeats.

    An edit is "Edit Instruction: …", "Edited Caption: …", "Reverse Instruction: …" (or "Reverse:"), in that
    order, with any numbering, markdown or quotes. An edit missing a field is dropped; with
    ``require_reverse=False`` an edit without its reverse is kept with ``reverse_instruction=None``."""
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    edits, seen, record = [], set(), {}

    def finish(record):
        instruction, edited = record.get("edit_instruction"), record.get("edited_caption")
        reverse = record.get("reverse_instruction")
        if instruction and edited and (reverse or not require_reverse) and instruction.lower() not in seen:
            seen.add(instruction.lower())
            edits.append({"edit_instruction": instruction, "edited_caption": edited,
                          "reverse_instruction": reverse or None})

    for match, following in labelled_fields(_FIELD, text):
        kind, value = _field_kind(match["label"]), _clean(following)
        if kind == "edit_instruction":
            finish(record)
            record = {kind: value}
        elif list(record) == ["edit_instruction"] and kind == "edited_caption" or \
                list(record) == ["edit_instruction", "edited_caption"] and kind == "reverse_instruction":
            record[kind] = value
        else:
            record = {}
    finish(record)
    return edits


def build_reverse_prompt(input_caption: str, edit_instruction: str, edited_caption: str) -> str:
    """The §8.1.1 prompt for one edit."""
    values = {"input_caption": input_caption, "edit_instruction": edit_instruction, "edited_caption": edited_caption}
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`{name}` must be a non-empty string, got {value!r}.")
    return REVERSE_PROMPT.format(**values)


def build_multi_edit_prompt(caption: str, num_edits: int = 4) -> str:
    """The §8.1.2 prompt for one caption, ending with `MULTI_EDIT_CUE`."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"`caption` must be a non-empty string, got {caption!r}.")
    if not isinstance(num_edits, int) or num_edits < 1:
        raise ValueError(f"`num_edits` must be a positive integer, got {num_edits!r}.")
    return MULTI_EDIT_PROMPT.format(input_caption=caption, num_edits=num_edits) + MULTI_EDIT_CUE


def _texts_of(record, i: int) -> tuple[str, str, str]:
    if not isinstance(record, dict):
        raise TypeError(f"records[{i}] must be a dict, got {type(record).__name__}.")
    values = tuple(record.get(f) for f in ("input_caption", "edit_instruction", "edited_caption"))
    for field, value in zip(("input_caption", "edit_instruction", "edited_caption"), values, strict=True):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"records[{i}] needs a non-empty {field!r} to reverse its edit, got {value!r}.")
    return values


def generate_reverse_instructions(records, model_or_pipeline=None, tokenizer=None, *, fallback_to_rules: bool = True,
                                  overwrite: bool = False, max_new_tokens: int = 48, do_sample: bool = False,
                                  seed: int = 0, progress: bool = True) -> tuple[list[dict], Counter]:
    """Records with a ``reverse_instruction`` each, and counts: ``given``, ``llm``, ``rules``, ``dropped``.

    Asks the LLM (a causal LM with its tokenizer, a text-generation pipeline or a ``prompt -> text`` callable;
    None for rules alone) with the §8.1.1 prompt; a reply that parses to nothing falls back to
    `reverse_instruction_by_rules` if ``fallback_to_rules``, and a record left without a reverse is dropped.
    Records that already have one are kept as they are unless ``overwrite``."""
    generate = None if model_or_pipeline is None else \
        text_generator(model_or_pipeline, tokenizer, max_new_tokens, do_sample)
    kept, counts = [], Counter(given=0, llm=0, rules=0, dropped=0)
    for i, record in enumerate(tqdm(records, desc="reverse instructions", disable=not progress)):
        texts = _texts_of(record, i)
        if record.get("reverse_instruction") and not overwrite:
            counts["given"] += 1
            kept.append(dict(record))
            continue
        reverse, source = None, "llm"
        if generate is not None:
            torch.manual_seed(seed + i)
            reverse = parse_reverse_instruction(generate(build_reverse_prompt(*texts)))
        if reverse is None and (generate is None or fallback_to_rules):
            reverse, source = reverse_instruction_by_rules(*texts), "rules"
        counts[source if reverse else "dropped"] += 1
        if reverse:
            kept.append({**record, "reverse_instruction": reverse})
    return kept, counts


def generate_multi_edits(captions, model_or_pipeline, tokenizer=None, *, num_edits: int = 4,
                         fallback_to_rules: bool = True, max_new_tokens: int = 400, do_sample: bool = False,
                         seed: int = 0, progress: bool = True) -> tuple[list[dict], Counter]:
    """Up to ``num_edits`` edit records per caption from the §8.1.2 prompt, and counts: ``edits``, ``rules``
    (reverses filled in by rules), ``dropped`` (edits left without a reverse), ``captions_without_edits``.

    Each record holds ``input_caption``, the three edit fields and ``caption_index`` (its caption's position)."""
    generate = text_generator(model_or_pipeline, tokenizer, max_new_tokens, do_sample)
    records, counts = [], Counter(edits=0, rules=0, dropped=0, captions_without_edits=0)
    for i, caption in enumerate(tqdm(captions, desc="multi-edit expansion", disable=not progress)):
        prompt = build_multi_edit_prompt(caption, num_edits)
        torch.manual_seed(seed + i)
        kept = 0
        for edit in parse_multi_edits(MULTI_EDIT_CUE + generate(prompt), require_reverse=False)[:num_edits]:
            if edit["reverse_instruction"] is None and fallback_to_rules:
                edit["reverse_instruction"] = reverse_instruction_by_rules(
                    caption, edit["edit_instruction"], edit["edited_caption"])
                counts["rules"] += edit["reverse_instruction"] is not None
            if edit["reverse_instruction"] is None:
                counts["dropped"] += 1
            else:
                records.append({"input_caption": caption, **edit, "caption_index": i})
                kept += 1
        counts["edits"] += kept
        counts["captions_without_edits"] += kept == 0
    return records, counts
