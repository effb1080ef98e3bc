"""AttentionStore: records attention maps, averaged over heads, per layer and sampling step."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..checks import check_number
from .controller import AttentionController, LayerInfo, per_row
from .tokens import word_spans


def _int_list(values, name: str, low: int) -> list[int] | None:
    """None, or a non-empty list of ints ≥ ``low``."""
    if values is None:
        return None
    if isinstance(values, (int, str)) or not (values := list(values)):
        raise ValueError(f"`{name}` must be a non-empty list of ints (or None for the default), got {values!r}.")
    for value in values:
        check_number(value, name, low=low, integer=True)
    return values


class AttentionStore:
    """Records the attention maps a controller computes (after its edits).

    Attaching a store makes the controller want the recorded layers, so install the controller, not the
    store: ``with attention_control(unet, store.controller)``. Calls within one step (Dual-Schedule
    sampling evaluates the UNet more than once per step) are averaged.

    Args:
        controller: the controller to attach to; a plain `AttentionController` records without editing.
        resolutions: layer resolutions (`LayerInfo.resolution`) to record. None: the two lowest resolutions
            that have cross-attention (8 and 16 for SD 1.x at 64×64 latents).
        steps: step indices to record (any container of ints); None records every step.
        cross: record cross-attention maps [batch, queries, text tokens].
        self_attention: record self-attention maps [batch, queries, queries].
        with_grad: keep the maps in the autograd graph (a loss on them backpropagates into the UNet).
            Otherwise maps are detached and kept in float32 on the CPU.
    """

    def __init__(self, controller: AttentionController, resolutions: Iterable[int] | None = None,
                 steps: Iterable[int] | None = None, cross: bool = True, self_attention: bool = False,
                 with_grad: bool = False):
        if not isinstance(controller, AttentionController):
            raise TypeError(f"`controller` must be an AttentionController, got {type(controller).__name__}.")
        if not (cross or self_attention):
            raise ValueError("`cross` and `self_attention` are both False: the store would record nothing.")
        resolutions, steps = (_int_list(resolutions, "resolutions", 1), _int_list(steps, "steps", 0))
        self.controller = controller
        self.requested_resolutions = None if resolutions is None else {int(r) for r in resolutions}
        self.resolutions = self.requested_resolutions
        self.steps = None if steps is None else set(steps)
        self.cross, self.self_attention, self.with_grad = cross, self_attention, with_grad
        self.layers: dict[str, LayerInfo] = {}
        self._sums: dict[tuple[str, int | None], list] = {}  # (layer, step) → [sum, count, (height, width)]
        controller.stores.append(self)

    def bind(self, layers: list[LayerInfo]) -> None:
        self.layers = {layer.name: layer for layer in layers}
        if self.requested_resolutions is None:
            self.resolutions = set(sorted({layer.resolution for layer in layers if layer.is_cross})[:2])

    def captures(self, layer: LayerInfo) -> bool:
        kind_wanted = self.cross if layer.is_cross else self.self_attention
        return kind_wanted and self.resolutions is not None and layer.resolution in self.resolutions

    def reset(self) -> None:
        """Forget every recorded map."""
        self._sums.clear()

    def record(self, probs: torch.Tensor, heads: int, layer: LayerInfo) -> None:
        """Called by the controller with a layer's probabilities [batch·heads, queries, keys]."""
        if not self.captures(layer):
            return
        step = self.controller.step
        if self.steps is not None:
            if step is None:
                raise RuntimeError("The store records selected steps: call `controller.set_step` before the UNet.")
            if step not in self.steps:
                return
        shape = self.controller.map_shape(layer, probs.shape[1])
        maps = per_row(probs, heads).mean(dim=1)
        if not self.with_grad:
            maps = maps.detach().float().cpu()
        entry = self._sums.get((layer.name, step))
        if entry is None:
            self._sums[(layer.name, step)] = [maps, 1, shape]
        else:
            entry[0], entry[1] = entry[0] + maps, entry[1] + 1

    def maps(self, resolution: int | None = None, cross: bool = True,
             steps: Iterable[int] | None = None) -> dict[tuple[str, int | None], torch.Tensor]:
        """Recorded maps {(layer name, step): [batch, height, width, keys]}, averaged over heads and over
        the calls of each step, filtered by layer resolution, kind and steps."""
        steps = None if steps is None else set(steps)
        selected = {}
        for (name, step), (total, count, (height, width)) in self._sums.items():
            layer = self.layers[name]
            if layer.is_cross != cross or (resolution is not None and layer.resolution != resolution):
                continue
            if steps is None or step in steps:
                selected[(name, step)] = (total / count).view(total.shape[0], height, width, total.shape[-1])
        return selected

    def default_resolution(self) -> int:
        """The highest resolution the store records cross-attention at (16 for SD 1.x by default)."""
        recorded = {self.layers[name].resolution for name, _ in self._sums if self.layers[name].is_cross}
        if not recorded:
            raise ValueError("The store holds no cross-attention maps yet; run the UNet inside `attention_control`.")
        return max(recorded)

    def aggregate(self, resolution: int | None = None, steps: Iterable[int] | None = None,
                  rows: Sequence[int] | None = None, cross: bool = True) -> torch.Tensor:
        """Maps at one resolution averaged over layers, steps and heads: [rows, height, width, keys].

        Args:
            resolution: a `LayerInfo.resolution`; None: `default_resolution()`.
            steps: steps to average over; None: every recorded step.
            rows: rows of the UNet batch; None: the conditional rows (one per prompt) once the controller
                is configured, every row otherwise.
        """
        resolution = self.default_resolution() if resolution is None else resolution
        selected = list(self.maps(resolution, cross, steps).values())
        if not selected:
            kind = "cross" if cross else "self"
            recorded = sorted({self.layers[name].resolution for name, _ in self._sums})
            raise ValueError(
                f"No {kind}-attention maps recorded at resolution {resolution} for steps "
                f"{'all' if steps is None else sorted(steps)}; recorded resolutions: {recorded}."
            )
        if len({m.shape for m in selected}) > 1:
            raise ValueError(f"The maps at resolution {resolution} have different shapes (the image size changed); "
                             "call `store.reset()` between images.")
        mean = torch.stack(selected).mean(dim=0)
        if rows is None:
            rows = self.controller.conditional_rows() if self.controller.num_prompts is not None else range(len(mean))
        return mean[list(rows)]

    def token_maps(self, tokenizer, prompt: str, prompt_index: int = 0, resolution: int | None = None,
                   steps: Iterable[int] | None = None) -> list[tuple[str, torch.Tensor]]:
        """(token text, [height, width] map) for each token of ``prompt``, start, end and padding left out.

        ``prompt_index`` is the prompt's place in the batch (its conditional row under guidance).
        """
        self.controller.require_layout()
        if not 0 <= prompt_index < self.controller.num_prompts:
            raise ValueError(f"`prompt_index` must be in [0, {self.controller.num_prompts}), got {prompt_index}.")
        maps = self.aggregate(resolution, steps, rows=[self.controller.conditional_rows()[prompt_index]])[0]
        return [(tokenizer.decode([token_id]).strip(), maps[..., position])
                for span in word_spans(tokenizer, prompt)
                for token_id, position in zip(span.token_ids, span.positions, strict=True)]
