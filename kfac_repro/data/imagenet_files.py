"""ImageNet (ILSVRC-2012) on disk: finding, listing and verifying it, without TensorFlow.

Looked for in <data root>/imagenet/, in one of two layouts (TFRecords preferred when both are there):
- TFRecord shards train-NNNNN-of-MMMMM and validation-NNNNN-of-MMMMM (as written by the usual ImageNet conversion
  script), each record a tf.train.Example with "image/encoded" (JPEG bytes) and "image/class/label" (int64). Those
  labels are 1-based (1..1000, 0 being reserved for "background"), so by default `TFRECORD_LABEL_OFFSET` = 1 is
  subtracted to give 0..999; the class count is taken to be ILSVRC-2012's 1000 (the shards carry no class list).
- Class folders train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (the validation images sorted into per-class folders);
  label = index of the class folder in the sorted list of train/ folders. .jpg/.jpeg/.png files are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kfac_repro.data.locations import DataNotFoundError, candidate_dirs
from kfac_repro.data.tfrecord_index import count_records

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SPLIT_FOLDERS = {"train": "train", "val": "val"}
TFRECORD_PREFIXES = {"train": "train", "val": "validation"}
TFRECORD_CLASSES = 1000
TFRECORD_LABEL_OFFSET = 1
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG")
_EXPECTED = ("expected TFRecord shards train-*-of-* and validation-*-of-*, or class folders "
             "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG")


@dataclass(frozen=True)
class ImageNetLayout:
    """Where ImageNet is and in which layout: "tfrecord" or "folders"."""

    format: str
    root: Path


def find_imagenet(data_dir: str | Path | None = None) -> ImageNetLayout:
    """The first directory with a complete layout; DataNotFoundError naming what is missing or where it looked."""
    searched = candidate_dirs("imagenet", data_dir)
    for root in searched:
        has_shards = {split: any(root.glob(f"{prefix}-*-of-*")) for split, prefix in TFRECORD_PREFIXES.items()}
        has_folders = {split: (root / folder).is_dir() for split, folder in SPLIT_FOLDERS.items()}
        for layout, present, name in (("tfrecord", has_shards, _shard_pattern), ("folders", has_folders, _folder)):
            if all(present.values()):
                return ImageNetLayout(layout, root)
            if any(present.values()):
                missing = next(split for split, ok in present.items() if not ok)
                raise DataNotFoundError(f"{root / name(missing)}: missing; {_EXPECTED}")
    looked = ", ".join(str(d) for d in searched)
    raise DataNotFoundError(f"ImageNet not found; looked in: {looked}; {_EXPECTED}")


def tfrecord_shards(root: Path, split: str) -> list[Path]:
    """All shards of `split`, sorted; DataNotFoundError naming the first missing one."""
    prefix = TFRECORD_PREFIXES[split]
    pattern = re.compile(rf"^{prefix}-(\d+)-of-(\d+)$")
    found = {}
    for path in root.glob(f"{prefix}-*-of-*"):
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = (path, match.group(2))
    if not found:
        raise DataNotFoundError(f"{root / _shard_pattern(split)}: no shards; {_EXPECTED}")
    totals = {total for _, total in found.values()}
    if len(totals) != 1:
        raise DataNotFoundError(f"{root}: {prefix} shards disagree on the shard count ({sorted(totals)})")
    total = totals.pop()
    for index in range(int(total)):
        if index not in found:
            name = f"{prefix}-{index:0{len(total)}d}-of-{total}"
            raise DataNotFoundError(f"{root / name}: missing; expected {int(total)} shards "
                                    f"{prefix}-{0:0{len(total)}d}-of-{total} … {prefix}-{int(total) - 1}-of-{total}")
    return [found[index][0] for index in sorted(found)]


def class_names(root: Path) -> list[str]:
    """Sorted class-folder names under train/ (the label of a class is its index here)."""
    classes = sorted(entry.name for entry in (root / "train").iterdir() if entry.is_dir())
    if not classes:
        raise DataNotFoundError(f"{root / 'train'}: no class folders; {_EXPECTED}")
    return classes


def folder_examples(root: Path, split: str, num_classes: int | None = None) -> tuple[list[str], list[int]]:
    """(image paths, labels) of `split` in the folder layout, restricted to the first `num_classes` classes."""
    index = {name: label for label, name in enumerate(class_names(root))}
    kept = len(index) if num_classes is None else num_classes
    split_dir = root / SPLIT_FOLDERS[split]
    paths: list[str] = []
    labels: list[int] = []
    for entry in sorted(split_dir.iterdir()):
        if not entry.is_dir():
            continue
        if entry.name not in index:
            raise DataNotFoundError(f"{entry}: class folder absent from {root / 'train'}")
        if index[entry.name] < kept:
            files = sorted(str(f) for f in entry.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            paths.extend(files)
            labels.extend([index[entry.name]] * len(files))
    if not paths:
        raise DataNotFoundError(f"{split_dir}: no images (.JPEG/.jpg/.png) in its class folders")
    return paths, labels


def imagenet_info(data_dir: str | Path | None = None) -> dict:
    """num_train, num_val, num_classes, image_shape (None: varies), format, location."""
    layout = find_imagenet(data_dir)
    if layout.format == "tfrecord":
        counts = {split: sum(count_records(p) for p in tfrecord_shards(layout.root, split))
                  for split in TFRECORD_PREFIXES}
        num_classes = TFRECORD_CLASSES
    else:
        counts = {split: len(folder_examples(layout.root, split)[0]) for split in SPLIT_FOLDERS}
        num_classes = len(class_names(layout.root))
    return {"num_train": counts["train"], "num_val": counts["val"], "num_classes": num_classes,
            "image_shape": (None, None, 3), "format": layout.format, "location": str(layout.root)}


def verify_imagenet(data_dir: str | Path | None = None) -> str:
    """Check every record header (TFRecords) or every file's signature (folders); a summary line."""
    layout = find_imagenet(data_dir)
    if layout.format == "folders":
        for split in SPLIT_FOLDERS:
            for path in folder_examples(layout.root, split)[0]:
                with open(path, "rb") as handle:
                    head = handle.read(4)
                if not head.startswith(_MAGIC):
                    raise DataNotFoundError(f"{path}: not a JPEG or PNG image (starts with {head!r})")
    info = imagenet_info(data_dir)
    return (f"{info['format']} layout in {info['location']}: {info['num_train']} training and {info['num_val']} "
            f"validation images, {info['num_classes']} classes")


def _shard_pattern(split: str) -> str:
    return f"{TFRECORD_PREFIXES[split]}-*-of-*"


def _folder(split: str) -> str:
    return SPLIT_FOLDERS[split]
