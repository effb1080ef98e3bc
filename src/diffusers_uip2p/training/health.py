"""Health checks during editor training: is the UNet still a denoiser, is it learning to edit, and is it
still improving?

Every few steps, on held-out records that training never sees (nothing here feeds a gradient):

* ε-MSE at low (t < 500) and high (t ≥ 500) noise, with fixed noise and timesteps so that checks compare:
  - ``edit_eps_*``: denoising the true edited image given the input image and the instruction (supervised
    InstructPix2Pix's objective), against ``bound_edit_eps_*``: the base model given the edited caption and no
    image, which is as well as a text-to-image model knows the target;
  - ``input_eps_*``: denoising the input image given its caption and no image (what ERC's denoising anchor
    trains), against the base model on the same (``bound_input_eps_*``); ``input_eps_ratio`` is their ratio
    over both noise bands, and ERC must keep it near 1 (the issue's bar: within 2×);
* on Shapes validation edits, the Shapes evaluator's ``success`` and ``preserved`` rates of the editor's
  edits, sampled as the benchmark samples them (`benchmarks/shapes_tables.py`: 50 steps, guidance 7.5/1.5).
"""

from __future__ import annotations

import torch

from .erc import EditModels

EPS_FIELDS = ("edit_eps_low", "edit_eps_high", "input_eps_low", "input_eps_high")


def shapes_health_records(num_records: int):
    """The first ``num_records`` Shapes validation edits, as (records dict, edits)."""
    from ..shapes.dataset import split_edits
    from ..shapes.training_utils import scenes_to_tensor

    edits = split_edits("validation", num_records)
    return {"pixel_values": scenes_to_tensor([e.source for e in edits]),
            "edited_pixel_values": scenes_to_tensor([e.target for e in edits]),
            "edit_instruction": [e.instruction for e in edits], "input_caption": [e.input_caption for e in edits],
            "edited_caption": [e.edited_caption for e in edits]}, edits


def dataset_health_records(dataset, num_records: int) -> dict:
    """The first ``num_records`` items of an edit dataset (with edited images) stacked into one batch."""
    items = []
    for item in dataset:
        items.append(item)
        if len(items) == num_records:
            break
    if not items:
        raise ValueError("`--health_data` holds no usable record: the health checks need held-out records with "
                         "an input image, an instruction, both captions and the edited image.")
    return {key: torch.stack([i[key] for i in items]) if torch.is_tensor(items[0][key]) else [i[key] for i in items]
            for key in ("pixel_values", "edited_pixel_values", "edit_instruction", "input_caption", "edited_caption")}


