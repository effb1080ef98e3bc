"""LPIPS (Zhang et al. 2018) with an injectable backbone, without torchvision.

torchmetrics' LPIPS builds its backbones through torchvision and downloads their weights, so it can run
neither here nor offline. The formula is small, so we implement it: per layer, unit-normalise the
features along channels, square the difference, weight each channel (LPIPS's 1×1 "lin" layers), average
over space, and sum the layers. PIE-Bench uses the SqueezeNet-1.1 variant
(``LearnedPerceptualImagePatchSimilarity(net_type='squeeze')`` on images mapped to [−1, 1]); it is
:func:`squeezenet_lpips_network`, loaded with :func:`load_squeezenet_lpips` from a safetensors file the
user provides (no pickles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# LPIPS's ScalingLayer: inputs in [−1, 1] are shifted and scaled to the backbone's ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchmetrics' _normalize_tensor: f / sqrt(eps + Σ_c f²).
_NORM_EPS = 1e-8


class LPIPSNetwork(nn.Module):
    """A backbone cut into ``slices`` (each feeds the next; every slice's output is one LPIPS layer) and
    one non-negative weight per channel of each layer. Maps images in [−1, 1] to the list of features."""

    def __init__(self, slices: Sequence[nn.Module], channel_weights: Sequence[torch.Tensor],
                 shift: Sequence[float] = LPIPS_SHIFT, scale: Sequence[float] = LPIPS_SCALE):
        super().__init__()
        if not slices:
            raise ValueError("slices must hold at least one backbone block")
        if len(slices) != len(channel_weights):
            raise ValueError(f"channel_weights needs one tensor per slice: {len(slices)} slices, "
                             f"{len(channel_weights)} weight tensors")
        self.slices = nn.ModuleList(slices)
        self.channel_weights = nn.ParameterList(
            [nn.Parameter(torch.as_tensor(w).flatten().float(), requires_grad=False) for w in channel_weights])
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.shift) / self.scale
        features = []
        for block in self.slices:
            x = block(x)
            features.append(x)
        return features


@torch.no_grad()
def lpips(pred: torch.Tensor, target: torch.Tensor, network: LPIPSNetwork) -> torch.Tensor:
    """Per-image LPIPS distance [B] between images in [0, 1] (mapped to [−1, 1] first, as PIE-Bench does).

    d = Σ_l mean_{h,w} Σ_c w_lc (f̂_lchw − ĝ_lchw)², with f̂ = f / sqrt(1e-8 + Σ_c f²) (torchmetrics).
    """
    device = network.channel_weights[0].device
    features = network(torch.cat([pred, target]).to(device) * 2 - 1)
    if len(features) != len(network.channel_weights):
        raise ValueError(f"network returned {len(features)} feature maps but has "
                         f"{len(network.channel_weights)} channel_weights tensors")
    total = torch.zeros(pred.shape[0], dtype=torch.float64, device=device)
    for level, (feature, weight) in enumerate(zip(features, network.channel_weights, strict=True)):
        if feature.shape[1] != weight.numel():
            raise ValueError(f"layer {level} of the network has {feature.shape[1]} channels but "
                             f"{weight.numel()} channel weights")
        unit = feature / torch.sqrt(_NORM_EPS + (feature**2).sum(1, keepdim=True))
        a, b = unit.chunk(2)
        total += ((a - b) ** 2 * weight.view(1, -1, 1, 1)).sum(1).mean((1, 2)).double()
    return total


class _Fire(nn.Module):
    """SqueezeNet's Fire module; attribute names match torchvision's, so its state dict loads as is."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


def squeezenet_features() -> nn.Sequential:
    """torchvision's ``squeezenet1_1().features`` layout (13 modules, same indices and parameter names)."""
    def pool():
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    return nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(), pool(), _Fire(64, 16, 64, 64), _Fire(128, 16, 64, 64), pool(),
        _Fire(128, 32, 128, 128), _Fire(256, 32, 128, 128), pool(), _Fire(256, 48, 192, 192),
        _Fire(384, 48, 192, 192), _Fire(384, 64, 256, 256), _Fire(512, 64, 256, 256))


# LPIPS's seven SqueezeNet layers: features[0:2], [2:5], [5:8], [8:10], [10], [11], [12].
SQUEEZENET_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13))
SQUEEZENET_CHANNELS = (64, 128, 256, 384, 384, 512, 512)


def squeezenet_lpips_network(state_dict: Mapping[str, torch.Tensor] | None = None, seed: int = 0) -> LPIPSNetwork:
    """LPIPS-SqueezeNet (PIE-Bench's LPIPS). ``state_dict`` keys: ``features.{i}.…`` as in torchvision's
    ``squeezenet1_1().features`` and ``lin{l}.model.1.weight`` ([1, C_l, 1, 1]) as in LPIPS's and
    torchmetrics' ``squeeze.pth``. Without it, weights are random (seeded): for tests and shape checks only.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = squeezenet_features()
        channel_weights = [torch.rand(c) for c in SQUEEZENET_CHANNELS]
    slices = []
    for start, stop in SQUEEZENET_SLICES:
        block = nn.Sequential()
        for i in range(start, stop):
            block.add_module(str(i), features[i])
        slices.append(block)
    network = LPIPSNetwork(slices, channel_weights)
    if state_dict is not None:
        _load_lpips_state(network, features, state_dict)
    return network.eval()


def _load_lpips_state(network: LPIPSNetwork, features: nn.Sequential, state_dict: Mapping[str, torch.Tensor]):
    expected_features = {f"features.{k}" for k in features.state_dict()}
    expected_lins = {f"lin{level}.model.1.weight" for level in range(len(network.channel_weights))}
    missing = sorted((expected_features | expected_lins) - set(state_dict))
    unexpected = sorted(set(state_dict) - expected_features - expected_lins)
    if missing or unexpected:
        raise ValueError(f"state_dict does not fit LPIPS-SqueezeNet: missing {missing[:8]}"
                         f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{' …' if len(unexpected) > 8 else ''}")
    features.load_state_dict({k.removeprefix("features."): v for k, v in state_dict.items() if k in expected_features})
    with torch.no_grad():
        for level, weight in enumerate(network.channel_weights):
            value = state_dict[f"lin{level}.model.1.weight"]
            if value.numel() != weight.numel():
                raise ValueError(f"state_dict lin{level}.model.1.weight has {value.numel()} values, "
                                 f"expected {weight.numel()}")
            weight.copy_(value.flatten())


def load_squeezenet_lpips(path: str) -> LPIPSNetwork:
    """LPIPS-SqueezeNet from a safetensors file laid out as :func:`squeezenet_lpips_network` describes.

    One way to write it, once, on a machine with torchvision and the LPIPS weights::

        backbone = torchvision.models.squeezenet1_1(weights="DEFAULT").features
        sd = {f"features.{k}": v for k, v in backbone.state_dict().items()}
        sd.update(torch.load("torchmetrics/functional/image/lpips_models/squeeze.pth", map_location="cpu"))
        safetensors.torch.save_file(sd, "lpips_squeezenet.safetensors")
    """
    from safetensors.torch import load_file

    return squeezenet_lpips_network(load_file(path))
