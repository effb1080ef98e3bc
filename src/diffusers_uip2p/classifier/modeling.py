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

    - Positions: each token gets a learned embedding of its position within its prompt, shared by the two
      prompts, plus one of which prompt it is in. The i-th source and target tokens then look alike to
      attention, so a word-by-word comparison is easy to learn.
    - Padding after a prompt's end token is masked out of attention and pooling; otherwise a 10-word prompt
      is 67 near-identical padding states that drown its words.
    - ``compare_tokens`` (our addition, on by default): each target token also receives a projection of its
      difference from the source token at the same position, which marks where the prompts part. On 2000
      Shapes edits (6 epochs, lr 3e-4) it lifted test accuracy from 0.47 to 0.77. ``compare_tokens=False``
      is the paper's plain concatenation.
    - Blocks are pre-norm with residual connections; the head reads the mean of the final tokens. The
      feed-forward width, which Table S7 leaves open, is the usual ``4 × hidden_dim``.
    """

    @register_to_config
    def __init__(self, input_dim: int = 768, num_tokens: int = 154, hidden_dim: int = 512, num_heads: int = 8,
                 num_layers: int = 6, feedforward_dim: int | None = None, dropout: float = 0.1,
                 compare_tokens: bool = True, tasks: tuple[str, ...] = EDIT_TASKS):
        super().__init__()
        if num_tokens % 2:
            raise ValueError(f"`num_tokens` counts source and target tokens together and must be even, got {num_tokens}.")
        self.input_projection = nn.Linear(input_dim, hidden_dim)
        self.difference_projection = nn.Linear(input_dim, hidden_dim) if compare_tokens else None
        self.position_embedding = nn.Parameter(torch.zeros(1, num_tokens // 2, hidden_dim))
        self.prompt_embedding = nn.Parameter(torch.zeros(2, 1, hidden_dim))  # source, target
        nn.init.normal_(self.position_embedding, std=0.02)
        nn.init.normal_(self.prompt_embedding, std=0.02)
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

    def forward(self, source_embeds: torch.Tensor, target_embeds: torch.Tensor,
                source_mask: torch.Tensor | None = None, target_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, num_tasks] from text-encoder hidden states, each [batch, num_tokens / 2, input_dim];
        the masks ([batch, num_tokens / 2], 1 for real tokens) are the tokenizer's attention masks."""
        for name, embeds in (("source_embeds", source_embeds), ("target_embeds", target_embeds)):
            expected = (self.tokens_per_prompt, self.config.input_dim)
            if embeds.ndim != 3 or tuple(embeds.shape[1:]) != expected:
                raise ValueError(f"`{name}` must have shape [batch, {expected[0]}, {expected[1]}] "
                                 f"(text-encoder hidden states), got {tuple(embeds.shape)}.")
        if source_embeds.shape[0] != target_embeds.shape[0]:
            raise ValueError(f"`source_embeds` and `target_embeds` hold {source_embeds.shape[0]} and "
                             f"{target_embeds.shape[0]} prompts; they must pair up.")
        source_embeds, target_embeds = source_embeds.to(self.dtype), target_embeds.to(self.dtype)
        source, target = (self.input_projection(e) + self.position_embedding + self.prompt_embedding[i]
                          for i, e in enumerate((source_embeds, target_embeds)))
        if self.difference_projection is not None:
            target = target + self.difference_projection(target_embeds - source_embeds)
        batch, length = source_embeds.shape[:2]
        masks = [torch.ones(batch, length, device=self.device) if m is None else m.to(self.device)
                 for m in (source_mask, target_mask)]
        keep = torch.cat(masks, dim=1).bool()
        hidden = self.final_norm(self.blocks(torch.cat([source, target], dim=1), src_key_padding_mask=~keep))
        weights = keep.to(hidden.dtype).unsqueeze(-1)
        return self.head((hidden * weights).sum(dim=1) / weights.sum(dim=1))

    @torch.no_grad()
    def embed_prompts(self, prompts: list[str], text_encoder, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        """The text encoder's last hidden states, padded to ``num_tokens / 2`` as Stable Diffusion pads, and
        the attention mask of the real tokens."""
        width = text_encoder.config.hidden_size
        if width != self.config.input_dim:
            raise ValueError(f"The text encoder's hidden size is {width} but this classifier was built for "
                             f"input_dim={self.config.input_dim}; train one on this text encoder "
                             "(`diffusers_uip2p.training.train_task_classifier`).")
        tokens = tokenizer(prompts, padding="max_length", max_length=self.tokens_per_prompt, truncation=True,
                           return_tensors="pt")
        return text_encoder(tokens.input_ids.to(text_encoder.device))[0], tokens.attention_mask

    @torch.no_grad()
    def predict(self, source_prompts: str | list[str], target_prompts: str | list[str], text_encoder,
                tokenizer) -> EditTaskPrediction:
        """Classify each (source, target) pair with ``text_encoder``/``tokenizer`` (the ones it was trained on)."""
        sources = _prompt_list(source_prompts, "source_prompts")
        targets = _prompt_list(target_prompts, "target_prompts")
        if len(sources) != len(targets):
            raise ValueError(f"Got {len(sources)} source prompts and {len(targets)} target prompts; "
                             "give one target per source.")
        (source_embeds, source_mask), (target_embeds, target_mask) = (
            self.embed_prompts(prompts, text_encoder, tokenizer) for prompts in (sources, targets))
        logits = self(source_embeds, target_embeds, source_mask, target_mask)
        probabilities = logits.float().softmax(dim=-1).cpu()
        return EditTaskPrediction([self.tasks[i] for i in probabilities.argmax(dim=-1).tolist()], probabilities,
                                  self.tasks)


def _prompt_list(prompts, argument: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"`{argument}` must be a non-empty str or list of str, got {prompts!r}.")
    return list(prompts)
