"""Dual-Schedule Inversion (Huang et al., WACV 2025, arXiv 2412.11152), as a diffusers scheduler.

Equation numbers refer to ``papers/dual-schedule-inversion.md``. The DDIM move from timestep
``s`` to timestep ``t`` with a noise estimate ε is (Eq. 5b / 6b, one formula for both directions)::

    z_t = a(s→t)·z_s + b(s→t)·ε,   a = √(ᾱ_t/ᾱ_s),   b = √(1−ᾱ_t) − √(ᾱ_t)·√(1−ᾱ_s)/√ᾱ_s

DDIM inversion is inexact because it evaluates ε at z_s instead of z_t (Eq. 3). Dual-Schedule Inversion
keeps two latents: a *primary* one on the schedule t_0 < t_1 < … and an *auxiliary* one on the schedule
τ_0 < τ_1 < …, with t_k ≤ τ_k ≤ t_{k+1}. Each latent moves with ε evaluated at the *other* latent:

    Eq. 11 (inversion)  z̄ᵖ(t_{k+1}) = a(t_k→t_{k+1})·z̄ᵖ(t_k)     + b·ε(z̄ᵃ(τ_k), τ_k)
    Eq. 12 (inversion)  z̄ᵃ(τ_{k+1}) = a(τ_k→τ_{k+1})·z̄ᵃ(τ_k)     + b·ε(z̄ᵖ(t_{k+1}), t_{k+1})
    Eq. 13 (sampling)   z̃ᵖ(t_k)     = a(t_{k+1}→t_k)·z̃ᵖ(t_{k+1}) + b·ε(z̃ᵃ(τ_k), τ_k)
    Eq. 14 (sampling)   z̃ᵃ(τ_{k-1}) = a(τ_k→τ_{k-1})·z̃ᵃ(τ_k)     + b·ε(z̃ᵖ(t_k), t_k)

Eq. 13 is the algebraic inverse of Eq. 11, and Eq. 14 of Eq. 12, *given the same ε*; the ε comes from the
other latent, which sampling has already restored. So sampling retraces inversion step by step
(Proposition 1 of the supplement).

**Why a changed prompt needs another rule.** In x̄ = z/√ᾱ and σ = √(1−ᾱ)/√ᾱ a DDIM move is
x̄_to = x̄_from + (σ_to − σ_from)·ε, so Eq. 13/14 is the leapfrog (staggered two-step midpoint)
integrator of dx̄/dσ = ε on the merged grid t_{N−1} > τ_{N−2} > t_{N−2} > … . Leapfrog is exactly
reversible, which makes reconstruction bitwise, but it carries a parasitic mode: the two chains drift
apart. Inversion cancels that mode for the source prompt only; a target prompt feeds it about
Δσ·(ε_target − ε_source) at every step, and the edit falls apart (the *sync gap*, below, grows about
150× over 24 steps, mean of 100 Shapes test edits). Sampling therefore takes a *branch rule* per batch
row. Writing ``coupled`` for the row's Eq. 13/14 update and ``chain`` for one plain DDIM move of the
latent just evaluated to the next timestep of ``timesteps`` (the finer, interleaved grid)::

    coupled      z_next = Eq. 13 / Eq. 14                        (the paper, Fig. 3c; exact for the source)
    ddim         z_next = chain                                   (one DDIM chain from z̄ᵃ(τ_max))
    midpoint     z̄ᵖ by Eq. 13, z̄ᵃ = chain from z̄ᵖ               (explicit midpoint: z̄ᵃ re-derived each step)
    anchored(j)  z_next = coupled_j + (chain − chain_j)           (row j's exact path + a DDIM-propagated offset)

``anchored`` keeps the target's difference from its source row j on a single DDIM chain, which has no
parasitic mode, while the source part follows the exact path; with target = source the offset is exactly
zero and the row returns row j bit for bit. It costs no extra model call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddim import betas_for_alpha_bar, rescale_zero_terminal_snr
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
# The dual state is carried in float64 so that inversion and sampling hand the model bitwise-identical
# inputs: the affine updates are exact inverses up to float64 round-off, which vanishes when the latent is
# cast to the model's dtype.
CARRY_DTYPE = torch.float64
BRANCH_RULES = ("coupled", "anchored", "midpoint", "ddim")


def resolve_branch_rules(rules, batch_size: int) -> list[tuple[str, int | None]]:
    """Per-row ``(rule, anchor row)`` from ``rules``: one entry per row, each a rule name or ("anchored", j).

    A bare "anchored" anchors to the first coupled row. None means every row coupled (the paper)."""
    if rules is None:
        return [("coupled", None)] * batch_size
    if isinstance(rules, (str, tuple)) or not hasattr(rules, "__len__") or len(rules) != batch_size:
        raise ValueError(f"branch_rules must be a list with one rule per batch row ({batch_size}), got {rules!r}.")
    names = [rule[0] if isinstance(rule, tuple) and len(rule) == 2 else rule for rule in rules]
    for i, name in enumerate(names):
        if name not in BRANCH_RULES:
            raise ValueError(f"branch_rules[{i}] must be one of {', '.join(BRANCH_RULES)} or ('anchored', row), "
                             f"got {rules[i]!r}.")
    coupled = [i for i, name in enumerate(names) if name == "coupled"]
    resolved = []
    for i, (name, rule) in enumerate(zip(names, rules)):
        anchor = None
        if name == "anchored":
            if not coupled:
                raise ValueError(f"branch_rules[{i}] is 'anchored' but no row is 'coupled' to anchor it to; make the "
                                 "source row 'coupled'.")
            anchor = rule[1] if isinstance(rule, tuple) else coupled[0]
            if isinstance(anchor, bool) or not isinstance(anchor, int) or anchor not in coupled:
                raise ValueError(f"branch_rules[{i}] anchors to row {anchor!r}, which must be a 'coupled' row of the "
                                 f"batch (coupled rows: {coupled}).")
        elif isinstance(rule, tuple):
            raise ValueError(f"branch_rules[{i}]: only 'anchored' takes a row, got {rule!r}.")
        resolved.append((name, anchor))
    return resolved


@dataclass
class DualScheduleState(BaseOutput):
    """The two latents at the noisy end of the schedule: what `invert` returns and `sample` consumes.

    Args:
        primary: z̄ᵖ at ``primary_timesteps[0]`` (e.g. 981), float64.
        auxiliary: z̄ᵃ at ``auxiliary_timesteps[0]`` (e.g. 970), float64. A sampling loop starts here: it
            is the first latent the model sees.
        timesteps: the scheduler's ``timesteps`` when the state was made; sampling needs the same schedule.
        model_dtype: dtype in which the model received latents (and in which results are returned).
    """

    primary: torch.Tensor
    auxiliary: torch.Tensor
    timesteps: torch.Tensor
    model_dtype: torch.dtype

    @property
    def batch_size(self) -> int:
        return self.primary.shape[0]

    def model_input(self) -> torch.Tensor:
        """The latent a sampling loop feeds the model first (the auxiliary one, in the model's dtype)."""
        return self.auxiliary.to(self.model_dtype)


@dataclass
class DualScheduleSchedulerOutput(BaseOutput):
    """Output of `DualScheduleInversionScheduler.step`.

    Args:
        prev_sample: the next latent to evaluate (alternately primary and auxiliary), or the clean
            latent after the last step.
        pred_original_sample: x̂₀ estimated from the latent the model just evaluated.
        sync_gap: per row, the RMS of the evaluated latent minus the other latent moved to the evaluated
            timestep by one DDIM step with the same ε: how far the two chains have drifted apart (zero for
            one DDIM chain up to Δσ·Δε; it grows on a target row sampled with the coupled rule).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None
    sync_gap: torch.Tensor | None = None


class DualScheduleInversionScheduler(SchedulerMixin, ConfigMixin):
    """Exact inversion and sampling with a primary and an auxiliary timestep schedule.

    Defaults are Stable Diffusion 1.x's noise schedule; ``from_config`` accepts the configs that SD 1.x/2.x
    ship (DDIM, PNDM, Euler, DPMSolver). ``set_timesteps(50)`` on SD's config gives the paper's primary
    schedule 981, 961, …, 1 and auxiliary schedule 970, 950, …, 10.

    Two ways to use it:

    * functional: ``state = scheduler.invert(latents, model_fn)`` and ``scheduler.sample(state, model_fn)``;
    * drop-in: ``StableDiffusionPipeline(..., scheduler=scheduler)`` walks ``timesteps`` and calls
      ``step``. ``scheduler.begin(state)`` seeds such a loop from an inverted state, and ``scheduler.state``
      exposes both live latents between steps (for LocalBlend-style edits).

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, set_alpha_to_one,
        steps_offset, prediction_type, timestep_spacing, rescale_betas_zero_snr: as in `DDIMScheduler`.
        auxiliary_position: where the auxiliary timestep sits inside each primary interval, as a fraction
            of the interval (the paper's ablation, Table 6, uses 1/4, 1/2 and 3/4; 1/2 is the paper's
            default).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: np.ndarray | list[float] | None = None,
        set_alpha_to_one: bool = False,
        steps_offset: int = 1,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        auxiliary_position: float = 0.5,
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}.")
        if not 0.0 < auxiliary_position < 1.0:
            raise ValueError(f"auxiliary_position must lie strictly between 0 and 1, got {auxiliary_position!r}.")
        if trained_betas is None and not 0.0 < beta_start < beta_end < 1.0:
            raise ValueError(f"beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1, got {beta_start} "
                             f"and {beta_end}.")

        if trained_betas is not None:
            betas = torch.tensor(trained_betas, dtype=torch.float64)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        elif beta_schedule == "squaredcos_cap_v2":
            betas = betas_for_alpha_bar(num_train_timesteps).double()
        else:
            raise ValueError(
                f"beta_schedule must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2', got {beta_schedule!r}."
            )
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if rescale_betas_zero_snr:
            # ᾱ_T = 0 would make a(t→T) = 0 and the last inversion step non-invertible; diffusers' Euler
            # scheduler uses the same tiny floor.
            self.alphas_cumprod[-1] = 2.0**-24
        # ᾱ of the clean latent, as DDIM's final step uses it.
        self.clean_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one else self.alphas_cumprod[0]

        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.primary_timesteps = None
        self.auxiliary_timesteps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())
        self._state = None
        self._pending_state = None
        self._handed_out = None
        self._step_index = None
        self._from_noise = False
        self._branch_rules = None

    # ------------------------------------------------------------------ schedules

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None,
                      strength: float = 1.0):
        """Build the primary and auxiliary schedules and the model-evaluation order ``timesteps``.

        The primary schedule follows ``timestep_spacing`` exactly as `DDIMScheduler` does. The auxiliary
        schedule is the same grid *before* ``steps_offset``, shifted by ``auxiliary_position`` of each
        interval: for SD at 50 steps that is 10, 30, …, 970 against 1, 21, …, 981, the schedules the paper
        lists and uses in Eq. 11–14 (τ = t − 11 there; its prose formula τ = t − s + s/2 is one step off).
        ``timesteps`` interleaves them in the order sampling evaluates the model: τ, t, τ, …, t_1, τ_0
        (2N − 3 evaluations for N steps).

        ``strength`` < 1 keeps only the first ``max(2, round(strength · N))`` primary steps (and the
        auxiliary steps between them), as diffusers' img2img pipelines do: inversion then stops, and
        sampling starts, at an intermediate noise level (SDEdit on an exact inversion).
        """
        T = self.config.num_train_timesteps
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
            raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}.")
        if not 2 <= num_inference_steps <= T:
            raise ValueError(
                f"num_inference_steps must be between 2 and num_train_timesteps={T}, got {num_inference_steps}."
            )
        n, spacing = int(num_inference_steps), self.config.timestep_spacing
        offset = self.config.steps_offset if spacing == "leading" else 0
        if spacing == "leading":
            primary = np.arange(n) * (T // n) + offset
        elif spacing == "trailing":
            primary = np.round(np.arange(T, 0, -T / n)).astype(np.int64)[::-1] - 1
        else:  # linspace
            primary = np.linspace(0, T - 1, n).round().astype(np.int64)
        if primary[-1] >= T or len(np.unique(primary)) != n:
            raise ValueError(
                f"num_inference_steps={n} with timestep_spacing={spacing!r} and steps_offset={offset} gives "
                f"timesteps outside 0..{T - 1} or repeated ones; use fewer steps or timestep_spacing='trailing'."
            )
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength!r}.")
        primary = primary[: max(2, round(strength * n))]
        lower, upper = primary[:-1], primary[1:]
        shift = np.floor(self.config.auxiliary_position * (upper - lower) + 0.5).astype(np.int64)
        auxiliary = np.clip(lower - offset + shift, lower, upper)

        self.num_inference_steps = n
        self.primary_timesteps = torch.from_numpy(primary[::-1].copy()).to(device)
        self.auxiliary_timesteps = torch.from_numpy(auxiliary[::-1].copy()).to(device)
        order = np.empty(2 * len(primary) - 3, dtype=np.int64)
        order[0::2], order[1::2] = auxiliary[::-1], primary[1:-1][::-1]
        self.timesteps = torch.from_numpy(order).to(device)
        # Host-side copies for the per-step arithmetic: no device sync inside the sampling loop.
        self._t, self._tau, self._order = primary.tolist(), auxiliary.tolist(), order.tolist()
        self._state = self._step_index = None

    def _require_timesteps(self):
        if self.primary_timesteps is None:
            raise RuntimeError("Call `set_timesteps(num_inference_steps)` before inverting or sampling.")

    def _alpha(self, timestep) -> torch.Tensor:
        """ᾱ at a timestep; ``None`` stands for the clean latent."""
        return self.clean_alpha_cumprod if timestep is None else self.alphas_cumprod[int(timestep)]

    # ------------------------------------------------------------------ the math

    def _ddim_move(self, z: torch.Tensor, eps: torch.Tensor, t_from, t_to) -> torch.Tensor:
        """Eq. 5b/6b: z_to = a·z_from + b·ε, in either direction."""
        a_from, a_to = self._alpha(t_from), self._alpha(t_to)
        a = (a_to / a_from).sqrt()
        b = (1 - a_to).sqrt() - a_to.sqrt() * (1 - a_from).sqrt() / a_from.sqrt()
        return a * z + b * eps

    def _to_epsilon(self, model_output: torch.Tensor, sample: torch.Tensor, timestep) -> torch.Tensor:
        """Convert the model output at ``sample`` to ε in float64; a deterministic function of both."""
        out, x, alpha = model_output.to(CARRY_DTYPE), sample.to(CARRY_DTYPE), self._alpha(timestep)
        kind = self.config.prediction_type
        if kind == "epsilon":
            return out
        if kind == "v_prediction":
            return alpha.sqrt() * out + (1 - alpha).sqrt() * x
        return (x - alpha.sqrt() * out) / (1 - alpha).sqrt()  # "sample": out is x̂₀

    def _epsilon(self, model_fn: ModelFn, z: torch.Tensor, timestep, like: torch.Tensor) -> torch.Tensor:
        """ε at the carried latent ``z``; the model sees ``z`` on the device and in the dtype of ``like``."""
        t = torch.tensor(int(timestep), device=like.device)
        out = model_fn(z.to(like.device, like.dtype), t)
        if not torch.is_tensor(out) or out.shape != z.shape:
            raise ValueError(f"model_fn returned {getattr(out, 'shape', type(out).__name__)} for latents of shape "
                             f"{tuple(z.shape)}; it must return the model output in the latents' shape.")
        return self._to_epsilon(out.to(z.device), z, timestep)

    # ------------------------------------------------------------------ functional API

    @torch.no_grad()
    def invert(self, latents: torch.Tensor, model_fn: ModelFn, progress_bar=None) -> DualScheduleState:
        """Clean latents → dual state at the noisy end (Eq. 11 and 12).

        The start of the schedule (Proposition 1): z̄ᵃ at τ_0 (10 for SD) comes from the clean latent by one
        plain DDIM inversion step, ε evaluated at the clean latent. Then z̄ᵖ at t_0 (1 for SD) comes from
        the clean latent by Eq. 11 with ε(z̄ᵃ(τ_0), τ_0). Neither needs to be exact: sampling restores
        z̄ᵃ(τ_0) and z̄ᵖ(t_0) exactly (Prop. 1), and its last step undoes the second move with the same
        ε(z̄ᵃ(τ_0), τ_0), so the clean latent comes back exactly too.

        Args:
            latents: clean latents ``(B, C, H, W)``; the model sees latents in this dtype.
            model_fn: ``model_fn(sample, timestep)`` → model output in ``prediction_type``; guidance goes
                inside it.
            progress_bar: optional callable wrapping an iterable (e.g. a pipeline's ``progress_bar``).
        """
        self._require_timesteps()
        if not torch.is_tensor(latents) or latents.ndim != 4:
            raise ValueError(f"latents must be a 4-D tensor (B, C, H, W), got {getattr(latents, 'shape', latents)}.")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or infinite values; an inversion of them would be too.")
        t, tau = self._t, self._tau  # ascending
        z0 = latents.to(self._carry_device(latents), CARRY_DTYPE)

        aux = self._ddim_move(z0, self._epsilon(model_fn, z0, tau[0], latents), None, tau[0])
        eps_aux = self._epsilon(model_fn, aux, tau[0], latents)
        primary = self._ddim_move(z0, eps_aux, None, t[0])
        steps = range(len(t) - 1)
        for k in progress_bar(steps) if progress_bar else steps:
            primary = self._ddim_move(primary, eps_aux, t[k], t[k + 1])  # Eq. 11
            if k + 1 < len(tau):  # the last step moves the primary only (no `break`: the bar then completes)
                eps_primary = self._epsilon(model_fn, primary, t[k + 1], latents)
                aux = self._ddim_move(aux, eps_primary, tau[k], tau[k + 1])  # Eq. 12
                eps_aux = self._epsilon(model_fn, aux, tau[k + 1], latents)
        if not (torch.isfinite(primary).all() and torch.isfinite(aux).all()):
            raise FloatingPointError("The inverted state is not finite: model_fn returned NaN or infinite values "
                                     "(check the weights, the dtype and the guidance).")
        return DualScheduleState(primary=primary, auxiliary=aux, timesteps=self.timesteps.cpu(), model_dtype=latents.dtype)

    @torch.no_grad()
    def sample(self, state: DualScheduleState, model_fn: ModelFn, progress_bar=None,
               branch_rules=None) -> torch.Tensor:
        """Dual state → clean latents (Eq. 13 and 14); the exact inverse of `invert` for the same
        ``model_fn``. With another ``model_fn`` (another prompt) it edits: directly (paper Fig. 3c) with the
        default coupled rule, or with the ``branch_rules`` of `begin`.

        This is literally the diffusers denoising loop over ``timesteps`` with `step`."""
        sample = self.begin(state, branch_rules)
        steps = self.timesteps
        for t in progress_bar(steps) if progress_bar else steps:
            sample = self.step(model_fn(sample, t), t, sample).prev_sample
        if not torch.isfinite(sample).all():
            raise FloatingPointError("The sampled latents are not finite: model_fn returned NaN or infinite values.")
        return sample

    def _carry_device(self, tensor: torch.Tensor) -> torch.device:
        # MPS has no float64; carry the state on the CPU there.
        return torch.device("cpu") if tensor.device.type == "mps" else tensor.device

    # ------------------------------------------------------------------ drop-in API
    #
    # A diffusers loop passes back, as ``sample``, the latent that `step` (or `begin`) handed out. The
    # scheduler keeps the float64 dual state itself and only takes ``sample`` over when it differs from
    # what was handed out: the caller replaced the latent (a ``callback_on_step_end`` edit). In-place
    # edits of `state` are kept as they are; `model_input()` hands out the edited latent.

    def begin(self, state: DualScheduleState, branch_rules=None) -> torch.Tensor:
        """Seed the next sampling loop with an inverted state; returns the first latent to feed the model.

        It survives the pipeline's own ``set_timesteps`` call, so a stock diffusers pipeline can edit from
        an inversion: ``pipe(prompt, latents=scheduler.begin(state), num_inference_steps=N)`` with the N used
        for inversion (checked when the loop starts).

        ``branch_rules``: one rule per batch row (see the module docstring), e.g. ``["coupled", "anchored"]``
        for [source, target]; None keeps every row coupled, the paper's rule."""
        self._check_state(state, check_schedule=False)
        self._branch_rules = resolve_branch_rules(branch_rules, state.batch_size)
        self._pending_state = state
        self._state, self._step_index = None, None
        self._handed_out = state.model_input()
        return self._handed_out

    def _check_state(self, state, check_schedule: bool = True):
        if not isinstance(state, DualScheduleState):
            raise TypeError(
                f"state must be the DualScheduleState returned by `invert`, got {type(state).__name__}; "
                "call `invert` first."
            )
        if state.primary.shape != state.auxiliary.shape:
            raise ValueError(
                f"state.primary {tuple(state.primary.shape)} and state.auxiliary "
                f"{tuple(state.auxiliary.shape)} must have the same shape."
            )
        if check_schedule and not torch.equal(state.timesteps.cpu(), self.timesteps.cpu()):
            raise ValueError(
                f"state was inverted with another schedule ({len(state.timesteps)} model evaluations) than the "
                f"scheduler's current one ({len(self.timesteps)}); call set_timesteps with the same "
                "num_inference_steps and auxiliary_position as for inversion."
            )

    @property
    def state(self) -> DualScheduleState | None:
        """The live dual state during a sampling loop: ``primary`` and ``auxiliary`` latents (float64).
        Callers may modify them in place between steps (e.g. P2P's LocalBlend); see `model_input`."""
        return self._state

    def _next_branch(self) -> str:
        """Which latent the next `step` evaluates: evaluations alternate auxiliary, primary, …"""
        return "auxiliary" if self._step_index % 2 == 0 else "primary"

    def model_input(self) -> torch.Tensor:
        """The latent the next step evaluates, in the model's dtype; reflects in-place edits of `state`."""
        if self._state is None or self._step_index >= len(self.timesteps):
            raise RuntimeError("model_input() is only defined inside a sampling loop, between steps.")
        self._handed_out = getattr(self._state, self._next_branch()).to(self._state.model_dtype)
        return self._handed_out

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> DualScheduleSchedulerOutput | tuple:
        """One sampling step of the dual schedule: Eq. 13 after an evaluation at an auxiliary timestep,
        Eq. 14 after one at a primary timestep, for rows on the coupled rule; other rows follow their branch
        rule (see `begin`).

        ``sample`` is the latent the model just evaluated. If it is not the latent this scheduler handed
        out last, the caller replaced it and it replaces the carried float64 latent; otherwise the carry is
        kept, which is what makes reconstruction exact.
        """
        if self.num_inference_steps is None:
            raise RuntimeError("Call `set_timesteps(num_inference_steps)` before `step`.")
        if self._step_index is None:
            self._start_loop(sample)
        i = self._step_index
        if i >= len(self.timesteps):
            raise RuntimeError("The sampling loop is over; call set_timesteps (or begin) to start another.")
        if int(timestep) != self._order[i]:
            raise ValueError(f"timestep {int(timestep)} is not the expected timesteps[{i}] = {self._order[i]}.")
        if sample.shape != self._state.primary.shape:
            raise ValueError(
                f"sample has shape {tuple(sample.shape)} but the dual state has {tuple(self._state.primary.shape)}."
            )
        if not torch.is_tensor(model_output) or model_output.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(getattr(model_output, 'shape', ()))} but sample has "
                             f"{tuple(sample.shape)}; pass the model's output for this sample.")

        state, branch = self._state, self._next_branch()
        if self._handed_out is None or not torch.equal(sample, self._handed_out.to(sample.device)):
            setattr(state, branch, sample.to(state.primary.device, CARRY_DTYPE))
        evaluated = getattr(state, branch)
        gap = None
        if self._from_noise:  # one plain DDIM chain down the interleaved timesteps (see `_start_loop`)
            eval_t = self._order[i]
            following = self._order[i + 1] if i + 1 < len(self._order) else None
            eps = self._to_epsilon(model_output.to(evaluated.device), evaluated, eval_t)
            prev = self._ddim_move(evaluated, eps, eval_t, following)
            state.primary, state.auxiliary = prev, prev.clone()
        else:
            # k indexes the ascending schedules: an auxiliary evaluation is at τ_k and moves z̃ᵖ from t_{k+1}
            # to t_k; a primary evaluation is at t_{k+1} and moves z̃ᵃ from τ_{k+1} to τ_k.
            k = (len(self.timesteps) - 1 - i) // 2
            t, tau = self._t, self._tau  # ascending
            if branch == "auxiliary":
                eval_t, other_t, next_t, other = tau[k], t[k + 1], t[k], state.primary
            else:
                eval_t, other_t, next_t, other = t[k + 1], tau[k + 1], tau[k], state.auxiliary
            eps = self._to_epsilon(model_output.to(evaluated.device), evaluated, eval_t)
            gap = (evaluated - self._ddim_move(other, eps, other_t, eval_t)).flatten(1).pow(2).mean(1).sqrt()
            moved = self._next_latent(self._ddim_move(other, eps, other_t, next_t),  # Eq. 13 / Eq. 14
                                      self._ddim_move(evaluated, eps, eval_t, next_t), branch)  # one DDIM move
            setattr(state, "primary" if branch == "auxiliary" else "auxiliary", moved)
            prev = moved
            if branch == "auxiliary" and k == 0:  # last step: undo the start of `invert` with the same ε(z̃ᵃ(τ_0), τ_0)
                prev = self._ddim_move(moved, eps, t[0], None)
        alpha = self._alpha(eval_t)
        x0 = (evaluated - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        self._step_index += 1

        prev_sample, x0 = prev.to(sample.device, sample.dtype), x0.to(sample.device, sample.dtype)
        self._handed_out = prev_sample
        if not return_dict:
            return (prev_sample, x0)
        return DualScheduleSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0, sync_gap=gap)

    def _next_latent(self, coupled: torch.Tensor, chain: torch.Tensor, branch: str) -> torch.Tensor:
        """Each row's next latent by its branch rule (module docstring), from the coupled update (Eq. 13/14)
        and the one-chain DDIM move of the latent just evaluated."""
        moved = coupled.clone()
        for row, (rule, anchor) in enumerate(self._branch_rules):
            if rule == "ddim" or (rule == "midpoint" and branch == "primary"):
                moved[row] = chain[row]
            elif rule == "anchored":  # the anchor's exact path plus this row's offset from it on one DDIM chain
                moved[row] = coupled[anchor] + (chain[row] - chain[anchor])
        return moved

    def _start_loop(self, sample: torch.Tensor):
        """Take the state seeded by `begin`, or start from noise with both latents set to ``sample``.

        From noise, `step` walks ``timesteps`` as one plain (finer) DDIM chain. The dual updates remove,
        from each latent, the noise the model estimated on the *other* latent: exact for a state that
        inversion built (the two chains carry matching noise), but from fresh noise the chains drift apart
        and each keeps the other's leftover noise."""
        seeded, self._pending_state = self._pending_state, None
        self._from_noise = seeded is None
        if seeded is None:
            self._branch_rules = None  # from noise there are no branches: one plain DDIM chain
            z = sample.to(self._carry_device(sample), CARRY_DTYPE)
            seeded = DualScheduleState(primary=z, auxiliary=z.clone(), timesteps=self.timesteps.cpu(),
                                       model_dtype=sample.dtype)
            self._handed_out = sample
        else:
            self._check_state(seeded)
            seeded = DualScheduleState(primary=seeded.primary.clone(), auxiliary=seeded.auxiliary.clone(),
                                       timesteps=seeded.timesteps, model_dtype=seeded.model_dtype)
        self._state, self._step_index = seeded, 0

    def __len__(self):
        return self.config.num_train_timesteps
