"""Attention control for UNet2DConditionModel: record maps (with or without gradients), Prompt-to-Prompt
and MasaCtrl edits, installed only on the layers they need and always restored.

    controller = AttentionRefine([source, target], tokenizer, cross_replace_steps=0.4, self_replace_steps=0.6)
    store = AttentionStore(controller)
    controller.configure(num_prompts=2, do_classifier_free_guidance=True)
    with attention_control(unet, controller):
        for index in range(num_steps):
            controller.set_step(index, num_steps)
            ...  # UNet calls
"""

from .controller import AttentionController, LayerInfo, PassthroughController, unet_layers
from .drawing import draw_token_maps
from .masactrl import MaskedMutualSelfAttention, MutualSelfAttention
from .processors import ControlledAttnProcessor, attention_control
from .prompt_to_prompt import (AttentionRefine, AttentionReplace, AttentionReweight, LocalBlend,
                               PromptToPromptController)
from .store import AttentionStore
from .tokens import refine_alignment, replace_mapper, word_token_indices

__all__ = [
    "AttentionController",
    "AttentionRefine",
    "AttentionReplace",
    "AttentionReweight",
    "AttentionStore",
    "ControlledAttnProcessor",
    "LayerInfo",
    "LocalBlend",
    "MaskedMutualSelfAttention",
    "MutualSelfAttention",
    "PassthroughController",
    "PromptToPromptController",
    "attention_control",
    "draw_token_maps",
    "refine_alignment",
    "replace_mapper",
    "unet_layers",
    "word_token_indices",
]
