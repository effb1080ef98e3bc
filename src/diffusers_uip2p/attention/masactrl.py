"""MasaCtrl (Cao et al.): mutual self-attention, where targets query the source's keys and values.

From ``start_step`` on, and on self-attention layers from ``start_layer`` on, every row of each guidance
half attends to that half's source keys and values (the source row thus computes exactly what it
computes alone). Earlier steps and layers use plain attention, so the target's layout forms from its own
prompt, and the later layers copy the source's content into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .controller import AttentionController, LayerInfo, per_row
from .store import AttentionStore
from .tokens import check_prompts, positions_per_prompt


def _check_index(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative int, got {value!r}.")
    return value


class MutualSelfAttention(AttentionController):
    """Targets read the source's self-attention keys and values.

    Args:
        start_step: first sampling step (as the pipeline numbers them in `set_step`) that is edited.
        start_layer: first edited self-attention layer, counted from 0 in forward order.
        total_layers: None: ``start_layer`` counts this UNet's self-attention layers. An int: ``start_layer``
            is out of ``total_layers`` and is rescaled to the UNet's depth, e.g. MasaCtrl's defaults
            (start_layer=10, total_layers=16, for SD 1.x's 16 transformer blocks) on any UNet.
    """

    def __init__(self, start_step: int = 4, start_layer: int = 10, total_layers: int | None = None):
        super().__init__()
        self.start_step = _check_index(start_step, "start_step")
        self.start_layer = _check_index(start_layer, "start_layer")
        if total_layers is not None and (_check_index(total_layers, "total_layers") == 0 or start_layer > total_layers):
            raise ValueError(f"`total_layers` must be positive and at least `start_layer` ({start_layer}), "
                             f"got {total_layers}.")
        self.total_layers = total_layers
        self.first_edited: int | None = None
        self.self_attention_index: dict[str, int] = {}

    def bind(self, layers: list[LayerInfo]) -> None:
        super().bind(layers)
        self_layers = [layer.name for layer in layers if not layer.is_cross]
        self.self_attention_index = {name: i for i, name in enumerate(self_layers)}
        depth = len(self_layers)
        first = self.start_layer if self.total_layers is None else round(self.start_layer * depth / self.total_layers)
        if first >= depth:
            scaled = "" if self.total_layers is None else f" ({self.start_layer} of {self.total_layers} rescaled)"
            raise ValueError(
                f"`start_layer` is {first}{scaled}, but the UNet has {depth} self-attention layers (numbered 0 to "
                f"{depth - 1} in forward order); choose a smaller start_layer."
            )
        self.first_edited = first

    def edits(self, layer: LayerInfo) -> bool:
        return self.first_edited is not None and self.self_attention_index.get(layer.name, -1) >= self.first_edited

    def active(self) -> bool:
        return self.require_step() >= self.start_step

    def source_of_each_row(self) -> list[int]:
        """For each batch row, the source row of its guidance half."""
        return [half[0] for half in self.guidance_halves() for _ in half]

    def edit_keys_values(self, key, value, heads, layer):
        if not self.active():
            return key, value
        sources = self.source_of_each_row()
        return (per_row(key, heads)[sources].reshape(key.shape), per_row(value, heads)[sources].reshape(value.shape))


class MaskedMutualSelfAttention(MutualSelfAttention):
    """Mutual self-attention restricted by foreground masks: target foreground queries read only the
    source's foreground, target background only the source's background.

    The masks come from the cross-attention maps of ``foreground_words`` recorded earlier in the same UNet
    call (averaged over heads and layers at ``mask_resolution``, min-max normalised, thresholded). Layers
    that run before any such map, or steps where the source mask is empty or full, fall back to unmasked
    mutual self-attention.

    Args:
        prompts: source prompt, then target prompts, in batch order.
        tokenizer: the pipeline's tokenizer.
        foreground_words: one entry per prompt: a word or a list of words naming its foreground.
        threshold: mask threshold on the normalised map (MasaCtrl uses 0.1).
        mask_resolution: `LayerInfo.resolution` of the maps; None: the highest recorded so far in the call.
        start_step, start_layer, total_layers: as in `MutualSelfAttention`.
    """

    def __init__(self, prompts: Sequence[str], tokenizer, foreground_words: Sequence, threshold: float = 0.1,
                 mask_resolution: int | None = None, start_step: int = 4, start_layer: int = 10,
                 total_layers: int | None = None):
        super().__init__(start_step, start_layer, total_layers)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"`threshold` must be in [0, 1], got {threshold}.")
        self.prompts = check_prompts(prompts)
        self.positions = positions_per_prompt(tokenizer, self.prompts, foreground_words, "foreground_words")
        self.threshold, self.mask_resolution = threshold, mask_resolution
        resolutions = None if mask_resolution is None else [mask_resolution]
        self.store = AttentionStore(self, resolutions=resolutions)

    def configure(self, num_prompts: int, do_classifier_free_guidance: bool) -> AttentionController:
        if num_prompts != len(self.prompts):
            raise ValueError(f"`num_prompts` is {num_prompts}, but the controller was built for "
                             f"{len(self.prompts)} prompts.")
        return super().configure(num_prompts, do_classifier_free_guidance)

    def observe_unet_input(self, sample: torch.Tensor) -> None:
        super().observe_unet_input(sample)
        self.store.reset()  # masks come from the current UNet call only

    def foreground_masks(self, shape: tuple[int, int]) -> torch.Tensor | None:
        """[prompts, height·width] bool foreground at a layer's map ``shape``, or None before any map."""
        if not self.store.maps(self.mask_resolution):
            return None
        maps = self.store.aggregate(self.mask_resolution)  # [prompts, h, w, tokens]
        region = torch.stack([maps[p, ..., positions].mean(-1) for p, positions in enumerate(self.positions)])
        low = region.amin(dim=(1, 2), keepdim=True)
        region = (region - low) / (region.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-12)
        masks = F.interpolate((region > self.threshold).float()[:, None], size=shape)
        return masks[:, 0].flatten(1).bool()

    def attend(self, query, key, value, attn, layer, attention_mask=None):
        hidden_states = super().attend(query, key, value, attn, layer, attention_mask)
        if not (self.edits(layer) and self.active()):
            return hidden_states
        masks = self.foreground_masks(self.map_shape(layer, query.shape[1]))
        if masks is None or masks[0].all() or not masks[0].any():
            return hidden_states
        heads = attn.heads
        masks = masks.to(query.device)
        queries, keys, values = per_row(query, heads), per_row(key, heads), per_row(value, heads)
        rows = per_row(hidden_states, heads).clone()
        bias_dtype = torch.float32 if attn.upcast_attention else query.dtype
        foreground_bias, background_bias = self._bias(masks[0], bias_dtype), self._bias(~masks[0], bias_dtype)
        # Each target's foreground/background mask [targets·heads, queries, 1], in the row order of flatten(0, 1).
        target_foreground = masks[1:, None, :, None].expand(-1, heads, -1, -1).flatten(0, 1)
        for half in self.guidance_halves():
            source, targets = half[0], list(half[1:])
            q = queries[targets].flatten(0, 1)  # [targets·heads, queries, head_dim]
            k, v = keys[source].repeat(len(targets), 1, 1), values[source].repeat(len(targets), 1, 1)
            foreground = torch.bmm(attn.get_attention_scores(q, k, foreground_bias), v)
            background = torch.bmm(attn.get_attention_scores(q, k, background_bias), v)
            blended = torch.where(target_foreground, foreground, background)
            rows[targets] = blended.view(len(targets), heads, *blended.shape[1:])
        return rows.view_as(hidden_states)

    @staticmethod
    def _bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive attention mask [1, 1, keys]: 0 where allowed, -inf elsewhere."""
        bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return bias.masked_fill(~allowed, float("-inf"))[None, None]
