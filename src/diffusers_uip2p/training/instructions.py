"""Reverse instructions, multi-edit expansion and CLIP filtering: the data recipe of UIP2P (supplement §8).

ERC training needs, for every edit, a *reverse* instruction that undoes it. The paper asks an LLM (§8.1.1), and
expands plain image–caption pairs into several edits with another prompt (§8.1.2), after keeping only the
pairs whose CLIP image–text similarity reaches 0.2 (§8.2). This module holds those prompts and robust parsers
for what an LLM writes back, the generation loops (any local causal LM, text-generation pipeline or
``prompt -> text`` callable), CLIP filtering, and a rule-based reverse for the common edit forms that needs
no LLM and returns None rather than guess.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ..classifier.llm_triples import text_generator
from ..evaluation.clip_features import clip_image_embeddings, clip_text_embeddings

# --- rules --------------------------------------------------------------------------------------------------

COLOURS = frozenset("red orange yellow green blue purple pink brown black white gray grey silver gold golden beige "
                    "violet cyan magenta turquoise teal navy maroon".split())
SIZES = frozenset("small large big tiny huge little giant medium".split())
OPPOSITE_DIRECTIONS = {"left": "right", "up": "down", "upward": "downward", "upwards": "downwards",
                       "higher": "lower", "forward": "backward", "forwards": "backwards", "closer": "farther",
                       "clockwise": "counterclockwise", "tilt": "straighten"}
OPPOSITE_DIRECTIONS.update({v: k for k, v in list(OPPOSITE_DIRECTIONS.items())})
OPPOSITE_DIRECTIONS["anticlockwise"] = "clockwise"
_DETERMINERS = {"the", "a", "an", "some", "this", "that", "these", "those"}
_NUMBERS = set("one two three four five six seven eight nine ten several many".split())
_POSSESSIVES = {"his", "her", "its", "their", "my", "your", "our"}
_PRONOUNS = {"it", "him", "her", "them", "he", "she", "they", "this", "that", "everything", "image", "picture",
             "photo", "scene"}
_STOP = _DETERMINERS | _POSSESSIVES | set("and or with on in at to of from by for under behind near next , . ; :"
                                           .split())
_CONNECTORS = {"and", "with", ",", "plus", "while"}
_PLACE_PREPOSITIONS = r"next to|in front of|on top of|beside|behind|under|underneath|above|below|near|on|in|into|" \
                      r"onto|at|to|inside|over|by|around|across|along|between|among"
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "«": '"', "»": '"'})


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\w'-]+|[^\w\s]", text.translate(_SMART_QUOTES))


def _lower(tokens: list[str]) -> list[str]:
    return [t.lower() for t in tokens]


def _join(tokens: list[str]) -> str:
    return re.sub(r" ([,.;:!?])", r"\1", " ".join(tokens))


def _bare(phrase: str) -> list[str]:
    """The words of a noun phrase without its leading determiner."""
    words = _tokens(phrase)
    return words[1:] if words and words[0].lower() in _DETERMINERS else words


def _the(phrase: str) -> str:
    words = _tokens(phrase)
    return _join(words) if words and words[0].lower() in _POSSESSIVES else "the " + _join(_bare(phrase))


def _indefinite(words: list[str]) -> str:
    """"a"/"an" + words, or no article for a (likely) plural."""
    head = words[-1].lower()
    if head.endswith("s") and not head.endswith(("ss", "us", "is")):
        return _join(words)
    return ("an " if words[0][0].lower() in "aeiou" else "a ") + _join(words)


def _occurrences(tokens: list[str], words: list[str]) -> list[int]:
    low, want = _lower(tokens), _lower(words)
    return [i for i in range(len(low) - len(want) + 1) if want and low[i:i + len(want)] == want]


def _before(tokens: list[str], start: int, limit: int = 3) -> list[str]:
    """Up to ``limit`` modifier words right before ``start``, stopping at determiners, prepositions, commas."""
    out = []
    for token in reversed(tokens[max(0, start - limit):start]):
        if token.lower() in _STOP:
            break
        out.insert(0, token)
    return out


def _named_once(caption: str, words: list[str]) -> tuple[list[str], int] | None:
    """The caption's tokens and where ``words`` occur, if they occur exactly once."""
    tokens = _tokens(caption)
    found = _occurrences(tokens, words) or _occurrences(tokens, words[-1:])
    return (tokens, found[0]) if len(found) == 1 else None


