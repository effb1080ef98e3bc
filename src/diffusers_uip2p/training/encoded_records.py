"""The frozen VAE's latents of every training record, encoded once before training instead of every epoch.

Why: the VAE is frozen and the training images are centre-cropped and never flipped, so each record's
latents (`posterior_mode`) are the same every epoch. On a CPU at 64 px the two encodes of a supervised step
(input and edited image) take about 20 % of it (`benchmarks/encoded_records.py`). Encoded in batches of the
training batch size, in order, the stored latents equal what the step would compute, so a run trains bit
for bit as it would without them (tested); each run also compares its first batch with a fresh encode.

    python -m diffusers_uip2p.training.encoded_records --pretrained_model_name_or_path PIPELINE \
        --train_data RECORDS --resolution 64 --output RECORDS/latents-64.safetensors

then ``train_uip2p --encoded_records RECORDS/latents-64.safetensors``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .data import collate_edit_records, open_edit_dataset

# batch key of the pixels -> name of their latents in the file
STORED = {"pixel_values": "input_latents", "edited_pixel_values": "edited_latents"}


def records_fingerprint(source) -> str:
    """What identifies the records: the SHA-256 of a local JSONL file, else the source's name."""
    path = Path(str(source))
    if path.is_dir() and (path / "records.jsonl").is_file():
        path = path / "records.jsonl"
    if path.is_file():
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return f"name:{source}"


def vae_fingerprint(vae) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


@torch.no_grad()
def posterior_mode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """An image's latents: the posterior mode, unscaled. InstructPix2Pix conditions on it; the supervised
    target uses it too (diffusers' script samples the posterior instead, which is the same for SD's VAE,
    whose posterior std is tiny, but feeds a UNet noise the decoder ignores when the posterior is wide:
    the Shapes VAE's posterior std is 1.66 against 1.04 for its means, and a supervised run on samples
    plateaued at an ε-loss of 0.39). Contiguous (the mode is a view of the moments), so that a step computes
    the same bits from latents encoded now as from ones read from `EncodedRecords`: the weight gradients
    differ otherwise."""
    return vae.encode(pixels.to(vae.dtype)).latent_dist.mode().contiguous()


@torch.no_grad()
def encode_records(dataset, encode, batch_size: int) -> dict[str, torch.Tensor]:
    """The latents of each record's images, by record index; NaN where a record was unreadable."""
    if not hasattr(dataset, "__len__"):
        raise ValueError("`train_data` must be map-style records (JSONL or a 🤗 dataset) to be encoded ahead; tar "
                         "shards stream, so train on them without --encoded_records.")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_edit_records)
    parts = {name: [] for name in STORED.values()}  # (record indices, latents) per batch
    for batch in tqdm(loader, desc="encoding records", unit="batch"):
        for key, name in STORED.items():
            if key in batch:
                parts[name].append((batch["index"], encode(batch[key]).float().cpu()))
    stored = {}
    for name, batches in parts.items():
        if batches:
            index, latents = (torch.cat(part) for part in zip(*batches))
            stored[name] = torch.full((int(index.max()) + 1, *latents.shape[1:]), float("nan"))
            stored[name][index] = latents
    return stored


class EncodedRecords:
    """Stored latents, looked up by the batch's record indices."""

    def __init__(self, path: str | Path, *, source, resolution: int, vae, keys: tuple[str, ...]):
        path = Path(path)
        if not path.is_file() or path.suffix != ".safetensors":
            raise ValueError(f"--encoded_records {str(path)!r}: expected a .safetensors file written by "
                             "`python -m diffusers_uip2p.training.encoded_records`.")
        with safe_open(str(path), "pt") as file:
            meta = file.metadata() or {}
            expected = {"records": records_fingerprint(source), "resolution": str(resolution),
                        "vae": vae_fingerprint(vae)}
            differ = [f"{k} ({meta.get(k)!r} there, {v!r} here)" for k, v in expected.items() if meta.get(k) != v]
            if differ:
                raise ValueError(f"--encoded_records {path} was encoded from other inputs: {', '.join(differ)}. "
                                 "Encode this run's records again.")
            missing = [STORED[k] for k in keys if STORED[k] not in file.keys()]
            if missing:
                raise ValueError(f"--encoded_records {path} holds no {', '.join(missing)}.")
            self.stored = {key: file.get_tensor(STORED[key]) for key in keys}
        self.path, self.checked = path, set()

    def latents(self, batch: dict, key: str, image_condition) -> torch.Tensor:
        """``batch[key]``'s latents; on first use of each key they are compared with a fresh encode, so
        that a file made from other images (same file names, new pixels) fails loudly instead of training
        on the wrong latents."""
        index = batch["index"]
        if int(index.max()) >= len(self.stored[key]):
            raise ValueError(f"--encoded_records {self.path} holds {len(self.stored[key])} records; the batch has "
                             f"record {int(index.max())}: encode this run's records again.")
        found = self.stored[key][index].to(batch[key].device)
        if torch.isnan(found).any():
            raise ValueError(f"--encoded_records {self.path} has no latents for records "
                             f"{index[torch.isnan(found).flatten(1).any(1)].tolist()}.")
        if key not in self.checked:
            fresh = image_condition(batch[key]).float()
            if not torch.allclose(found, fresh, rtol=1e-4, atol=1e-4):
                raise ValueError(f"--encoded_records {self.path} does not match the training images (largest "
                                 f"difference {(found - fresh).abs().max().item():.3g}); encode them again.")
            self.checked.add(key)
        return found


def main(argv=None) -> Path:
    from diffusers import AutoencoderKL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained_model_name_or_path", required=True, help="the pipeline whose VAE trains")
    parser.add_argument("--train_data", required=True, help="the records train_uip2p reads (JSONL or 🤗 dataset)")
    parser.add_argument("--resolution", type=int, required=True)
    parser.add_argument("--batch_size", type=int, default=32, help="train_uip2p's --train_batch_size")
    parser.add_argument("--output", required=True, help="a .safetensors file")
    args = parser.parse_args(argv)
    if not args.output.endswith(".safetensors"):
        parser.error(f"--output must name a .safetensors file, got {args.output!r}")
    vae = AutoencoderKL.from_pretrained(args.pretrained_model_name_or_path, subfolder="vae").eval()
    dataset = open_edit_dataset(args.train_data, resolution=args.resolution)
    stored = encode_records(dataset, functools.partial(posterior_mode, vae), args.batch_size)
    meta = {"records": records_fingerprint(args.train_data), "resolution": str(args.resolution),
            "vae": vae_fingerprint(vae), "shapes": json.dumps({k: list(v.shape) for k, v in stored.items()})}
    partial = Path(args.output + ".partial")  # renamed into place whole: a cut-off run leaves no file
    save_file(stored, str(partial), metadata=meta)
    partial.replace(args.output)
    print(f"wrote {args.output}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in stored.items()))
    return Path(args.output)


if __name__ == "__main__":
    main()
