"""Prompt-to-Prompt (Hertz et al.): edit by giving the target prompts the source prompt's attention.

Prompt 0 is the source, the others are targets; only the conditional half of a guided batch is edited,
so the source rows stay exactly what plain attention gives. During a step window, a target's
cross-attention probabilities come from the source's (through a token mapping), and its self-attention
is the source's on the low-resolution levels only (two or more downsamplings below the latents by
default: SD 1.x's 16×16 and 8×8 maps, where the P2P notebooks replace it). `LocalBlend` then keeps the
latents outside the edited words' region equal to the source's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .controller import AttentionController, LayerInfo, per_row
from .store import AttentionStore
from .tokens import check_prompts, positions_per_prompt, refine_alignment, replace_mapper, word_token_indices

Window = tuple[float, float]


def _window(value, name: str) -> Window:
    """A fraction f means (0, f); a pair means (start, end); both as fractions of the sampling steps."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        window = (0.0, float(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        window = (float(value[0]), float(value[1]))
    else:
        raise TypeError(f"`{name}` must be a fraction or a (start, end) pair of fractions, got {value!r}.")
    if not 0.0 <= window[0] <= window[1] <= 1.0:
        raise ValueError(f"`{name}` must satisfy 0 ≤ start ≤ end ≤ 1, got {value!r}.")
    return window


def _in_window(window: Window, step: int, num_steps: int) -> bool:
    return int(window[0] * num_steps) <= step < int(window[1] * num_steps)


def _positions_in_targets(tokenizer, prompts: list[str], word: str, name: str) -> list[list[int]]:
    """Token positions of ``word`` in each target prompt; it must occur in at least one."""
    positions = []
    for prompt in prompts[1:]:
        try:
            positions.append(word_token_indices(tokenizer, prompt, word))
        except ValueError:
            positions.append([])
    if not any(positions):
        raise ValueError(f"The word {word!r} in `{name}` is in none of the target prompts {prompts[1:]}.")
    return positions


