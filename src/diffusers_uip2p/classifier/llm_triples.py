"""The DSI paper's way of making classifier triples: prompt a language model in context, parse what it writes.

The paper prompted GPT-4 (supplement Fig. S10). `generate_triples_with_llm` sends the same prompt to a local
transformers model, a text-generation pipeline, or any ``prompt -> text`` callable (e.g. a wrapped API
client), and `parse_triples` turns the free-form reply into `EditTriple`s, dropping whatever it cannot read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm
from transformers import Pipeline, PreTrainedModel

from .tasks import EDIT_TASKS
from .triples import EditTriple

# DSI paper, supplement Fig. S10: the in-context prompt given to GPT-4, quoted as printed (its list of
# definitions stops at the fourth category although it announces five; the examples include all five).
_PROMPT_TEMPLATE = (
    "I want to make {num_samples} triple samples.\n\n"
    "You are an expert in English writing. Please generate {num_samples} triple samples for me, each sample "
    "comprising a source text, a target text, and an associated editing task label. We classify "
    "text-conditional image editing into five categories: 1) Object Replacement: Replacing an object in the "
    "image with another object; 2) Action Editing: Preserving the background and the object identity but "
    "altering his/her/its action; 3) Scene Editing: Keeping the objects in the image unchanged while "
    "transforming the scene; 4) Object Adding: Adding a new object to the image while keeping the unedited "
    "part of the image. I show you some samples of these five categories:\n{examples}"
)
# DSI paper, supplement Fig. S10: the in-context examples.
PAPER_EXAMPLES = (
    EditTriple("A snowy landscape with a lone pine tree.", "A snowy landscape with a tower.", "object_replacement"),
    EditTriple("A dog sleeping in a sunny spot on the carpet.",
               "A dog playing with a ball in a sunny spot on the carpet.", "action_editing"),
    EditTriple("A burger on a plate.", "A burger and a tomato on the plate.", "object_adding"),
    EditTriple("A small boat on a calm lake at noon.", "A small boat on a calm lake under a starry night sky.",
               "scene_editing"),
    EditTriple("A digital art portrait of a woman.", "An impressionist-style painting of the same woman.",
               "style_editing"),
)
# In the figure this line opens GPT-4's reply; ending the prompt with it lets a plain causal LM continue the list.
_ANSWER_CUE = "\n\nHere are the {num_samples} samples:\n"

# Task names as an LLM may write them (lower-cased words) -> the package's task names.
TASK_ALIASES = {
    **{tuple(task.split("_")): task for task in EDIT_TASKS},
    ("object", "replace"): "object_replacement",
    ("action", "edit"): "action_editing",
    ("scene", "edit"): "scene_editing",
    ("object", "addition"): "object_adding",
    ("new", "object", "creation"): "object_adding",
    ("style", "edit"): "style_editing",
}
_LONGEST_ALIAS_FIRST = sorted(TASK_ALIASES, key=len, reverse=True)
# "Source:", "**Target text**:", '"task":', "Task label:" ...; the label word must not end a longer word.
_FIELD = re.compile(r"(?<![a-z])(source|target|task)(?:[ \t]+(?:text|prompt|caption|label))?[ \t*_\"']*[:：]",
                    re.IGNORECASE)
SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "«": '"', "»": '"'})
_WRAPPING = " \t*_`\"',;:.-–—•|"


def _display_name(task: str) -> str:
    return task.replace("_", " ").title()


def _format_examples(examples: Iterable[EditTriple]) -> str:
    return "\n".join(f"Source: {e.source} Target: {e.target} Task: {_display_name(e.task)}" for e in examples)


PAPER_PROMPT = _PROMPT_TEMPLATE.format(num_samples=10000, examples=_format_examples(PAPER_EXAMPLES))


def build_prompt(num_samples: int, examples: Iterable[EditTriple] | None = None) -> str:
    """The Fig. S10 prompt asking for `num_samples` triples, with the paper's or the given in-context examples."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be an integer >= 1, got {num_samples!r}.")
    examples = PAPER_EXAMPLES if examples is None else tuple(examples)
    if not examples or not all(isinstance(example, EditTriple) for example in examples):
        raise TypeError("`examples` must be a non-empty sequence of EditTriple.")
    prompt = _PROMPT_TEMPLATE.format(num_samples=num_samples, examples=_format_examples(examples))
    return prompt + _ANSWER_CUE.format(num_samples=num_samples)


def _clean_prompt_text(value: str) -> str:
    text = " ".join(value.replace("*", "").replace("`", "").split())
    return text.strip(_WRAPPING)


def _normalize_task(value: str) -> str | None:
    """'**Object Replacement.**', 'new object creation', 'scene_editing', 'StyleEditing' -> a task name or None."""
    words = re.findall(r"[a-z]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", value).lower())
    for alias in _LONGEST_ALIAS_FIRST:
        if tuple(words[: len(alias)]) == alias:
            return TASK_ALIASES[alias]
    return None


