"""The primary and auxiliary schedules, config interop, and input validation."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

from diffusers_uip2p import DualScheduleInversionScheduler
from diffusers_uip2p.testing import IP2P_SCHEDULER_CONFIG, SD15_SCHEDULER_CONFIG, SD21_SCHEDULER_CONFIG


def scheduler(**overrides):
    return DualScheduleInversionScheduler.from_config(SD15_SCHEDULER_CONFIG, **overrides)


def test_paper_schedules_on_sd_config():
    s = scheduler()
    s.set_timesteps(50)
    assert s.primary_timesteps.dtype == s.auxiliary_timesteps.dtype == s.timesteps.dtype == torch.long
    assert s.primary_timesteps.tolist() == list(range(981, 0, -20))
    assert s.auxiliary_timesteps.tolist() == list(range(970, 9, -20))
    # model evaluations during sampling: τ=970, t=961, τ=950, ..., t=21, τ=10
    assert s.timesteps.tolist()[:4] == [970, 961, 950, 941]
    assert s.timesteps.tolist()[-3:] == [30, 21, 10]
    assert len(s.timesteps) == 2 * 50 - 3


@pytest.mark.parametrize("position, first_aux", [(0.25, 5), (0.5, 10), (0.75, 15)])
def test_auxiliary_position(position, first_aux):
    s = scheduler(auxiliary_position=position)
    s.set_timesteps(50)
    assert s.auxiliary_timesteps.tolist() == list(range(960 + first_aux, 0, -20))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [2, 3, 7, 20, 50, 333, 999])
def test_schedules_are_well_formed(spacing, steps):
    s = scheduler(timestep_spacing=spacing)
    s.set_timesteps(steps)
    primary, aux = s.primary_timesteps, s.auxiliary_timesteps
    assert len(primary) == steps and len(aux) == steps - 1
    assert (primary[:-1] > primary[1:]).all() and 0 <= primary.min() and primary.max() <= 999
    assert ((primary[1:] <= aux) & (aux <= primary[:-1])).all(), "each τ lies inside its primary interval"
    assert len(s.timesteps) == 2 * steps - 3


def test_trailing_and_linspace_endpoints():
    s = scheduler(timestep_spacing="trailing")
    s.set_timesteps(50)
    assert s.primary_timesteps[0] == 999 and s.primary_timesteps[-1] == 19
    s = scheduler(timestep_spacing="linspace")
    s.set_timesteps(50)
    assert s.primary_timesteps[0] == 999 and s.primary_timesteps[-1] == 0


@pytest.mark.parametrize(
    "config, expected_prediction",
    [
        (SD15_SCHEDULER_CONFIG, "epsilon"),
        (SD21_SCHEDULER_CONFIG, "v_prediction"),
        (IP2P_SCHEDULER_CONFIG, "epsilon"),
        (PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config, "epsilon"),
        (DDIMScheduler.from_config(SD21_SCHEDULER_CONFIG).config, "v_prediction"),
        (EulerDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG).config, "epsilon"),
        (DPMSolverMultistepScheduler.from_config(SD21_SCHEDULER_CONFIG).config, "v_prediction"),
    ],
)
def test_from_sd_scheduler_configs(config, expected_prediction):
    s = DualScheduleInversionScheduler.from_config(config)
    assert s.config.prediction_type == expected_prediction
    s.set_timesteps(50)
    assert s.primary_timesteps[0] == 981 and s.auxiliary_timesteps[-1] == 10
    reference = DDIMScheduler.from_config(config)
    torch.testing.assert_close(s.alphas_cumprod.float(), reference.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_zero_terminal_snr_stays_invertible():
    s = scheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    s.set_timesteps(10)
    assert s.alphas_cumprod[-1] > 0


@pytest.mark.parametrize("steps", [0, 1, 1001, -5])
def test_bad_step_counts(steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler().set_timesteps(steps)


def test_non_integer_step_count():
    with pytest.raises(TypeError, match="num_inference_steps"):
        scheduler().set_timesteps(2.5)


def test_leading_spacing_past_the_last_timestep():
    with pytest.raises(ValueError, match="num_inference_steps=1000"):
        scheduler().set_timesteps(1000)  # leading + steps_offset=1 would put a timestep at 1000
    s = scheduler(timestep_spacing="trailing")
    s.set_timesteps(1000)
    assert s.primary_timesteps[0] == 999 and s.primary_timesteps[-1] == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"prediction_type": "flow"}, "prediction_type"),
        ({"timestep_spacing": "karras"}, "timestep_spacing"),
        ({"auxiliary_position": 1.0}, "auxiliary_position"),
        ({"auxiliary_position": 0.0}, "auxiliary_position"),
        ({"beta_schedule": "cosine"}, "beta_schedule"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DualScheduleInversionScheduler(**kwargs)


def test_step_and_invert_need_set_timesteps():
    s = scheduler()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(torch.zeros(1, 4, 8, 8), 10, torch.zeros(1, 4, 8, 8))
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.invert(torch.zeros(1, 4, 8, 8), lambda x, t: x)


def test_save_and_load_round_trip(tmp_path):
    s = scheduler(prediction_type="v_prediction", auxiliary_position=0.25, timestep_spacing="trailing")
    s.save_pretrained(tmp_path)
    loaded = DualScheduleInversionScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(s.config)
    assert (tmp_path / "scheduler_config.json").read_text().count('"_class_name": "DualScheduleInversionScheduler"') == 1
    s.set_timesteps(20)
    loaded.set_timesteps(20)
    assert torch.equal(loaded.timesteps, s.timesteps)
    assert torch.equal(loaded.alphas_cumprod, s.alphas_cumprod)
