"""EditTaskClassifier: which of the five edit tasks turns a source prompt into a target prompt (DSI §4.3).

The DSI paper's classifier (supplement, Table S7): the source and target prompts' CLIP text embeddings,
77 tokens each, concatenated into 154 tokens of width 768, go through 6 transformer blocks of width 512
with 8 heads and residual connections, then a linear layer to the 5 tasks. The input width follows any
text encoder (``input_dim``), so it can sit on top of whichever CLIP the pipeline already has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .tasks import EDIT_TASKS


@dataclass
class EditTaskPrediction(BaseOutput):
    """Per prompt pair: the predicted task and the probabilities of all of them (columns in ``tasks`` order)."""

    labels: list[str]
    probabilities: torch.Tensor
    tasks: tuple[str, ...] = EDIT_TASKS

    def as_dicts(self) -> list[dict[str, float]]:
        return [dict(zip(self.tasks, row.tolist(), strict=True)) for row in self.probabilities]


class EditTaskClassifier(ModelMixin, ConfigMixin):
    """Transformer over [source tokens; target tokens] → logits over ``tasks``.

    A learned position embedding over all ``num_tokens`` positions tells the blocks which prompt a token
    came from and where in it; the blocks are pre-norm with residual connections; the head reads the mean
    of the final tokens. The feed-forward width (``4 × hidden_dim``), which Table S7 leaves open, is
    transformers' usual choice.
    """

    @register_to_config
    def __init__(self, input_dim: int = 768, num_tokens: int = 154, hidden_dim: int = 512, num_heads: int = 8,
                 num_layers: int = 6, feedforward_dim: int | None = None, dropout: float = 0.1,
                 tasks: tuple[str, ...] = EDIT_TASKS):
        super().__init__()
        if num_tokens % 2:
            raise ValueError(f"`num_tokens` counts source and target tokens together and must be even, got {num_tokens}.")
        self.input_projection = nn.Linear(input_dim, hidden_dim)
        self.position_embedding = nn.Parameter(torch.zeros(1, num_tokens, hidden_dim))
        nn.init.normal_(self.position_embedding, std=0.02)
        block = nn.TransformerEncoderLayer(hidden_dim, num_heads, feedforward_dim or 4 * hidden_dim, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, len(tasks))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.config.tasks)

    @property
    def tokens_per_prompt(self) -> int:
        return self.config.num_tokens // 2

    def forward(self, source_embeds: torch.Tensor, target_embeds: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_tasks] from text-encoder hidden states, each [batch, num_tokens / 2, input_dim]."""
        for name, embeds in (("source_embeds", source_embeds), ("target_embeds", target_embeds)):
            expected = (self.tokens_per_prompt, self.config.input_dim)
            if embeds.ndim != 3 or tuple(embeds.shape[1:]) != expected:
                raise ValueError(f"`{name}` must have shape [batch, {expected[0]}, {expected[1]}] "
                                 f"(text-encoder hidden states), got {tuple(embeds.shape)}.")
        if source_embeds.shape[0] != target_embeds.shape[0]:
            raise ValueError(f"`source_embeds` and `target_embeds` hold {source_embeds.shape[0]} and "
                             f"{target_embeds.shape[0]} prompts; they must pair up.")
        tokens = torch.cat([source_embeds, target_embeds], dim=1).to(self.dtype)
        hidden = self.blocks(self.input_projection(tokens) + self.position_embedding)
        return self.head(self.final_norm(hidden).mean(dim=1))

    @torch.no_grad()
    def embed_prompts(self, prompts: list[str], text_encoder, tokenizer) -> torch.Tensor:
        """The text encoder's last hidden states, padded to ``num_tokens / 2`` as Stable Diffusion pads."""
        width = text_encoder.config.hidden_size
        if width != self.config.input_dim:
            raise ValueError(f"The text encoder's hidden size is {width} but this classifier was built for "
                             f"input_dim={self.config.input_dim}; train one on this text encoder "
                             "(`diffusers_uip2p.training.train_task_classifier`).")
        ids = tokenizer(prompts, padding="max_length", max_length=self.tokens_per_prompt, truncation=True,
                        return_tensors="pt").input_ids
        return text_encoder(ids.to(text_encoder.device))[0]

    @torch.no_grad()
    def predict(self, source_prompts: str | list[str], target_prompts: str | list[str], text_encoder,
                tokenizer) -> EditTaskPrediction:
        """Classify each (source, target) pair with ``text_encoder``/``tokenizer`` (the ones it was trained on)."""
        sources = _prompt_list(source_prompts, "source_prompts")
        targets = _prompt_list(target_prompts, "target_prompts")
        if len(sources) != len(targets):
            raise ValueError(f"Got {len(sources)} source prompts and {len(targets)} target prompts; "
                             "give one target per source.")
        logits = self(self.embed_prompts(sources, text_encoder, tokenizer),
                      self.embed_prompts(targets, text_encoder, tokenizer))
        probabilities = logits.float().softmax(dim=-1).cpu()
        return EditTaskPrediction([self.tasks[i] for i in probabilities.argmax(dim=-1).tolist()], probabilities,
                                  self.tasks)


def _prompt_list(prompts, argument: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"`{argument}` must be a non-empty str or list of str, got {prompts!r}.")
    return list(prompts)
