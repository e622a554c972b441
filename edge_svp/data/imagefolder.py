"""Images laid out as `split/class/image`, in a folder or a zip (CIFAR-10's JPEGs included).

Class ids are the sorted class-folder names of the train split; images may lie in
sub-folders of their class. What is left out (files that are not images, empty class
folders) is warned about; archivers' metadata (__MACOSX, ._*) is skipped. All images must
share one size; grayscale stays one channel, everything else becomes RGB. Examples are
stored in a fixed shuffled order, so that the first N of them are a fair sample.
"""

import io
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from edge_svp.data.cache import cached_arrays
from edge_svp.data.dataset import Dataset
from edge_svp.errors import DataWarning, EdgeSVPError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
SPLITS = {"train": ("train", "training"), "test": ("test", "val", "validation")}


# what archivers and file browsers leave beside the images (macOS, Windows)
METADATA = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")


def _names(source: Path) -> tuple[list[str], list[str]]:
    """(files, folders) under `source`, a folder or a zip: relative paths, or zip member
    names as they are (a Windows archiver's hold backslashes)."""
    if source.is_dir():
        paths = list(source.rglob("*"))
        relative = [p.relative_to(source).as_posix() for p in paths]
        files = [r for r, p in zip(relative, paths, strict=True) if p.is_file()]
        return files, [r for r, p in zip(relative, paths, strict=True) if p.is_dir()]
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise EdgeSVPError(f"{source} is not a readable zip file: {e}") from None
    folders = {str(_posix(n).parent) for n in names} | {n.rstrip("/") for n in names
                                                        if n.endswith("/")}  # fmt: skip
    return [n for n in names if not n.endswith("/")], sorted(folders)


def _posix(name: str) -> PurePosixPath:
    return PurePosixPath(name.replace("\\", "/"))


def _place(name: str) -> tuple[str, str] | None:
    """(split, class) of a path below split/class/, at any depth beneath the class."""
    parts = _posix(name).parts
    for i, part in enumerate(parts[:-1]):
        split = next((s for s, alias in SPLITS.items() if part.lower() in alias), None)
        if split:
            return (split, parts[i + 1]) if i + 1 < len(parts) - 1 else None
    return None


def _entries(source: Path) -> list[tuple[str, str, str]]:
    """(split, class, member) for every image, member being a zip name or a file path; a
    warning for what is left out (other files, empty class folders)."""
    files, folders = _names(source)
    entries, ignored = [], []
    for name in files:
        if any(p in METADATA or p.startswith("._") for p in _posix(name).parts):
            continue
        place = _place(name)
        if place and _posix(name).suffix.lower() in IMAGE_SUFFIXES:
            entries.append((*place, name))
        else:
            ignored.append(name)
    if ignored:
        warnings.warn(
            f"{source}: left out {len(ignored)} files that are not images in a "
            f"split/class/ folder (e.g. {ignored[0]})",
            DataWarning,
            stacklevel=2,
        )
    used = {(split, cls) for split, cls, _ in entries}
    places = {folder: _place(folder + "/image") for folder in folders}
    empty = sorted(folder for folder, place in places.items()
                   if place and _posix(folder).name == place[1] and place not in used)  # fmt: skip
    if empty:
        warnings.warn(
            f"{source}: left out {len(empty)} class folders that hold no images: "
            f"{', '.join(empty)}",
            DataWarning,
            stacklevel=2,
        )
    return sorted(entries)


def _decode(source: Path, entries, classes: list[str]) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    zf = None if source.is_dir() else zipfile.ZipFile(source)
    index = {c: i for i, c in enumerate(classes)}
    images, labels = {"train": [], "test": []}, {"train": [], "test": []}
    mode, first = None, None
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
            first = first if first is not None else (name, arr.shape)
            if arr.shape != first[1]:  # in either split: the network takes one size
                raise EdgeSVPError(
                    f"{source}: image {name} is {arr.shape}, {first[0]} is {first[1]}; "
                    "all images (train and test) must share one size"
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