def _attribute(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"make the red circle blue" → "make the blue circle red": the old value is read from the object's own
    words, else from the input caption right before the object's name; None if it is nowhere to be found."""
    new, words = match["w"].lower(), _bare(match["obj"])
    kind = COLOURS if new in COLOURS else SIZES
    if not words or words[-1].lower() in _PRONOUNS:
        return None
    own = [i for i, w in enumerate(words) if w.lower() in kind]
    if own:
        old = words[own[0]]
        obj = re.sub(rf"\b{re.escape(old)}\b", match["w"], match["obj"], count=1)
    else:
        named = _named_once(input_caption, words)
        old = next((w for w in _before(*named) if w.lower() in kind), None) if named else None
        obj = match["obj"]
    if old is None or old.lower() == new:
        return None
    mid = re.sub(r"\b(to|into)\b", r"back \1", match["mid"])
    return f"{match['verb']} {match['pre'] or ''}{obj}{mid}{old}{match['tail'] or ''}"


def _changed_span(input_caption: str, edited_caption: str):
    """(old tokens, new tokens) spanning where the captions differ, ignoring changed connectors
    (", " → "and" when a list shrinks), or None if they do not differ."""
    old, new = _tokens(input_caption), _tokens(edited_caption)
    ops = [op for op in difflib.SequenceMatcher(None, _lower(old), _lower(new), autojunk=False).get_opcodes()
           if op[0] != "equal" and (_trim(old[op[1]:op[2]], _CONNECTORS) or _trim(new[op[3]:op[4]], _CONNECTORS))]
    if not ops:
        return None
    return old[ops[0][1]:ops[-1][2]], new[ops[0][3]:ops[-1][4]]


def _trim(tokens: list[str], words: set[str]) -> list[str]:
    while tokens and tokens[0].lower() in words:
        tokens = tokens[1:]
    while tokens and tokens[-1].lower() in words:
        tokens = tokens[:-1]
    return tokens


def _removed(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"remove the dog" → "add <the dog's phrase in the input caption>", else "add the dog back"."""
    words = _bare(match["obj"])
    if not words or words[-1].lower() in _PRONOUNS:
        return None
    span = _changed_span(input_caption, edited_caption)
    if span and not _trim(span[1], _CONNECTORS):
        phrase = _trim(span[0], _CONNECTORS)  # a noun phrase naming the object: "a small red circle at the top"
        if (phrase and _lower(phrase)[0] in _DETERMINERS | _NUMBERS and words[-1].lower() in _lower(phrase)
                and "," not in phrase and len(phrase) <= 12):
            return f"add {_join(phrase)}"
    return f"add {_the(match['obj'])} back"


def _added(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"add a ball next to the dog" → "remove the ball"; "put the dog on the floor" moves a known object: None."""
    words, first = _bare(match["obj"]), _tokens(match["obj"])[0].lower()
    if not words or words[-1].lower() in _PRONOUNS or (match["verb"].lower() != "add" and first in
                                                         {"the"} | _POSSESSIVES):
        return None
    return f"remove {_the(match['obj'])}"


def _moved_to(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"move the dog to the floor" → "move the dog back to the couch", the old place read off the captions."""
    span = _changed_span(input_caption, edited_caption)
    head = _bare(match["obj"])[-1:]
    if not span or not head or head[0].lower() in _PRONOUNS or _tokens(match["dest"])[-1].lower() not in \
            _lower(span[1]) or head[0].lower() in _lower(span[0]):
        return None
    place = span[0]
    while place and re.fullmatch(_PLACE_PREPOSITIONS, place[0].lower()):
        place = place[1:]
    if not place or len(place) > 6:
        return None
    return f"{match['verb']} {match['obj']} back to {_the(_join(place))}"


def _swapped(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"turn the red circle into a square" → "turn the red square back into a circle", if the captions show the
    object replaced; a bare noun is enriched from the input caption ("jacket" → "denim jacket")."""
    old_words, new_words = _bare(match["a"]), _bare(match["b"])
    if not old_words or not new_words or {old_words[-1].lower(), new_words[-1].lower()} & _PRONOUNS:
        return None
    old_in, old_out = (len(_occurrences(_tokens(c), old_words)) for c in (input_caption, edited_caption))
    new_in, new_out = (len(_occurrences(_tokens(c), new_words[-1:])) for c in (input_caption, edited_caption))
    if match["verb"].lower() not in ("replace", "swap", "exchange") and not (old_in > old_out and new_out > new_in):
        return None
    modifiers = old_words[:-1]  # "red" of "the red circle", if the edited caption shows a "red square"
    carried = next((modifiers[i:] for i in range(len(modifiers))
                    if _occurrences(_tokens(edited_caption), modifiers[i:] + new_words)), [])
    new_name = carried + new_words
    old_name = [w for w in old_words if w not in carried]
    if len(old_words) == 1:
        named = _named_once(input_caption, old_words)
        old_name = (_before(*named, limit=2) if named else []) + old_words
    verb = match["verb"]
    if verb.lower() in ("replace", "swap", "exchange"):
        return f"{verb} the {_join(new_name)} {match['prep']} {_indefinite(old_name)}"
    if not match.groupdict().get("prep"):  # "make the jacket a rain coat"
        return f"{verb} the {_join(new_name)} {_indefinite(old_name)}"
    return f"{verb} the {_join(new_name)} back {match['prep']} {_indefinite(old_name)}"


def _same(match: re.Match, input_caption: str, edited_caption: str) -> str:
    return match.string


def _opposite(match: re.Match, input_caption: str, edited_caption: str) -> str:
    """The instruction with its direction word (or tilt/straighten) swapped for the opposite."""
    word = match["dir"]
    return match.string[: match.start("dir")] + OPPOSITE_DIRECTIONS[word.lower()] + match.string[match.end("dir"):]


_ATTRIBUTE_WORD = "|".join(sorted(COLOURS | SIZES, key=len, reverse=True))
_RULES = [(re.compile(pattern, re.IGNORECASE), handler) for pattern, handler in [
    (r"(?P<dir>tilt|straighten) the .+", _opposite),
    (r"(?:turn|flip|rotate) the .+ upside[- ]down|(?:flip|mirror) the .+?(?: horizontally| vertically)?", _same),
    (r"(?:rotate|turn) the .+? (?P<dir>clockwise|counterclockwise|anticlockwise)(?: by \d+ degrees)?", _opposite),
    (r"(?:move|shift|slide|push|drag) the .+? (?:to the )?(?P<dir>left|right|up|down|upwards?|downwards?|higher|"
     r"lower|closer|farther|forwards?|backwards?)", _opposite),
    (rf"(?P<verb>make|paint|colou?r|recolou?r|dye|turn|change|resize|set|switch) (?P<pre>the colou?r of )?"
     rf"(?P<obj>.+?)(?P<mid>(?:'s| 's)? colou?r to | to | into | )(?P<w>{_ATTRIBUTE_WORD})"
     rf"(?P<tail> colou?red| colou?r)?", _attribute),
    (r"(?P<verb>add|put|place|draw|insert|include) (?P<obj>.+?)(?: (?:" + _PLACE_PREPOSITIONS + r") .+)?", _added),
    (r"(?:remove|delete|erase|take away|take out|get rid of|eliminate) (?P<obj>.+?)(?: from .+)?", _removed),
    (r"(?P<verb>move|relocate) (?P<obj>the .+?) (?:" + _PLACE_PREPOSITIONS + r") (?P<dest>.+)", _moved_to),
    (r"(?P<verb>replace|swap|exchange) (?P<a>.+?) (?P<prep>with|for) (?P<b>.+)", _swapped),
    (r"(?P<verb>turn|change|transform|convert) (?P<a>.+?) (?P<prep>into|to) (?P<b>.+)", _swapped),
    (r"(?P<verb>make) (?P<a>the .+?) (?P<b>(?:a|an) .+)", _swapped),
]]
_POLITE = re.compile(r"^(please,? )?(.*?)((?:,| and) nothing else)?$", re.IGNORECASE)


def reverse_instruction_by_rules(input_caption: str, edit_instruction: str, edited_caption: str) -> str | None:
    """A reverse instruction for the common edit forms, or None when no rule applies or the captions do not
    give what the reverse needs (e.g. the colour before a colour change): it never guesses.

    Forms: add/remove, replace/swap, turn/change/make A into B, colour and size changes, moves (directions,
    or places read off the captions), tilts, flips and rotations; a leading "please" and a trailing
    ", nothing else" are kept."""
    for name, value in (("input_caption", input_caption), ("edit_instruction", edit_instruction),
                        ("edited_caption", edited_caption)):
        if not isinstance(value, str):
            raise TypeError(f"`{name}` must be a str, got {type(value).__name__}.")
    text = " ".join(edit_instruction.translate(_SMART_QUOTES).split()).rstrip(".!")
    polite, core, suffix = _POLITE.match(text).groups()
    for pattern, handler in _RULES:
        match = pattern.fullmatch(core)
        if match:
            reverse = handler(match, input_caption, edited_caption)
            return None if reverse is None else f"{polite or ''}{reverse}{suffix or ''}"
    return None


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
    value = value.translate(_SMART_QUOTES).lstrip(" \t*_`")
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
    text = text.translate(_SMART_QUOTES).split("###", 1)[0]
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
    text = text.translate(_SMART_QUOTES)
    fields = list(_FIELD.finditer(text))
    ends = [m.start() for m in fields[1:]] + [len(text)] if fields else []
    edits, seen, record = [], set(), {}

    def finish(record):
        instruction, edited = record.get("edit_instruction"), record.get("edited_caption")
        reverse = record.get("reverse_instruction")
        if instruction and edited and (reverse or not require_reverse) and instruction.lower() not in seen:
            seen.add(instruction.lower())
            edits.append({"edit_instruction": instruction, "edited_caption": edited,
                          "reverse_instruction": reverse or None})

    for match, end in zip(fields, ends, strict=True):
        kind, value = _field_kind(match["label"]), _clean(text[match.end():end])
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


# --- CLIP filtering (supplement §8.2) -------------------------------------------------------------------------

class ClipFilterResult(NamedTuple):
    similarities: torch.Tensor  # [N] float32 cosine similarity of each image and its caption
    keep: torch.Tensor  # [N] bool: similarity >= threshold


@torch.no_grad()
def clip_filter(images, captions, clip_model, processor_or_tokenizer, image_processor=None, *,
                threshold: float = 0.2, batch_size: int = 32, progress: bool = True) -> ClipFilterResult:
    """CLIP image–caption cosine similarities and the pairs to keep (the paper: ViT-L/14, threshold 0.2).

    ``processor_or_tokenizer`` is a ``CLIPProcessor`` or a tokenizer; with a tokenizer and no
    ``image_processor``, images are preprocessed the standard CLIP way at the model's image size. Images
    (PIL images or paths) are opened one batch at a time."""
    from transformers import CLIPImageProcessor

    from .data import load_image

    if len(images) != len(captions):
        raise ValueError(f"`images` and `captions` must pair up, got {len(images)} images and {len(captions)} "
                         "captions.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise ValueError(f"`threshold` must be a cosine similarity in [-1, 1], got {threshold!r}.")
    bad = next((i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()), None)
    if bad is not None:
        raise ValueError(f"captions[{bad}] must be a non-empty string, got {captions[bad]!r}.")
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    image_processor = image_processor or getattr(processor_or_tokenizer, "image_processor", None)
    if image_processor is None:
        size = clip_model.config.vision_config.image_size
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    parameter = next(clip_model.parameters())
    max_length = clip_model.config.text_config.max_position_embeddings
    similarities = []
    for start in tqdm(range(0, len(captions), batch_size), desc="CLIP filter", disable=not progress):
        stop = min(start + batch_size, len(captions))
        batch = []
        for i in range(start, stop):
            try:
                batch.append(load_image(images[i]))
            except ValueError as error:
                raise ValueError(f"images[{i}]: {error}") from error
        pixels = image_processor(images=batch, return_tensors="pt")["pixel_values"]
        tokens = tokenizer(list(captions[start:stop]), padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")
        image = clip_image_embeddings(clip_model, pixels.to(parameter.device, parameter.dtype))
        text = clip_text_embeddings(clip_model, tokens["input_ids"].to(parameter.device),
                                    tokens["attention_mask"].to(parameter.device))
        similarities.append((image * text).sum(-1).float().cpu())
    similarities = torch.cat(similarities) if similarities else torch.zeros(0)
    return ClipFilterResult(similarities, similarities >= threshold)
