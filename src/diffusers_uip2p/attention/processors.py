"""The attention processor that hands q, k, v to a controller, and the context manager that installs it."""

from __future__ import annotations

import contextlib

import torch

from .controller import AttentionController, LayerInfo, unet_layers


class ControlledAttnProcessor:
    """Computes q, k, v as diffusers' `AttnProcessor` does and lets the controller compute the attention.

    Diffusers' default processor uses a fused kernel that never materialises the probabilities; this one
    makes them explicit, so that only layers a controller wants should get it.
    """

    def __init__(self, controller: AttentionController, layer: LayerInfo):
        self.controller, self.layer = controller, layer

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shaped = hidden_states.ndim == 4
        if image_shaped:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], context.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)

        query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))
        hidden_states = self.controller.attend(query, key, value, attn, self.layer, attention_mask)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear projection, dropout

        if image_shaped:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def attention_control(unet, controller: AttentionController):
    """Install ``controller`` on the layers it wants for the duration of the block; restore the previous
    processors afterwards, also when the block raises.

    Layers the controller does not want keep their processor object (diffusers' fused kernel by default).
    """
    if not isinstance(controller, AttentionController):
        hint = " (for an AttentionStore, pass `store.controller`)" if hasattr(controller, "controller") else ""
        raise TypeError(f"`controller` must be an AttentionController, got {type(controller).__name__}{hint}.")
    layers = unet_layers(unet)
    controller.bind(layers)
    controlled = {layer.name: ControlledAttnProcessor(controller, layer) for layer in layers if controller.wants(layer)}
    previous = dict(unet.attn_processors)  # set_attn_processor empties the dict it is given: pass copies

    def observe(module, args, kwargs):
        controller.observe_unet_input(args[0] if args else kwargs["sample"])

    hook = unet.register_forward_pre_hook(observe, with_kwargs=True)
    try:
        unet.set_attn_processor({**previous, **controlled})
        yield controller
    finally:
        hook.remove()
        unet.set_attn_processor(dict(previous))
