"""Every test runs offline: no Hub, no network. Any non-loopback connection raises."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from diffusers_uip2p.testing import forbid_network  # noqa: E402

diffusers_logging.disable_progress_bar()
# Tiny models gain nothing from intra-op threads, and OpenMP spin-waiting makes a shared 2-core machine
# an order of magnitude slower when another process competes (measured: ~2 min alone vs >30 min).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _offline():
    with forbid_network():
        yield


@pytest.fixture
def rgb_image():
    """A 16×16 RGB test image (the tiny VAE downsamples by 2: 8×8 latents)."""
    return PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (16, 16, 3), np.uint8))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def rgb_image_module():
    """The same image as ``rgb_image``, shared by a module's tests (e.g. one inversion for many edits)."""
    return PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (16, 16, 3), np.uint8))


@pytest.fixture(scope="module")
def tiny_edit_pipe():
    """An `AutoEditPipeline` on the tiny offline components, shared by a module's editing tests."""
    from diffusers_uip2p import AutoEditPipeline
    from diffusers_uip2p.testing import tiny_text_to_image_components

    pipe = AutoEditPipeline(**tiny_text_to_image_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe
