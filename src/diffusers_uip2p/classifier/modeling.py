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
from torch.nn import functional as F

from ..checks import check_number
from .tasks import EDIT_TASKS, check_task

# How `EditTaskClassifier` compares the prompts before its blocks (see its docstring).
COMPARE_MODES = ("changes", True, False)


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
      prompts, plus one of which prompt it is in.
    - Padding after a prompt's end token is masked out of attention and pooling (and cut off before the
      blocks run, which changes nothing but the time); otherwise a 10-word prompt is 67 near-identical
      padding states that drown its words.
    - ``compare_tokens`` says how the two prompts are compared before the blocks (the paper leaves it to
      the blocks' attention, which is ``compare_tokens=False``):

      - ``"changes"`` (the default, our addition): each token is scored by how far it is from every token
        of the other prompt, ``u = (1 - max cos)²`` (`change_scores`): about 0 for a word the other prompt
        also has, wherever it sits, and large for a word the edit changed, added or removed. A token's
        hidden state enters the blocks scaled by ``u``, and ``u`` times a learned vector of its prompt
        (``change_embedding``) marks on which side the change is (both sides: replaced; one: added). The
        blocks then see what changed, and on which side, rather than the template around it; the task is a
        property of the change. On the generated triples (`triples`), whose test split shares no template
        and no content word with training, this lifted test accuracy from 0.52 (``True``) to 0.94-0.97
        (``benchmarks/RESULTS.md``); with ``True`` or ``False`` the blocks learn the training templates
        (train accuracy 1.00) and transfer little.
      - ``True`` (the first version; the shipped Shapes classifier uses it): each target token also
        receives a projection of its difference from the source token at the same position. On 2000 Shapes
        edits it lifted test accuracy from 0.47 to 0.77 over ``False``.
      - ``False``: the paper's plain concatenation.
    - Blocks are pre-norm with residual connections; the head reads the mean of the final tokens. The
      feed-forward width, which Table S7 leaves open, is the usual ``4 × hidden_dim``.
    """

    @register_to_config
    def __init__(self, input_dim: int = 768, num_tokens: int = 154, hidden_dim: int = 512, num_heads: int = 8,
                 num_layers: int = 6, feedforward_dim: int | None = None, dropout: float = 0.1,
                 compare_tokens: bool | str = "changes", tasks: tuple[str, ...] = EDIT_TASKS):
        super().__init__()
        for name, value in (("input_dim", input_dim), ("num_tokens", num_tokens), ("hidden_dim", hidden_dim),
                            ("num_heads", num_heads), ("num_layers", num_layers)):
            check_number(value, name, low=1, integer=True)
        check_number(feedforward_dim, "feedforward_dim", low=1, integer=True, optional=True)
        check_number(dropout, "dropout", low=0.0, high=1.0)
        if hidden_dim % num_heads:
            raise ValueError(f"`hidden_dim` ({hidden_dim}) must be a multiple of `num_heads` ({num_heads}).")
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"`tasks` must be distinct edit tasks, at least one, got {tasks!r}.")
        for task in tasks:  # the router maps each predicted task to a method: only known tasks have one
            check_task(task, "tasks")
        if num_tokens % 2:
            raise ValueError(f"`num_tokens` counts source and target tokens together and must be even, got {num_tokens}.")
        if not (isinstance(compare_tokens, bool) or compare_tokens == "changes"):
            raise ValueError(f"`compare_tokens` must be one of {', '.join(map(repr, COMPARE_MODES))}, "
                             f"got {compare_tokens!r}.")
        self.input_projection = nn.Linear(input_dim, hidden_dim)
        self.difference_projection = nn.Linear(input_dim, hidden_dim) if compare_tokens is True else None
        # Scaled by each token's change score; N(0, 1) like nn.Embedding, so the side of a change is not
        # drowned by the projected hidden states at the start of training.
        self.change_embedding = (nn.Parameter(torch.randn(2, 1, hidden_dim)) if compare_tokens == "changes"
                                 else None)  # source, target
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
        batch, length = source_embeds.shape[:2]
        masks = [torch.ones(batch, length, device=self.device) if m is None else m.to(self.device)
                 for m in (source_mask, target_mask)]
        # Masked tokens take no part in attention or pooling, so cutting off the positions where every
        # prompt is padding changes nothing but the time.
        real = torch.nonzero((masks[0].bool() | masks[1].bool()).any(dim=0))
        length = int(real.max()) + 1 if len(real) else 1
        masks = [m[:, :length] for m in masks]
        source_embeds, target_embeds = (e[:, :length].to(self.device, self.dtype)
                                        for e in (source_embeds, target_embeds))
        positions = self.position_embedding[:, :length]
        if self.config.compare_tokens == "changes":
            changes = (change_scores(source_embeds, target_embeds, masks[1]),
                       change_scores(target_embeds, source_embeds, masks[0]))
            source, target = (self.input_projection(e * u.unsqueeze(-1)) + positions + self.prompt_embedding[i]
                              + u.unsqueeze(-1) * self.change_embedding[i]
                              for i, (e, u) in enumerate(zip((source_embeds, target_embeds), changes, strict=True)))
        else:
            source, target = (self.input_projection(e) + positions + self.prompt_embedding[i]
                              for i, e in enumerate((source_embeds, target_embeds)))
            if self.difference_projection is not None:
                target = target + self.difference_projection(target_embeds - source_embeds)
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


def change_scores(embeds: torch.Tensor, other: torch.Tensor, other_mask: torch.Tensor) -> torch.Tensor:
    """Per token of ``embeds`` [batch, length, dim]: how far it is from the nearest real token of ``other``
    (``other_mask`` 1 for real tokens), ``(1 - max cos)²`` clamped to [0, 1]. Near 0 for a word both prompts
    hold, wherever it sits; large for one the edit changed, added or removed. Squared because CLIP attends
    causally: a changed word also moves the states of the words after it a little (1 - cos of about 0.02,
    0.1 to 0.2 for the end token, which sums up the prompt), and squaring keeps those near 0 (0.0004) while a
    changed word (about 0.45) keeps 0.2. In float32, for half-precision input."""
    similarity = F.normalize(embeds.float(), dim=-1) @ F.normalize(other.float(), dim=-1).transpose(1, 2)
    similarity = similarity.masked_fill(~other_mask.bool().unsqueeze(1), -1.0)
    return (1 - similarity.amax(dim=-1)).clamp(0, 1).square().to(embeds.dtype)


def _prompt_list(prompts, argument: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"`{argument}` must be a non-empty str or list of str, got {prompts!r}.")
    return list(prompts)