class PromptToPromptController(AttentionController):
    """What the P2P edits share: step windows, the batch layout, and which layers they touch.

    Args:
        prompts: source prompt, then target prompts (one UNet row each per guidance half).
        tokenizer: the pipeline's tokenizer (``model_max_length`` text tokens).
        cross_replace_steps: when targets take the source's cross-attention: a fraction f (steps [0, f)),
            a (start, end) pair, or a dict {word: fraction or pair, "default_": ...} with per-word windows
            (words looked up in the target prompts; "default_" is (0, 1) when left out).
        self_replace_steps: when targets take the source's self-attention: a fraction or a pair.
        self_replace_min_level: self-attention is replaced on layers at least this many downsamplings below
            the latents (`LayerInfo.level`). The default 2 is the P2P notebooks' choice on SD 1.x (16×16 and
            8×8 of its 64×64 latents: a map side at most a quarter of the latent side), expressed in levels
            so that it keeps its meaning on smaller UNets (the Shapes UNet's 4×4 middle block). On a UNet
            whose deepest self-attention level is shallower, that deepest level is replaced. 1 is every level
            but the highest-resolution one; 0 is every level.
    """

    def __init__(self, prompts: Sequence[str], tokenizer, cross_replace_steps=0.4, self_replace_steps=0.4,
                 self_replace_min_level: int = 2):
        super().__init__()
        self.prompts, self.tokenizer = check_prompts(prompts), tokenizer
        self.num_tokens = tokenizer.model_max_length
        self.self_window = _window(self_replace_steps, "self_replace_steps")
        if isinstance(self_replace_min_level, bool) or not isinstance(self_replace_min_level, int) \
                or self_replace_min_level < 0:
            raise ValueError(f"`self_replace_min_level` must be an int ≥ 0, got {self_replace_min_level!r}.")
        self.self_replace_min_level = self_replace_min_level
        windows = dict(cross_replace_steps) if isinstance(cross_replace_steps, Mapping) else {
            "default_": cross_replace_steps}
        self.default_cross_window = _window(windows.pop("default_", (0.0, 1.0)), "cross_replace_steps")
        self.word_windows = [(_window(window, f"cross_replace_steps[{word!r}]"),
                              _positions_in_targets(tokenizer, self.prompts, word, "cross_replace_steps"))
                             for word, window in windows.items()]

    def configure(self, num_prompts: int, do_classifier_free_guidance: bool) -> AttentionController:
        if num_prompts != len(self.prompts):
            raise ValueError(f"`num_prompts` is {num_prompts}, but the controller was built for "
                             f"{len(self.prompts)} prompts.")
        return super().configure(num_prompts, do_classifier_free_guidance)

    def edits(self, layer: LayerInfo) -> bool:
        if layer.is_cross:
            return True
        return layer.level >= self.self_replace_level()

    def self_replace_level(self) -> int:
        """The shallowest level whose self-attention is replaced, on the UNet the controller is bound to."""
        deepest = max((layer.level for layer in self.layers if not layer.is_cross), default=None)
        return self.self_replace_min_level if deepest is None else min(self.self_replace_min_level, deepest)

    def cross_alpha(self, step: int) -> torch.Tensor:
        """[targets, tokens] bool: which target tokens take the source's cross-attention at ``step``."""
        default = _in_window(self.default_cross_window, step, self.num_steps)
        alpha = torch.full((len(self.prompts) - 1, self.num_tokens), default)
        for window, positions in self.word_windows:
            active = _in_window(window, step, self.num_steps)
            for target, target_positions in enumerate(positions):
                alpha[target, target_positions] = active
        return alpha

    def replace_cross(self, source: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Targets' new cross-attention [targets, heads, queries, tokens] from the source's
        [heads, queries, tokens] and their own."""
        raise NotImplementedError

    def edit_probs(self, probs: torch.Tensor, heads: int, layer: LayerInfo) -> torch.Tensor:
        step, rows = self.require_step(), self.conditional_rows()
        maps = per_row(probs, heads)
        source, targets = maps[rows[0]], maps[rows[1]: rows[-1] + 1]
        if layer.is_cross:
            if probs.shape[-1] != self.num_tokens:
                raise ValueError(f"Cross-attention has {probs.shape[-1]} text tokens, but the tokenizer's "
                                 f"model_max_length is {self.num_tokens}.")
            alpha = self.cross_alpha(step)
            if not alpha.any():
                return probs
            alpha = alpha.to(probs.device)
            edited = torch.where(alpha[:, None, None, :], self.replace_cross(source, targets), targets)
        else:
            if not _in_window(self.self_window, step, self.num_steps):
                return probs
            edited = source.expand_as(targets)
        maps = maps.clone()
        maps[rows[1]: rows[-1] + 1] = edited
        return maps.view_as(probs)


class AttentionReplace(PromptToPromptController):
    """Word swaps ("a cat on a bench" → "a dog on a bench"): prompts with the same number of words."""

    def __init__(self, prompts: Sequence[str], tokenizer, **windows):
        super().__init__(prompts, tokenizer, **windows)
        self.mappers = torch.stack([replace_mapper(tokenizer, self.prompts[0], p) for p in self.prompts[1:]])

    def replace_cross(self, source, targets):
        return torch.einsum("hqs,pst->phqt", source, self.mappers.to(source.device, source.dtype))


class AttentionRefine(PromptToPromptController):
    """Added, removed or reordered words: aligned tokens take the source's attention, new ones keep theirs.

    ``padding`` says where the target's padding tokens read from (`refine_alignment`): "follow_end" (ours:
    the k-th padding token after the target's end token reads the k-th after the source's) or
    "same_position" (the P2P reference code's ``seq_aligner``: position j reads position j).
    """

    def __init__(self, prompts: Sequence[str], tokenizer, padding: str = "follow_end", **windows):
        super().__init__(prompts, tokenizer, **windows)
        alignments = [refine_alignment(tokenizer, self.prompts[0], p, padding) for p in self.prompts[1:]]
        self.mappers = torch.stack([mapper for mapper, _ in alignments])
        self.alphas = torch.stack([alphas for _, alphas in alignments]).bool()

    def replace_cross(self, source, targets):
        mappers, alphas = self.mappers.to(source.device), self.alphas.to(source.device)
        aligned = torch.stack([source[..., mapper] for mapper in mappers])
        return torch.where(alphas[:, None, None, :], aligned, targets)


class AttentionReweight(PromptToPromptController):
    """Scales the attention to chosen words (e.g. {"red": 2.0}) on top of the source's attention, or on top
    of what ``previous`` (a Replace or Refine for the same prompts) would give. Not renormalised, as in P2P.
    """

    def __init__(self, prompts: Sequence[str], tokenizer, scales: Mapping[str, float],
                 previous: PromptToPromptController | None = None, **windows):
        super().__init__(prompts, tokenizer, **windows)
        if not isinstance(scales, Mapping) or not scales:
            raise TypeError(f"`scales` must be a non-empty dict {{word: scale}}, got {scales!r}.")
        if previous is not None and (not isinstance(previous, PromptToPromptController)
                                     or previous.prompts != self.prompts):
            raise ValueError("`previous` must be a Prompt-to-Prompt controller built for the same `prompts`.")
        self.previous = previous
        self.equalizer = torch.ones(len(self.prompts) - 1, self.num_tokens)
        for word, scale in scales.items():
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
                raise TypeError(f"`scales` (the equalizer) must map words to finite numbers, got {word!r}: {scale!r}.")
            for target, positions in enumerate(_positions_in_targets(tokenizer, self.prompts, word, "scales")):
                self.equalizer[target, positions] = float(scale)

    def replace_cross(self, source, targets):
        base = source.expand_as(targets) if self.previous is None else self.previous.replace_cross(source, targets)
        return base * self.equalizer.to(source.device, source.dtype)[:, None, None, :]


class LocalBlend:
    """Keeps target latents equal to the source's outside the region of the given words.

    The region comes from ``store``'s cross-attention maps of the words, summed over each prompt's words,
    max-pooled (3×3), resized to the latents, divided by its maximum and thresholded; a target's mask is
    the union of its region and the source's. Call it after each scheduler update, on each latent you
    carry: ``latents = local_blend(latents, step)``.

    Args:
        store: an AttentionStore attached to the editing controller, recording cross-attention every step.
        prompts: source prompt, then target prompts, in batch order.
        words: one entry per prompt: a word or a list of words (e.g. ``["cat", "dog"]``).
        threshold: mask threshold on the normalised map.
        start: fraction of the steps before blending starts (the first maps are unreliable).
        resolution: `LayerInfo.resolution` of the maps to use; None: the highest the store records.
    """

    def __init__(self, store: AttentionStore, prompts: Sequence[str], tokenizer, words: Sequence,
                 threshold: float = 0.3, start: float = 0.2, resolution: int | None = None):
        if not isinstance(store, AttentionStore):
            raise TypeError(f"`store` must be an AttentionStore, got {type(store).__name__}.")
        self.store, self.prompts = store, check_prompts(prompts)
        self.positions = positions_per_prompt(tokenizer, self.prompts, words, "words")
        for name, value in (("threshold", threshold), ("start", start)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {value}.")
        self.threshold, self.start = threshold, start
        self.resolution = resolution

    def mask(self, latent_size: tuple[int, int]) -> torch.Tensor:
        """[prompts, 1, height, width] bool region of each prompt's words (not yet joined with the source's)."""
        maps = self.store.aggregate(self.resolution)  # [prompts, h, w, tokens], conditional rows
        region = torch.stack([maps[p, ..., positions].sum(-1) for p, positions in enumerate(self.positions)])
        region = F.max_pool2d(region[:, None], kernel_size=3, stride=1, padding=1)
        region = F.interpolate(region, size=latent_size)
        region = region / region.amax(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(region.dtype).tiny)
        return region > self.threshold

    def blend(self, latents: torch.Tensor, step: int) -> torch.Tensor:
        """``latents`` [prompts, C, H, W] with each target set to the source outside its mask."""
        if latents.ndim != 4 or latents.shape[0] != len(self.prompts):
            raise ValueError(f"`latents` must be [{len(self.prompts)} prompts, C, H, W], got {tuple(latents.shape)}.")
        self.store.controller.require_step()
        if step < int(self.start * self.store.controller.num_steps):
            return latents
        masks = self.mask(tuple(latents.shape[-2:])).to(latents.device)
        keep = masks[1:] | masks[:1]
        source = latents[:1]
        return torch.cat([source, torch.where(keep, latents[1:], source)])

    __call__ = blend
