"""Images laid out as `split/class/image`, in a folder or a zip (CIFAR-10's JPEGs included).

Class ids are the sorted class-folder names of the train split. All images must share one
size; grayscale stays one channel, everything else becomes RGB. Examples are stored in a
fixed shuffled order, so that the first N of them are a fair sample.
"""

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from edge_svp.data.cache import cached_arrays
from edge_svp.data.dataset import Dataset
from edge_svp.errors import EdgeSVPError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
SPLITS = {"train": ("train", "training"), "test": ("test", "val", "validation")}


def _entries(source: Path) -> list[tuple[str, str, str]]:
    """(split, class, member) for every image, member being a zip name or a file path."""
    if source.is_dir():
        names = [str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()]
    else:
        try:
            with zipfile.ZipFile(source) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise EdgeSVPError(f"{source} is not a readable zip file: {e}") from None
    entries = []
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if len(parts) >= 3 and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
            split = next((s for s, alias in SPLITS.items() if parts[-3].lower() in alias), None)
            if split:
                entries.append((split, parts[-2], name))
    return sorted(entries)


def _decode(source: Path, entries, classes: list[str]) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    zf = None if source.is_dir() else zipfile.ZipFile(source)
    index = {c: i for i, c in enumerate(classes)}
    images, labels = {"train": [], "test": []}, {"train": [], "test": []}
    mode = None
    try:
        for split, cls, name in entries:
            if cls not in index:
                raise EdgeSVPError(f"{source}: class '{cls}' is in {split} but not in train")
            raw = (source / name).read_bytes() if zf is None else zf.read(name)
            try:
                img = Image.open(io.BytesIO(raw))
                mode = mode or ("L" if img.mode in ("L", "1") else "RGB")
                arr = np.asarray(img.convert(mode))
            except (UnidentifiedImageError, OSError) as e:
                raise EdgeSVPError(f"{source}: cannot decode image {name}: {e}") from None
            if images[split] and arr.shape != images[split][0].shape:
                raise EdgeSVPError(
                    f"{source}: image {name} is {arr.shape}, others are {images[split][0].shape}; "
                    "all images must share one size"
                )
            images[split].append(arr)
            labels[split].append(index[cls])
    except zipfile.BadZipFile as e:
        raise EdgeSVPError(f"{source} is a corrupt zip file: {e}") from None
    finally:
        if zf is not None:
            zf.close()
    arrays = {}
    for split in ("train", "test"):
        # a fixed shuffle, so that the first N examples (--train-limit) cover every class
        order = np.random.default_rng(0).permutation(len(labels[split]))
        x = np.stack(images[split])[order]
        arrays[f"x_{split}"] = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2).copy()
        arrays[f"y_{split}"] = np.asarray(labels[split], dtype=np.int64)[order]
    return arrays


def load_image_folder(source: Path, name: str = "imagefolder") -> Dataset:
    if not source.exists():
        raise EdgeSVPError(f"dataset '{name}': {source} does not exist")
    entries = _entries(source)
    splits = {split for split, _, _ in entries}
    if splits != {"train", "test"}:
        raise EdgeSVPError(
            f"dataset '{name}': {source} must hold train/<class>/<image> and "
            f"test/<class>/<image>; found splits: {sorted(splits) or 'none'}"
        )
    classes = sorted({cls for split, cls, _ in entries if split == "train"})
    sources = [source] if source.is_file() else [source / e[2] for e in entries]
    # one cache entry per source, whichever dataset name reads it (cifar10's zip too)
    arrays = cached_arrays("imagefolder", sources, lambda: _decode(source, entries, classes))
    return Dataset.from_arrays(name, arrays, classes)
