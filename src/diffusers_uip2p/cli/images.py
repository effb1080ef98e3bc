"""Reading the CLI's input images (clear errors for every way a path can be wrong) and drawing its
before/after pictures."""

from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path

import PIL.Image

MAX_PIXELS = 4096 * 4096  # larger inputs are refused before decoding: no editing model works at that size


def sample_folder() -> Path:
    return Path(str(resources.files("diffusers_uip2p") / "assets" / "scenes"))


def sample_captions() -> dict[str, str]:
    """The shipped sample scenes (file name → exact caption): Shapes test-split scenes."""
    return json.loads((sample_folder() / "captions.json").read_text())


def sample_caption(path: Path) -> str | None:
    """The exact caption of ``path`` if it is a shipped sample scene."""
    return sample_captions().get(path.name) if path.resolve().parent == sample_folder().resolve() else None


def resolve_image(name: str) -> Path:
    """A path, or the name of a shipped sample scene ("three-objects" or "three-objects.png")."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    samples = sample_captions()
    file_name = name if name.endswith(".png") else f"{name}.png"
    if file_name in samples:
        return sample_folder() / file_name
    raise FileNotFoundError(f"IMAGE {name!r}: no such file, and not a shipped sample scene "
                            f"({', '.join(Path(s).stem for s in samples)}).")


def open_image(name: str) -> tuple[PIL.Image.Image, Path]:
    """The RGB image at ``name`` (see `resolve_image`), with a clear error for a directory, a file that is
    not an image, or one over `MAX_PIXELS`."""
    path = resolve_image(name)
    if path.is_dir():
        raise IsADirectoryError(f"IMAGE {str(path)!r} is a directory; give an image file (PNG, JPEG, ...).")
    try:
        with warnings.catch_warnings():  # PIL's size warning: the limit below answers it with a clear error
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)  # reads the header only
    except PIL.Image.DecompressionBombError as error:
        raise ValueError(f"IMAGE {str(path)!r} is too large to open safely ({error}).") from None
    except (PIL.UnidentifiedImageError, OSError) as error:
        raise ValueError(f"IMAGE {str(path)!r} is not an image PIL can read ({type(error).__name__}: {error}).") \
            from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValueError(f"IMAGE {str(path)!r} is {width}×{height} pixels; the most accepted is {MAX_PIXELS:,} "
                         f"pixels (e.g. 4096×4096). Resize it first.")
    try:
        return image.convert("RGB"), path
    except OSError as error:  # truncated or corrupt data past the header
        raise ValueError(f"IMAGE {str(path)!r} could not be decoded ({error}).") from None


def fit_to_model(image: PIL.Image.Image, pipe, size: int | None) -> PIL.Image.Image:
    """Resize so the longer side is ``size`` (default: the model's native resolution) and both sides are
    multiples of the model's total downsampling, keeping the aspect ratio as near as that allows."""
    multiple = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    if size < multiple:
        raise ValueError(f"--size must be at least {multiple} for this model, got {size}.")
    scale = size / max(image.size)
    width, height = (max(multiple, round(side * scale / multiple) * multiple) for side in image.size)
    return image if (width, height) == image.size else image.resize((width, height), PIL.Image.BICUBIC)


def side_by_side(images: list[PIL.Image.Image], scale: int) -> PIL.Image.Image:
    """Images left to right at the first one's size, enlarged ``scale`` times with nearest neighbours."""
    width, height = images[0].size
    row = PIL.Image.new("RGB", (width * len(images), height))
    for i, image in enumerate(images):
        row.paste(image.convert("RGB").resize((width, height)), (i * width, 0))
    return row.resize((row.width * scale, row.height * scale), PIL.Image.NEAREST)

