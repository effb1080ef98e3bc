"""What an attention controller sees and owns: the UNet's attention layers, the batch layout and the step.

A controller decides which attention layers it needs (`wants`) and computes their attention (`attend`).
Only those layers get an explicit-softmax processor; the rest keep diffusers' fused kernel.

The pipeline, not the controller, keeps time: Dual-Schedule Inversion interleaves two schedules, so only
the pipeline knows which sampling step a UNet call belongs to. It calls ``set_step(index, num_steps)``
before each UNet call, and ``configure(num_prompts, do_classifier_free_guidance)`` once, so that the
controller knows the batch layout: [uncond rows of every prompt..., cond rows of every prompt...] under
classifier-free guidance, [rows of every prompt...] without it. Prompt 0 is the source; the others are
targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

PLACES = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
_PLACE_ORDER = ("down", "mid", "up")


@dataclass(frozen=True)
class LayerInfo:
    """One attention layer of a UNet.

    Args:
        name: the processor's key in ``unet.attn_processors``.
        is_cross: cross-attention (keys from the text) rather than self-attention.
        place: "down", "mid" or "up".
        block_index: index of its transformer block, counted in the UNet's forward order (a block's self-
            and cross-attention share it).
        level: number of downsamplings between the latents and this layer's feature map.
        resolution: side of the feature map at the UNet's configured ``sample_size`` (e.g. 16 for SD 1.x's
            second-lowest level). It names the level; at other image sizes the maps are smaller or larger.
    """

    name: str
    is_cross: bool
    place: str
    block_index: int
    level: int
    resolution: int


def _forward_order(name: str) -> tuple:
    """Sort key for processor names in the order the UNet runs them (``attn_processors`` lists the up
    blocks before the mid block)."""
    place = PLACES[name.split(".")[0]]
    return (_PLACE_ORDER.index(place), *(int(n) for n in re.findall(r"\d+", name)))


def unet_layers(unet) -> list[LayerInfo]:
    """The attention layers of a ``UNet2DConditionModel``, in forward order."""
    names = list(unet.attn_processors)
    outside = [n for n in names if n.split(".")[0] not in PLACES]
    if outside:
        raise ValueError(
            f"`unet` has attention layers outside down_blocks, mid_block and up_blocks ({outside[:3]}); "
            "attention control supports UNet2DConditionModel-style UNets."
        )
    names.sort(key=_forward_order)
    sample_size = unet.config.sample_size
    side = sample_size if isinstance(sample_size, int) else sample_size[0]
    layers, blocks = [], {}
    for name in names:
        place = PLACES[name.split(".")[0]]
        # Every down block but the last ends with a downsampler, every up block but the last with an upsampler.
        if place == "down":
            level = int(name.split(".")[1])
        elif place == "mid":
            level = len(unet.down_blocks) - 1
        else:
            level = len(unet.up_blocks) - 1 - int(name.split(".")[1])
        module = unet.get_submodule(name.removesuffix(".processor"))
        block_path = name.rsplit(".", 2)[0]  # ...transformer_blocks.0 for ...transformer_blocks.0.attn1.processor
        resolution = side
        for _ in range(level):
            resolution = -(-resolution // 2)
        layers.append(LayerInfo(name=name, is_cross=bool(module.is_cross_attention), place=place,
                                block_index=blocks.setdefault(block_path, len(blocks)), level=level,
                                resolution=resolution))
    return layers


class AttentionController:
    """Base controller: computes attention with explicit probabilities, edits nothing, feeds attached stores.

    Subclasses edit through `edits` (which layers they change), `edit_keys_values` and `edit_probs`.
    """

    def __init__(self):
        self.step: int | None = None
        self.num_steps: int | None = None
        self.num_prompts: int | None = None
        self.do_classifier_free_guidance = False
        self.latent_size: tuple[int, int] | None = None
        self.layers: list[LayerInfo] = []
        self.stores: list = []  # AttentionStore objects that attached themselves

    # ---------------------------------------------------------------- set by the pipeline

    def configure(self, num_prompts: int, do_classifier_free_guidance: bool) -> AttentionController:
        """Declare the batch layout: ``num_prompts`` rows per guidance half, prompt 0 being the source."""
        if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or num_prompts < 1:
            raise ValueError(f"`num_prompts` must be a positive int, got {num_prompts!r}.")
        if not isinstance(do_classifier_free_guidance, bool):
            raise TypeError(
                f"`do_classifier_free_guidance` must be a bool, got {type(do_classifier_free_guidance).__name__}."
            )
        self.num_prompts, self.do_classifier_free_guidance = num_prompts, do_classifier_free_guidance
        return self

    def set_step(self, index: int, num_steps: int) -> None:
        """Declare which sampling step the next UNet calls belong to."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"`num_steps` must be a positive int, got {num_steps!r}.")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_steps:
            raise ValueError(f"`index` must be an int in [0, {num_steps}), got {index!r}.")
        self.step, self.num_steps = index, num_steps

    def bind(self, layers: list[LayerInfo]) -> None:
        """Called by `attention_control` with the UNet's layers before it asks `wants`."""
        self.layers = list(layers)
        for store in self.stores:
            store.bind(self.layers)

    def observe_unet_input(self, sample: torch.Tensor) -> None:
        """Called before each UNet forward: remembers the latent size and checks the batch layout."""
        self.latent_size = (int(sample.shape[-2]), int(sample.shape[-1]))
        if self.num_prompts is not None and sample.shape[0] != self.batch_size:
            raise ValueError(
                f"The attention controller was configured for {self.num_prompts} prompt(s) "
                f"{'with' if self.do_classifier_free_guidance else 'without'} classifier-free guidance "
                f"(UNet batch {self.batch_size}), but the UNet got a batch of {sample.shape[0]}; call "
                "`controller.configure(num_prompts, do_classifier_free_guidance)` to match."
            )

    # ---------------------------------------------------------------- layers

    def wants(self, layer: LayerInfo) -> bool:
        """Whether this layer needs the controlled (explicit-probability) processor."""
        return self.edits(layer) or any(store.captures(layer) for store in self.stores)

    def edits(self, layer: LayerInfo) -> bool:
        """Whether this controller may change this layer's attention (at some step)."""
        return False

    def passthrough(self) -> AttentionController:
        """A controller on the same layers that edits and records nothing.

        Exact inversion needs sampling's UNet evaluations of the source row to be bitwise identical to
        inversion's; invert under ``passthrough()`` and sample under the editing controller, which leaves
        source rows alone.
        """
        return PassthroughController(self)

    # ---------------------------------------------------------------- batch layout

    @property
    def batch_size(self) -> int:
        self.require_layout()
        return self.num_prompts * (2 if self.do_classifier_free_guidance else 1)

    def require_layout(self) -> None:
        if self.num_prompts is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the batch layout: call "
                "`controller.configure(num_prompts, do_classifier_free_guidance)` before the UNet runs."
            )

    def require_step(self) -> int:
        if self.step is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the sampling step: call `controller.set_step(index, num_steps)` "
                "before each UNet call."
            )
        return self.step

    def guidance_halves(self) -> list[range]:
        """Rows of each guidance half of the UNet batch: [uncond, cond] under guidance, else one."""
        self.require_layout()
        halves = 2 if self.do_classifier_free_guidance else 1
        return [range(h * self.num_prompts, (h + 1) * self.num_prompts) for h in range(halves)]

    def conditional_rows(self) -> range:
        """Rows conditioned on the prompts (the ones edits apply to)."""
        return self.guidance_halves()[-1]

    def map_shape(self, layer: LayerInfo, num_queries: int) -> tuple[int, int]:
        """(height, width) of this layer's feature map in the current UNet call."""
        if self.latent_size is None:
            raise RuntimeError("The latent size is unknown: run the UNet inside `attention_control`.")
        height, width = self.latent_size
        for _ in range(layer.level):
            height, width = -(-height // 2), -(-width // 2)
        if height * width != num_queries:
            raise RuntimeError(
                f"Layer {layer.name} has {num_queries} queries, not the {height}×{width} expected from latents "
                f"of size {self.latent_size}."
            )
        return height, width

    # ---------------------------------------------------------------- attention

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn, layer: LayerInfo,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output [batch·heads, queries, head_dim] from per-head q, k, v.

        Probabilities are explicit (``attn.get_attention_scores``: rows sum to 1), so they can be edited
        and recorded.
        """
        editing = self.edits(layer)
        if editing:
            key, value = self.edit_keys_values(key, value, attn.heads, layer)
        probs = attn.get_attention_scores(query, key, attention_mask)
        if editing:
            probs = self.edit_probs(probs, attn.heads, layer)
        for store in self.stores:
            store.record(probs, attn.heads, layer)
        return torch.bmm(probs, value)

    def edit_keys_values(self, key: torch.Tensor, value: torch.Tensor, heads: int, layer: LayerInfo):
        """Hook for subclasses: keys and values [batch·heads, keys, head_dim] before the softmax."""
        return key, value

    def edit_probs(self, probs: torch.Tensor, heads: int, layer: LayerInfo) -> torch.Tensor:
        """Hook for subclasses: probabilities [batch·heads, queries, keys] after the softmax."""
        return probs


class PassthroughController(AttentionController):
    """Wants the same layers as ``source`` and computes plain attention there (see `passthrough`)."""

    def __init__(self, source: AttentionController):
        super().__init__()
        self.source = source

    def bind(self, layers: list[LayerInfo]) -> None:
        super().bind(layers)
        self.source.bind(layers)

    def wants(self, layer: LayerInfo) -> bool:
        return self.source.wants(layer)


def per_row(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch·heads, ...] → [batch, heads, ...] (diffusers' head_to_batch_dim is batch-major)."""
    return tensor.view(tensor.shape[0] // heads, heads, *tensor.shape[1:])
