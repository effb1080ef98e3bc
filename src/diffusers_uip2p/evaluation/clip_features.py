"""Unit-norm CLIP embeddings from any `transformers.CLIPModel`.

transformers 5 returns a model output whose ``pooler_output`` holds the projected embedding; older
versions return the tensor itself. These helpers accept both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _embedding(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def clip_text_embeddings(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return F.normalize(_embedding(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)), dim=-1)


def clip_image_embeddings(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return F.normalize(_embedding(model.get_image_features(pixel_values=pixel_values)), dim=-1)