class HealthCheck:
    """Fixed held-out inputs, the base model's bounds (computed once), and the checks of a UNet.

    Args:
        models: the frozen parts of training (VAE, text encoder, noise scheduler).
        records: a batch as `shapes_health_records` or `dataset_health_records` make it.
        base_unet: the model training started from (text-to-image or InstructPix2Pix); it gives the bounds.
        edits: Shapes edits to sample and judge (None: no sampling).
        seed: of the fixed noise and timesteps, and of each sampled edit.
    """

    def __init__(self, models: EditModels, records: dict, base_unet, edits=None, seed: int = 0):
        count = len(records["pixel_values"])
        if not count:
            raise ValueError("The health checks need at least one held-out record.")
        self.models, self.edits, self.seed = models, edits, seed
        with torch.no_grad():
            device = models.vae.device
            self.input_condition = models.image_condition(records["pixel_values"].to(device))
            self.input_latents = self.input_condition * models.scaling_factor
            self.edited_latents = models.image_condition(records["edited_pixel_values"].to(device)) * models.scaling_factor
            self.instruction = models.encode_text(records["edit_instruction"])[0]
            self.input_caption = models.encode_text(records["input_caption"])[0]
            self.edited_caption = models.encode_text(records["edited_caption"])[0]
        generator = torch.Generator().manual_seed(seed)
        half = models.noise_scheduler.config.num_train_timesteps // 2
        self.noise = torch.randn(self.input_latents.shape, generator=generator).to(device)
        self.timesteps = {"low": torch.randint(0, half, (count,), generator=generator).to(device),
                          "high": torch.randint(half, 2 * half, (count,), generator=generator).to(device)}
        self.bounds = self._errors(base_unet, bound=True)

    @torch.no_grad()
    def _eps_mse(self, unet, clean, image, text, band: str) -> float:
        scheduler, timesteps = self.models.noise_scheduler, self.timesteps[band]
        noisy = scheduler.add_noise(clean, self.noise, timesteps)
        unet = getattr(unet, "module", unet)
        if unet.config.in_channels == 2 * unet.config.out_channels:
            noisy = torch.cat([noisy, torch.zeros_like(clean) if image is None else image], dim=1)
        elif image is not None:
            raise ValueError("A text-to-image UNet cannot take the image condition.")
        output = unet(noisy.to(unet.dtype), timesteps, encoder_hidden_states=text.to(unet.dtype)).sample
        target = self.noise
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(clean, self.noise, timesteps)
        return float((output.float() - target.float()).pow(2).mean())

    def _errors(self, unet, bound: bool = False) -> dict[str, float]:
        errors = {}
        for band in ("low", "high"):
            if bound:  # the base knows the target only through its caption
                errors[f"bound_edit_eps_{band}"] = self._eps_mse(unet, self.edited_latents, None, self.edited_caption, band)
            else:
                errors[f"edit_eps_{band}"] = self._eps_mse(unet, self.edited_latents, self.input_condition,
                                                           self.instruction, band)
            errors[f"{'bound_' if bound else ''}input_eps_{band}"] = self._eps_mse(
                unet, self.input_latents, None, self.input_caption, band)
        return errors

    @torch.no_grad()
    def judge(self, pipe) -> dict[str, float]:
        """Success and preserved rates of ``pipe``'s edits of the Shapes edits (the benchmark's settings)."""
        from ..shapes import render
        from ..shapes.evaluator import judge_edit

        pipe.set_progress_bar_config(disable=True)
        success = preserved = 0
        for edit in self.edits:
            image = pipe(edit.instruction, image=render(edit.source), num_inference_steps=50, guidance_scale=7.5,
                         image_guidance_scale=1.5, generator=torch.Generator().manual_seed(self.seed)).images[0]
            verdict = judge_edit(edit.source, edit.instruction, image, edit.category)
            success, preserved = success + verdict.success, preserved + verdict.preserved
        return {"success": success / len(self.edits), "preserved": preserved / len(self.edits),
                "judged_edits": len(self.edits)}

    def __call__(self, unet, pipe=None) -> dict[str, float]:
        """Every check of ``unet`` (eval mode for the duration), with the bounds; ``pipe`` (around the same UNet)
        samples the judged edits."""
        module = getattr(unet, "module", unet)
        was_training = module.training
        module.eval()
        try:
            report = {**self._errors(unet), **self.bounds}
            base = self.bounds["bound_input_eps_low"] + self.bounds["bound_input_eps_high"]
            report["input_eps_ratio"] = (report["input_eps_low"] + report["input_eps_high"]) / base
            report["edit_eps_ratio"] = (report["edit_eps_low"] + report["edit_eps_high"]) / (
                self.bounds["bound_edit_eps_low"] + self.bounds["bound_edit_eps_high"])
            if self.edits and pipe is not None:
                report |= self.judge(pipe)
        finally:
            module.train(was_training)
        return report


def still_improving(history: list[dict], patience: int = 3) -> bool:
    """False once the last ``patience`` checks improved neither the edit ε-MSE (by 1 %) nor the success rate
    on the best check before them."""
    if len(history) <= patience:
        return True
    before, recent = history[:-patience], history[-patience:]
    best_eps = min(h["edit_eps_ratio"] for h in before)
    best_success = max(h.get("success", 0.0) for h in before)
    return any(h["edit_eps_ratio"] < 0.99 * best_eps or h.get("success", 0.0) > best_success for h in recent)
