"""Where a prompt's words sit among its tokens, and how a target prompt's tokens map to a source's.

Words are whitespace-separated. Token positions count the start token, so the first word starts at
position 1, as in the text encoder's output and the cross-attention maps.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Sequence
from typing import NamedTuple

import torch


class WordSpan(NamedTuple):
    text: str
    token_ids: tuple[int, ...]
    positions: list[int]


def word_spans(tokenizer, prompt: str) -> list[WordSpan]:
    """Each word of ``prompt`` with its token ids and token positions."""
    if not isinstance(prompt, str):
        raise TypeError(f"`prompt` must be a str, got {type(prompt).__name__}.")
    spans, position = [], 1
    for word in prompt.split():
        ids = tuple(tokenizer(word, add_special_tokens=False).input_ids)
        spans.append(WordSpan(word, ids, list(range(position, position + len(ids)))))
        position += len(ids)
    if position > tokenizer.model_max_length - 1:
        raise ValueError(
            f"The prompt {prompt!r} has {position - 1} tokens, but only {tokenizer.model_max_length - 2} fit "
            "between the start and end tokens; shorten it."
        )
    return spans


def _end_position(spans: list[WordSpan]) -> int:
    """Position of the end token."""
    return spans[-1].positions[-1] + 1 if spans else 1


def _normalise(word: str) -> str:
    return word.lower().strip(string.punctuation)


def word_token_indices(tokenizer, prompt: str, word: str) -> list[int]:
    """Token positions of every occurrence of ``word`` in ``prompt`` (several words: all of their tokens).

    Matching ignores case and surrounding punctuation ("cat" finds "Cat,").
    """
    if not isinstance(word, str) or not word.split():
        raise ValueError(f"`word` must be a non-empty str, got {word!r}.")
    spans = word_spans(tokenizer, prompt)
    indices = []
    for wanted in word.split():
        found = [p for span in spans if _normalise(span.text) == _normalise(wanted) for p in span.positions]
        if not found:
            raise ValueError(
                f"The word {wanted!r} is not in the prompt {prompt!r} (its words: {[s.text for s in spans]})."
            )
        indices += found
    return sorted(set(indices))


def check_prompts(prompts) -> list[str]:
    """The edit prompts as a list: source first, then at least one target."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("`prompts` must be a list of str: the source prompt first, then the target prompts.")
    if len(prompts) < 2:
        raise ValueError(f"`prompts` needs a source and at least one target prompt, got {len(prompts)} prompt(s).")
    return list(prompts)


def positions_per_prompt(tokenizer, prompts: list[str], words: Sequence, name: str) -> list[list[int]]:
    """Token positions of each prompt's entry in ``words``: a word or a list of words, one entry per prompt."""
    if isinstance(words, str) or not isinstance(words, Sequence) or len(words) != len(prompts):
        raise ValueError(f"`{name}` needs one entry (a word or a list of words) per prompt: {len(prompts)}, "
                         f"got {words!r}.")
    return [sorted({p for word in ([entry] if isinstance(entry, str) else entry)
                    for p in word_token_indices(tokenizer, prompt, word)})
            for prompt, entry in zip(prompts, words, strict=True)]


def replace_mapper(tokenizer, source: str, target: str) -> torch.Tensor:
    """[tokens, tokens] matrix M for a word swap: target attention = source attention @ M.

    Words pair up by position. A word whose token count changed spreads the source word's attention
    evenly over the target word's tokens (each source token gives 1/len(target word) to each), so the
    attention mass is kept. The end token and padding follow in order; positions pushed past the last
    one are dropped.
    """
    source_spans, target_spans = word_spans(tokenizer, source), word_spans(tokenizer, target)
    if len(source_spans) != len(target_spans):
        raise ValueError(
            f"`source` and `target` have different word counts ({len(source_spans)} and {len(target_spans)}); "
            "a replace edit swaps words one for one. Use refine (AttentionRefine) for added, removed or "
            "reordered words."
        )
    size = tokenizer.model_max_length
    mapper = torch.zeros(size, size)
    mapper[0, 0] = 1  # start token
    for source_span, target_span in zip(source_spans, target_spans, strict=True):
        rows, columns = torch.tensor(source_span.positions), torch.tensor(target_span.positions)
        if len(rows) == len(columns):
            mapper[rows, columns] = 1
        else:
            mapper[rows[:, None], columns] = 1 / len(columns)
    source_end, target_end = _end_position(source_spans), _end_position(target_spans)
    tail = torch.arange(size - max(source_end, target_end))
    mapper[source_end + tail, target_end + tail] = 1
    return mapper


REFINE_PADDINGS = ("follow_end", "same_position")


def refine_alignment(tokenizer, source: str, target: str,
                     padding: str = "follow_end") -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper, alphas), both [tokens]: target token j takes source token ``mapper[j]``'s attention where
    ``alphas[j]`` is 1, and keeps its own where it is 0 (words that are new in the target).

    Words align when they tokenize identically: first the longest common word subsequences (difflib),
    then words that moved, each paired with the first unpaired source word of the same text. A changed
    word, even one that shares tokens with the old one, counts as new. Where ``alphas`` is 0, ``mapper``
    is 0 (unused).

    The end token reads the source's end token. The padding after it: with ``padding="follow_end"``, the
    k-th padding token reads the source's k-th (position j reads j − Δ, Δ the shift of the end token, so
    every target token reads a source token of the same kind); with "same_position", position j reads
    position j, as the P2P reference code's ``seq_aligner.get_mapper`` does (there a shorter target's
    first padding tokens read the source's last words).
    """
    if padding not in REFINE_PADDINGS:
        raise ValueError(f"`padding` must be one of {', '.join(REFINE_PADDINGS)}, got {padding!r}.")
    source_spans, target_spans = word_spans(tokenizer, source), word_spans(tokenizer, target)
    source_words = [span.token_ids for span in source_spans]
    target_words = [span.token_ids for span in target_spans]
    pairs: dict[int, int] = {}  # target word index → source word index
    matcher = difflib.SequenceMatcher(None, source_words, target_words, autojunk=False)
    for block in matcher.get_matching_blocks():
        pairs.update({block.b + k: block.a + k for k in range(block.size)})
    unpaired = [i for i in range(len(source_words)) if i not in pairs.values()]
    for j, word in enumerate(target_words):
        if j in pairs:
            continue
        match = next((i for i in unpaired if source_words[i] == word), None)
        if match is not None:
            pairs[j] = match
            unpaired.remove(match)

    size = tokenizer.model_max_length
    mapper, alphas = torch.zeros(size, dtype=torch.long), torch.zeros(size)
    alphas[0] = 1  # start token
    for j, i in pairs.items():
        for source_position, target_position in zip(source_spans[i].positions, target_spans[j].positions,
                                                    strict=True):
            mapper[target_position], alphas[target_position] = source_position, 1
    source_end, target_end = _end_position(source_spans), _end_position(target_spans)
    tail = torch.arange(target_end, size)
    mapper[tail] = (tail - target_end + source_end).clamp(max=size - 1) if padding == "follow_end" else tail
    mapper[target_end] = source_end
    alphas[tail] = 1
    return mapper, alphas
