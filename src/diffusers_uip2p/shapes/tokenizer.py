"""A CLIP tokenizer over the Shapes world's vocabulary, built offline.

It is an ordinary byte-level CLIP BPE tokenizer (so any text still tokenizes), with merges added until
every word the world's captions and instructions use is a single token. Shorter sequences and one token
per word make the tiny CLIP and the UNet's cross-attention maps easy to read.
"""

from __future__ import annotations

import itertools
import random
import re

from transformers import CLIPTokenizer

from ..byte_tokenizer import make_clip_tokenizer
from .edits import TEMPLATES, make_edit
from .scenes import random_scene

_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")  # CLIP's pre-tokenizer, restricted to what the world writes


def world_words(num_scenes: int = 2000, seed: int = 0) -> list[str]:
    """Every word in the captions and instructions of ``num_scenes`` random scenes and one edit of each
    kind and template per scene (the world is small: this covers its whole vocabulary)."""
    rng, words = random.Random(seed), set()
    for _ in range(num_scenes):
        scene = random_scene(rng)
        texts = [scene.caption()]
        for kind, templates in TEMPLATES.items():
            edit = make_edit(scene, kind, rng, template=rng.randrange(len(templates)))
            if edit is not None:
                texts += [edit.instruction, edit.reverse_instruction, edit.edited_caption]
        for text in texts:
            words.update(_WORD.findall(text.lower()))
    return sorted(words)


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: repeatedly merge the adjacent pair with the lowest rank."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get(pair, float("inf")), i) for i, pair in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        parts[i: i + 2] = [parts[i] + parts[i + 1]]
    return parts


def merges_for(words: list[str]) -> list[tuple[str, str]]:
    """Merges that make each word one token. A new merge always gets the highest rank, so it can only act
    after every older merge has: words that are already single tokens stay single."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(parts := _bpe(word, ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    return merges


def shapes_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """The world's tokenizer: CLIP's byte-level vocabulary plus one token per world word."""
    return make_clip_tokenizer(model_max_length=model_max_length, merges=merges_for(world_words()))
