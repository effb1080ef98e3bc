"""Target-branch rules on the dual schedule: the source stays exact under every rule and method, anchored
with target = source is exact, the coupled rule's sync gap grows and the default's does not; the peers'
inversions as baselines; the intervals the benchmark reports."""

import numpy as np
import pytest
import torch

from diffusers_uip2p import DualScheduleInversionScheduler
from diffusers_uip2p.evaluation.edit_baselines import baseline_edit
from diffusers_uip2p.evaluation.intervals import compare_paired, mcnemar_p, paired_bootstrap, wilson_interval
from diffusers_uip2p.pipelines.editing import DEFAULT_TARGET_RULE, EDIT_METHODS
from diffusers_uip2p.schedulers import BRANCH_RULES

SOURCE = "a red circle on a white background"
TARGET = "a blue square on a white background"


@pytest.fixture(scope="module")
def pipe(tiny_edit_pipe):
    return tiny_edit_pipe


@pytest.fixture(scope="module")
def inversion(pipe, rgb_image_module):
    return pipe.invert(rgb_image_module, SOURCE, num_inference_steps=8, guidance_scale=4.0)


@pytest.mark.parametrize("method", EDIT_METHODS)
def test_source_branch_is_exact_under_every_rule(pipe, inversion, method):
    out = pipe([TARGET] * len(BRANCH_RULES), inversion=inversion, edit_method=method, target_rule=list(BRANCH_RULES),
               output_type="latent")
    assert torch.equal(out.source_latents, inversion.latents), method
    assert all(not torch.equal(latents, inversion.latents[0]) for latents in out.latents), "every rule edits"
    assert out.edit_parameters["target_rule"] == list(BRANCH_RULES)


@pytest.mark.parametrize("rule", BRANCH_RULES)
def test_one_rule_per_call_keeps_the_source_exact(pipe, inversion, rule):
    out = pipe(TARGET, inversion=inversion, edit_method="p2p", target_rule=rule, output_type="latent")
    assert torch.equal(out.source_latents, inversion.latents) and out.edit_parameters["target_rule"] == rule


def test_anchored_with_target_equal_to_source_is_bit_exact(pipe, inversion):
    out = pipe(SOURCE, inversion=inversion, edit_method="p2p", target_rule="anchored", output_type="latent")
    assert torch.equal(out.latents, inversion.latents)
    s = pipe.scheduler  # and in the functional API, anchored to a coupled row of the same image
    model_fn = pipe.guided_model_fn([SOURCE] * 2, 4.0)
    s.set_timesteps(8)
    state = s.invert(inversion.latents.expand(2, -1, -1, -1).contiguous(), model_fn)
    both = s.sample(state, model_fn, branch_rules=["coupled", ("anchored", 0)])
    assert torch.equal(both[0], inversion.latents[0]) and torch.equal(both[1], inversion.latents[0])


def test_the_default_rule_is_recorded(pipe, inversion):
    out = pipe(TARGET, inversion=inversion, output_type="latent")
    assert out.edit_parameters == {"target_rule": DEFAULT_TARGET_RULE}
    assert out.source_latents is not None and torch.equal(out.source_latents, inversion.latents)
    assert out.sync_gap.shape == (len(pipe.scheduler.timesteps), 1)


def test_the_coupled_target_drifts_and_the_default_does_not(pipe):
    """The leapfrog's parasitic mode: a changed prompt feeds it at every step under the coupled rule."""
    import PIL.Image

    image = PIL.Image.fromarray(np.random.RandomState(1).randint(0, 256, (16, 16, 3), np.uint8))
    out = pipe([TARGET, TARGET], image=image, source_prompt=SOURCE, num_inference_steps=25, guidance_scale=5.0,
               target_rule=["coupled", DEFAULT_TARGET_RULE], output_type="latent")
    gaps = out.sync_gap[0::2]  # auxiliary evaluations, one per step
    coupled, default = gaps[:, 0], gaps[:, 1]
    assert coupled[-1] > 5 * coupled[0], "the coupled target's chains drift apart"
    assert default.max() < 3 * default[0]
    assert default[-1] < 0.2 * coupled[-1]


