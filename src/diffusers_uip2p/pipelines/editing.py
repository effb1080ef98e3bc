"""The editing methods `AutoEditPipeline` runs on an exact inversion, as attention controllers.

Each method becomes an `EditPlan`: the controller to install while sampling (None for direct editing and
SDEdit, which change no attention), an optional LocalBlend applied to the latents between steps, an
optional store for the attention maps to return, the SDEdit strength, and the parameters as used (for the
output record). The source prompt is always prompt 0, the targets follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..attention import (
    AttentionController,
    AttentionRefine,
    AttentionReplace,
    AttentionReweight,
    AttentionStore,
    LocalBlend,
    MaskedMutualSelfAttention,
    MutualSelfAttention,
)
from ..attention.tokens import word_spans

EDIT_METHODS = ("direct", "p2p", "masactrl", "sdedit")
# The target-branch rule (DualScheduleInversionScheduler's module docstring) the pipelines edit with unless
# told otherwise: the most successes on the Shapes validation split (benchmarks/shapes_editing.py: ddim 44 of
# 200, anchored 42, a margin within noise; RESULTS.md).
DEFAULT_TARGET_RULE = "ddim"
P2P_MODES = ("replace", "refine")
# P2P replaces self-attention this many downsamplings or more below the latents: the notebooks' 16×16 and
# 8×8 on SD 1.x (PromptToPromptController's docstring).
P2P_SELF_REPLACE_MIN_LEVEL = 2


@dataclass
class EditPlan:
    method: str
    controller: AttentionController | None = None
    local_blend: LocalBlend | None = None
    store: AttentionStore | None = None
    strength: float = 1.0
    parameters: dict = field(default_factory=dict)


def choose_p2p_mode(tokenizer, source: str, targets: list[str]) -> str:
    """Word swaps (same number of words in every prompt) use Replace; anything else uses Refine."""
    counts = {len(word_spans(tokenizer, prompt)) for prompt in [source, *targets]}
    return "replace" if len(counts) == 1 else "refine"


def plan_edit(method: str, prompts: list[str], tokenizer, *, p2p_mode=None, cross_replace_steps=0.8,
              self_replace_steps=0.4, self_replace_min_level=P2P_SELF_REPLACE_MIN_LEVEL, refine_padding="follow_end", equalizer=None, local_blend_words=None, local_blend_threshold=0.3,
              local_blend_start=0.2, masactrl_start_step=4, masactrl_start_layer=10, masactrl_total_layers=16,
              masactrl_foreground_words=None, strength=0.5, return_attention_maps=False) -> EditPlan:
    """Build the controllers for ``method`` (defaults are the P2P notebooks', MasaCtrl's and SDEdit's)."""
    if method not in EDIT_METHODS:
        raise ValueError(f"`edit_method` must be one of {', '.join(EDIT_METHODS)}, got {method!r}.")
    plan = EditPlan(method)
    if method == "p2p":
        mode = p2p_mode or choose_p2p_mode(tokenizer, prompts[0], prompts[1:])
        if mode not in P2P_MODES:
            raise ValueError(f"`p2p_mode` must be one of {', '.join(P2P_MODES)} or None, got {p2p_mode!r}.")
        windows = {"cross_replace_steps": cross_replace_steps, "self_replace_steps": self_replace_steps,
                   "self_replace_min_level": self_replace_min_level}
        if mode == "replace":
            base = AttentionReplace(prompts, tokenizer, **windows)
        else:
            base = AttentionRefine(prompts, tokenizer, padding=refine_padding, **windows)
        plan.controller = base
        if equalizer:
            plan.controller = AttentionReweight(prompts, tokenizer, scales=equalizer, previous=base, **windows)
        plan.parameters = {"p2p_mode": mode, **windows, "equalizer": equalizer}
        if mode == "refine":
            plan.parameters["refine_padding"] = refine_padding
        if local_blend_words is not None:
            plan.store = AttentionStore(plan.controller)
            plan.local_blend = LocalBlend(plan.store, prompts, tokenizer, local_blend_words,
                                          threshold=local_blend_threshold, start=local_blend_start)
            plan.parameters.update(local_blend_words=local_blend_words, local_blend_threshold=local_blend_threshold,
                                   local_blend_start=local_blend_start)
    elif method == "masactrl":
        layers = {"start_step": masactrl_start_step, "start_layer": masactrl_start_layer,
                  "total_layers": masactrl_total_layers}
        if masactrl_foreground_words is None:
            plan.controller = MutualSelfAttention(**layers)
        else:
            plan.controller = MaskedMutualSelfAttention(prompts, tokenizer, masactrl_foreground_words, **layers)
        plan.parameters = {f"masactrl_{k}": v for k, v in layers.items()}
        plan.parameters["masactrl_foreground_words"] = masactrl_foreground_words
    elif method == "sdedit":
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"`strength` must be in (0, 1], got {strength!r}.")
        plan.strength = strength
        plan.parameters = {"strength": strength}
    if return_attention_maps:
        if plan.controller is None:
            plan.controller = AttentionController()
        plan.store = plan.store or AttentionStore(plan.controller)
    return plan