def labelled_fields(pattern: re.Pattern, text: str) -> list[tuple[re.Match, str]]:
    """Each field label ``pattern`` finds in an LLM's reply (smart quotes made plain), with the text that
    follows it up to the next label: the common first step of reading labelled records."""
    text = text.translate(SMART_QUOTES)
    fields = list(pattern.finditer(text))
    ends = [match.start() for match in fields[1:]] + [len(text)]
    return [(match, text[match.end():end]) for match, end in zip(fields, ends, strict=False)]


def parse_triples(text: str) -> list[EditTriple]:
    """Every complete Source/Target/Task record in an LLM's reply, in order, without duplicates.

    Fields may share a line or not, carry bullets, numbers, markdown or quotes, and use any case. A record
    missing a field, naming an unknown task or not editing anything is dropped; text without records gives [].
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    triples, seen, record = [], set(), {}
    for match, following in labelled_fields(_FIELD, text):
        label = match.group(1).lower()
        value = following.lstrip().split("\n", 1)[0]
        if label == "source":
            record = {"source": _clean_prompt_text(value)}
        elif label == "target" and list(record) == ["source"]:
            record["target"] = _clean_prompt_text(value)
        elif label == "task" and list(record) == ["source", "target"]:
            source, target, task = record["source"], record["target"], _normalize_task(value)
            key = (source.lower(), target.lower())
            if source and target and task and key[0] != key[1] and key not in seen:
                seen.add(key)
                triples.append(EditTriple(source, target, task))
            record = {}
        else:  # a field out of order: the record it belongs to is incomplete
            record = {}
    return triples


def text_generator(model_or_pipeline, tokenizer, max_new_tokens: int, do_sample: bool = True) -> Callable[[str], str]:
    """One ``prompt -> generated continuation`` function for whichever kind of model was given.

    ``do_sample=False`` decodes greedily (one reply per prompt, as for reverse instructions); a callable is
    used as it is."""
    if isinstance(model_or_pipeline, Pipeline):
        if tokenizer is not None:
            raise ValueError("Pass `tokenizer` only with a causal LM; a pipeline brings its own.")
        pipe = model_or_pipeline
        return lambda prompt: pipe(prompt, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                   return_full_text=False)[0]["generated_text"]
    if isinstance(model_or_pipeline, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("A causal LM needs its `tokenizer` to encode the prompt and decode the reply.")
        if not model_or_pipeline.can_generate():
            raise TypeError(f"{type(model_or_pipeline).__name__} cannot generate text; pass a causal LM.")
        return lambda prompt: _generate_with_lm(model_or_pipeline, tokenizer, prompt, max_new_tokens, do_sample)
    if callable(model_or_pipeline) and not isinstance(model_or_pipeline, torch.nn.Module):
        if tokenizer is not None:
            raise ValueError("Pass `tokenizer` only with a causal LM, not with a generation function.")
        return model_or_pipeline
    raise TypeError("`model_or_pipeline` must be a transformers text-generation Pipeline, a causal LM "
                    f"(PreTrainedModel) with its tokenizer, or a callable prompt -> text; got "
                    f"{type(model_or_pipeline).__name__}.")


def _generate_with_lm(model: PreTrainedModel, tokenizer, prompt: str, max_new_tokens: int, do_sample: bool) -> str:
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    prompt_length = inputs["input_ids"].shape[1]
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and prompt_length + max_new_tokens > max_positions:
        raise ValueError(f"The prompt ({prompt_length} tokens) plus `max_new_tokens`={max_new_tokens} exceeds "
                         f"the model's {max_positions} positions; lower `max_new_tokens` or pass fewer `examples`.")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad_token_id)
    return tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)


def generate_triples_with_llm(
    model_or_pipeline,
    tokenizer=None,
    *,
    num_samples: int = 100,
    max_new_tokens: int = 1024,
    seed: int = 0,
    max_generations: int = 20,
    examples: Iterable[EditTriple] | None = None,
    progress: bool = True,
) -> list[EditTriple]:
    """Up to `num_samples` distinct triples parsed from replies to the paper's prompt.

    Samples up to `max_generations` replies (seeded with ``seed + i``), stopping once `num_samples` distinct
    triples have parsed; a model that writes nothing readable gives fewer, possibly none.
    """
    for name, value in (("max_new_tokens", max_new_tokens), ("max_generations", max_generations)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    prompt = build_prompt(num_samples, examples)
    generate = text_generator(model_or_pipeline, tokenizer, max_new_tokens)
    triples, seen = [], set()
    with tqdm(total=num_samples, unit="triple", disable=not progress or max_generations == 1) as bar:
        for generation in range(max_generations):
            torch.manual_seed(seed + generation)
            for triple in parse_triples(generate(prompt)):
                key = (triple.source.lower(), triple.target.lower())
                if key not in seen and len(triples) < num_samples:
                    seen.add(key)
                    triples.append(triple)
                    bar.update(1)
            if len(triples) >= num_samples:
                break
    return triples
