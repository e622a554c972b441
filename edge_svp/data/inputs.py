"""New inputs for a trained network, as the files a user has: image files, folders of them,
.npy arrays and IDX files. Read into raw uint8 pixels, (N, H, W, C) as images decode, each
with a name for the output.

    names, pixels = read_inputs(["cat.png", "more/", "batch.npy"], shape=(3, 32, 32))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_svp.data.idx import read_idx
from edge_svp.errors import EdgeSVPError

IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_inputs(paths: list[str | Path], shape: tuple[int, ...]) -> tuple[list[str], np.ndarray]:
    """(names, uint8 pixels (N, H, W, C)) of every input in `paths`, for a network that takes
    images of `shape` (C, H, W); a one-line error for an input it cannot take."""
    if len(shape) != 3:
        raise EdgeSVPError(f"this network takes inputs of shape {shape}, not images")
    names, arrays = [], []
    for path in map(Path, paths):
        if not path.exists():
            raise EdgeSVPError(f"{path} does not exist")
        if path.is_file() and path.stat().st_size == 0:
            raise EdgeSVPError(f"{path} is empty (0 bytes)")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGES)
            if not files:
                raise EdgeSVPError(f"{path} holds no image files ({', '.join(sorted(IMAGES))})")
            for file in files:
                names.append(str(file))
                arrays.append(_image(file, shape)[None])
        elif path.suffix.lower() in IMAGES:
            names.append(str(path))
            arrays.append(_image(path, shape)[None])
        elif path.suffix == ".npy" or path.name.endswith(("-ubyte", "-ubyte.gz", ".idx")):
            batch = _array(path, shape)
            if not len(batch):
                raise EdgeSVPError(f"{path} holds no images (an array of shape {batch.shape})")
            names += [f"{path}[{i}]" for i in range(len(batch))]
            arrays.append(batch)
        else:
            raise EdgeSVPError(
                f"{path}: give image files, folders of them, .npy arrays or IDX files"
            )
    if not arrays:
        raise EdgeSVPError("give at least one input")
    return names, np.concatenate(arrays)


def _image(path: Path, shape) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise EdgeSVPError(f"cannot decode image {path}: {e}") from None
    if pixels.shape[:2] != (height, width):
        raise EdgeSVPError(
            f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels; the network takes "
            f"{width}x{height}"
        )
    return pixels.reshape(height, width, channels)


def _array(path: Path, shape) -> np.ndarray:
    """A .npy or IDX file of one image or many, in (N,) H, W (, C) or (N,) C, H, W."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # EOFError: a truncated header
            raise EdgeSVPError(f"cannot read {path}: {e}") from None
    else:
        array = read_idx(path)
    channels, height, width = shape
    if array.dtype != np.uint8:
        raise EdgeSVPError(f"{path} holds {array.dtype}; give raw uint8 pixels (0-255)")
    layouts = {  # the shapes one image takes, and how each becomes (H, W, C)
        (height, width): lambda a: a[..., None],
        (height, width, channels): lambda a: a,
        (channels, height, width): lambda a: np.moveaxis(a, -3, -1),
    }
    for layout, to_hwc in layouts.items():
        if layout == (height, width) and channels != 1:
            continue
        if array.shape == layout:
            return to_hwc(array)[None]
        if array.shape[1:] == layout:
            return to_hwc(array)
    raise EdgeSVPError(
        f"{path} holds an array of shape {array.shape}; the network takes images of "
        f"(C, H, W) = {shape}, as (N,) H, W, C or (N,) C, H, W"
    )
