"""Progress bars say which loop they are (inversion, sampling, candidate k/n forward or reverse, the DDIM
baseline) and every bar completes."""

import io
import re

import torch
from tqdm.auto import tqdm

from diffusers_uip2p import DualScheduleInversionScheduler, UIP2PPipeline
from diffusers_uip2p.testing import tiny_instruct_pix2pix_components


def _labels(stream: io.StringIO) -> set[str]:
    return set(re.findall(r"([^\r\n|]+?): +\d+%", stream.getvalue()))


def test_the_inversion_bar_completes():
    """The last inversion step moves the primary latent only; it used to `break` out of the bar at N-1 of N."""
    scheduler = DualScheduleInversionScheduler()
    scheduler.set_timesteps(6)
    bars = []

    def progress_bar(iterable):
        bars.append(tqdm(iterable, file=io.StringIO()))
        return bars[-1]

    scheduler.invert(torch.zeros(1, 4, 8, 8), lambda x, t: torch.zeros_like(x), progress_bar=progress_bar)
    assert bars[0].n == bars[0].total == 5


def test_inversion_and_sampling_bars_are_labelled(tiny_edit_pipe, rgb_image_module):
    stream = io.StringIO()
    tiny_edit_pipe.set_progress_bar_config(desc="auto-edit", file=stream, mininterval=0)
    try:
        tiny_edit_pipe("a blue circle", image=rgb_image_module, source_prompt="a red circle", num_inference_steps=3,
                       output_type="latent")
    finally:
        tiny_edit_pipe.set_progress_bar_config(disable=True)
    assert {"auto-edit · inversion", "auto-edit · sampling"} <= _labels(stream)


def test_candidate_bars_say_which_candidate_and_direction(rgb_image_module):
    pipe = UIP2PPipeline(**tiny_instruct_pix2pix_components(), safety_checker=None, feature_extractor=None,
                         requires_safety_checker=False)
    stream = io.StringIO()
    pipe.set_progress_bar_config(desc="edit", file=stream, mininterval=0)
    pipe("make it blue", image=rgb_image_module, reverse_instruction="make it red", num_candidates=2, seed=0,
         num_inference_steps=2, output_type="latent")
    assert _labels(stream) == {f"edit · candidate {k}/2 · {way}" for k in (1, 2) for way in ("forward", "reverse")}
    assert pipe._progress_bar_config["desc"] == "edit"  # the caller's config comes back