def test_bad_rules_name_the_argument(pipe, inversion):
    with pytest.raises(ValueError, match="`target_rule` must be one of coupled, anchored, midpoint, ddim"):
        pipe(TARGET, inversion=inversion, target_rule="leapfrog")
    with pytest.raises(ValueError, match="`target_rule` lists 2 rules for 1 prompts"):
        pipe(TARGET, inversion=inversion, target_rule=["ddim", "ddim"])
    with pytest.raises(ValueError, match="`target_rule` applies to edits of an inverted image"):
        pipe(TARGET, num_inference_steps=3, target_rule="anchored")
    pair = pipe.invert([np.zeros((16, 16, 3), np.uint8), np.ones((16, 16, 3), np.uint8)], [SOURCE, "x"],
                       num_inference_steps=3)
    with pytest.raises(ValueError, match="target_rule='anchored' needs, for prompt 1"):
        pipe([SOURCE, TARGET], inversion=pair, target_rule="anchored")
    s = DualScheduleInversionScheduler()
    s.set_timesteps(3)
    state = pair.state
    with pytest.raises(ValueError, match=r"branch_rules\[0\] is 'anchored' but no row is 'coupled'"):
        s.begin(state, ["anchored", "ddim"])
    with pytest.raises(ValueError, match=r"branch_rules\[1\] anchors to row 5"):
        s.begin(state, ["coupled", ("anchored", 5)])
    with pytest.raises(ValueError, match=r"branch_rules\[1\] anchors to row 1"):
        s.begin(state, ["coupled", ("anchored", 1)])
    with pytest.raises(ValueError, match=r"branch_rules\[1\] must be one of"):
        s.begin(state, ["coupled", "euler"])
    with pytest.raises(ValueError, match="one rule per batch row \\(2\\)"):
        s.begin(state, ["coupled"])


def test_direct_inversion_keeps_the_source_on_its_trajectory(pipe, inversion):
    source, target, calls = baseline_edit(pipe, inversion.latents, [SOURCE, TARGET], 14, 4.0, "p2p",
                                          inversion="direct_inversion")
    assert torch.equal(source, inversion.latents) and calls == 28
    _, ddim_target, _ = baseline_edit(pipe, inversion.latents, [SOURCE, TARGET], 14, 4.0, "p2p")
    assert not torch.equal(target, ddim_target), "the source's attention comes from the trajectory"


def test_null_text_inversion_reconstructs_better_than_ddim(pipe, inversion):
    kwargs = dict(num_inference_steps=10, guidance_scale=4.0, edit_method="direct")
    null, _, calls = baseline_edit(pipe, inversion.latents, [SOURCE, TARGET], inversion="null_text", **kwargs)
    ddim, _, ddim_calls = baseline_edit(pipe, inversion.latents, [SOURCE, TARGET], **kwargs)
    error = lambda x: (x - inversion.latents).norm().item()  # noqa: E731
    assert error(null) < error(ddim) and calls > ddim_calls
    with pytest.raises(ValueError, match="`inversion` must be one of ddim, direct_inversion, null_text"):
        baseline_edit(pipe, inversion.latents, [SOURCE, TARGET], 4, inversion="edict")
    with pytest.raises(ValueError, match="needs `guidance_scale` > 1"):
        baseline_edit(pipe, inversion.latents, [SOURCE, TARGET], 4, guidance_scale=1.0, inversion="null_text")


def test_intervals():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert mcnemar_p([True] * 10 + [False] * 10, [False] * 10 + [False] * 10) == pytest.approx(2 / 2**10)
    assert mcnemar_p([True, False], [True, False]) == 1.0
    paired = compare_paired([True] * 30 + [False] * 70, [True] * 20 + [False] * 80)
    assert paired["mean"] == pytest.approx(0.1) and paired["only_a"] == 10 and paired["only_b"] == 0
    assert paired["low"] > 0.0 and paired["mcnemar_p"] < 0.01
    spread = paired_bootstrap([1.0, 2.0, float("inf"), None], [0.0, 1.0, 3.0, 1.0])
    assert spread["n"] == 2 and spread["mean"] == 1.0
    with pytest.raises(ValueError, match="`successes` must lie in 0..n=3"):
        wilson_interval(4, 3)
