"""A byte-level CLIP tokenizer built in code, offline: every string encodes without unknown tokens.

The Shapes world's tokenizer (`shapes.tokenizer`) and the tiny test components (`testing`) both build on it;
it lives here so that neither has to import the other.
"""

from __future__ import annotations

from transformers import CLIPTokenizer


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + i) for i, b in enumerate(others)})
    return mapping


def make_clip_tokenizer(model_max_length: int = 77, merges: list[tuple[str, str]] | None = None) -> CLIPTokenizer:
    """A CLIP tokenizer with a 514-token byte-level vocabulary plus optional merges.

    Every string tokenizes without unknown tokens. Ids stay below ``514 + len(merges) + 2``, so a text
    encoder with ``vocab_size`` >= 1000 accepts them. ``model_max_length`` must be set: its default is
    huge and breaks ``padding="max_length"``.
    """
    chars = list(_byte_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    merges = list(merges or [])
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
