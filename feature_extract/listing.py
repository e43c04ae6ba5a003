"""Which image files make up a dataset on disk: class folders, ``path,label`` lists, class files.

A **folder** ``DIR`` is laid out ``DIR/<class>/<image>`` (base split ``all``), or, when
``DIR/train`` holds class folders and no images, ``DIR/<split>/<class>/<image>`` (every sub-folder
of ``DIR`` is a base split). Each folder is listed once with ``os.scandir``; files under a class
folder, nested folders included (directory symlinks are followed, a loop is an unreadable
entry), are images when their extension is one of ``IMAGE_EXTENSIONS`` (any case); other files
and names starting with ``.`` (``.DS_Store``, macOS ``._x.jpg`` companions) are ignored. An
image outside every class folder is an error.

A **list** ``FILE.csv`` has rows ``path,label`` or ``path,label,split`` (an optional header row
``path,label[,split]``; blank lines skipped). Relative paths are relative to the CSV's folder. A
label is a class name; one that matches no name but is a decimal integer in ``[0, K)`` is taken as
the class index. Without a split column the base split is ``all``.

The **label space** is public, never read from the labels: the sorted union of the class folder
names over the base splits (an empty class folder is a class), or a class file (``--classes``: one
name per line, in index order; blank lines skipped; a name twice is an error). A list needs a
class file. A class folder or label outside the class file is an error naming it (the CSV's
file and line). At least two classes.

**Row order.** Each base split is in the order of a keyed hash of its files' relative paths
(BLAKE2b of ``"{SPLIT_SEED}/{key}"``, ties by the key): a fixed, public shuffle, so TFDS-style
slices (``all[:90%]``, ``train[:1000]``) are random-looking subsets, a file's position depends on
its own name only, and adding files elsewhere moves a slice boundary by at most the files added.
Keys (``cat/1.jpg``, ``train/cat/1.jpg``, a list's path as written, normalised) are POSIX paths;
ids hash them (``sources.hash_id``).

Unreadable entries found while listing (a missing file, a broken link or a loop) are kept in the
rows with their reason; the source drops them or fails (``image_sources``).
"""

from __future__ import annotations

import csv
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from feature_extract.sources import hash_id

SPLIT_SEED = 0
IMAGE_EXTENSIONS = frozenset(
    (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
    + (".ppm", ".pgm", ".pbm", ".pnm")
)
ALL = "all"
HEADER = ["path", "label", "split"]


class ListingError(ValueError):
    """A dataset folder, list or class file that cannot define a labelled dataset."""


@dataclass
class Files:
    """The files of one base split, in row order: keys, labels and the problems found listing.

    ``problems`` maps a key to why it cannot be read (missing, a broken link, a loop).
    """

    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, label: int, problem: str | None = None) -> None:
        self.keys.append(key)
        self.labels.append(label)
        if problem is not None:
            self.problems[key] = problem


def order_key(key: str) -> tuple[int, str]:
    """The sort key of a file in its split: ``(hash_id(f"{SPLIT_SEED}/{key}"), key)``."""
    return hash_id(f"{SPLIT_SEED}/{key}"), key


def in_row_order(files: Files) -> tuple[list[str], np.ndarray]:
    """``(keys, labels int32)`` sorted by ``order_key``."""
    order = sorted(range(len(files.keys)), key=lambda i: order_key(files.keys[i]))
    keys = [files.keys[i] for i in order]
    labels = np.asarray([files.labels[i] for i in order], dtype=np.int32)
    return keys, labels


# ------------------------------------------------------------------------------- label space
def read_classes(path: str) -> tuple[str, ...]:
    """The class names of a class file, one per line, in index order."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ListingError(f"cannot read the class file {path}: {err}") from None
    names: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise ListingError(
                f"{path} line {number}: class {name!r} is already on line {names[name]}"
            )
        names[name] = number
    if len(names) < 2:
        raise ListingError(f"{path} names {len(names)} class(es); a classifier needs at least two")
    return tuple(names)


def _check_two(names: Sequence[str], where: str) -> None:
    if len(names) < 2:
        shown = f" ({', '.join(names)})" if names else ""
        raise ListingError(
            f"{where} has {len(names)} class folder(s){shown}; a classifier needs at least two: "
            "add class folders, or give the label space with --classes FILE"
        )


# ------------------------------------------------------------------------------------ folders
def _scan(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as err:
        raise ListingError(f"cannot list the folder {path}: {err.strerror or err}") from None


def _is_image(name: str) -> bool:
    return not name.startswith(".") and "." + name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def class_folders(path: str) -> list[str]:
    return [e.name for e in _scan(path) if not e.name.startswith(".") and e.is_dir()]


def _loose_images(path: str) -> list[str]:
    return [e.name for e in _scan(path) if _is_image(e.name) and not e.is_dir()]


def folder_splits(root: str) -> dict[str, str]:
    """``{base split: folder}``: every sub-folder of ``root`` when ``root/train`` holds class
    folders and no images, else ``{"all": root}``."""
    if not os.path.isdir(root):
        raise ListingError(f"{root} is not a folder (folder:DIR needs DIR/<class>/<image>)")
    train = os.path.join(root, "train")
    if os.path.isdir(train) and class_folders(train) and not _loose_images(train):
        return {name: os.path.join(root, name) for name in class_folders(root)}
    return {ALL: root}


def folder_classes(root: str, splits: dict[str, str], classes: str | None) -> tuple[str, ...]:
    """The label space of a folder dataset (module docstring)."""
    found = sorted({name for folder in splits.values() for name in class_folders(folder)})
    if classes is None:
        _check_two(found, root)
        return tuple(found)
    names = read_classes(classes)
    unknown = [n for n in found if n not in names]
    if unknown:
        where = [
            os.path.join(f, n) for f in splits.values() for n in unknown if n in class_folders(f)
        ]
        raise ListingError(
            f"class folder {where[0]} is not in the label space of {classes} "
            f"({len(names)} classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''})"
        )
    return names


def _walk(folder: str, prefix: str, label: int, files: Files, seen: set[tuple[int, int]]) -> None:
    """Add every image under ``folder`` (keys ``prefix/...``); ``seen`` holds the directories on
    the current path, by (device, inode), to tell a symlink loop. Only folders and links cost a
    ``stat``: a plain file's type comes with the listing."""
    for entry in _scan(folder):
        if entry.name.startswith("."):
            continue
        key = f"{prefix}/{entry.name}" if prefix else entry.name
        if entry.is_file(follow_symlinks=False):
            if _is_image(entry.name):
                files.add(key, label)
            continue
        try:
            mode = os.stat(entry.path).st_mode  # follows links: ELOOP for a link to itself
        except OSError as err:
            if _is_image(entry.name) or entry.is_symlink():
                files.add(key, label, f"a broken symlink or a symlink loop ({err.strerror})")
            continue
        if stat.S_ISDIR(mode):
            ident = _identity(entry.path)
            if ident in seen:
                files.add(key, label, "a symlink loop (the folder contains itself)")
            else:
                _walk(entry.path, key, label, files, seen | {ident})
        elif _is_image(entry.name):
            files.add(key, label, None if stat.S_ISREG(mode) else "not a regular file")


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def list_folder(root: str, split: str, classes: str | None = None) -> tuple[Files, tuple[str, ...]]:
    """The files of base split ``split`` of the folder ``root`` and its label space."""
    splits = folder_splits(root)
    if split not in splits:
        raise ListingError(_no_split(root, split, splits))
    names = folder_classes(root, splits, classes)
    folder = splits[split]
    loose = _loose_images(folder)
    if loose:
        raise ListingError(
            f"{os.path.join(folder, loose[0])} is outside every class folder: images go in "
            f"{folder}/<class>/"
        )
    prefix = "" if split == ALL else split
    files = Files()
    index = {name: i for i, name in enumerate(names)}
    for name in class_folders(folder):
        path = os.path.join(folder, name)
        _walk(path, posixpath.join(prefix, name), index[name], files, {_identity(path)})
    return files, names


def _no_split(root: str, split: str, splits: dict[str, str]) -> str:
    if list(splits) == [ALL]:
        return (
            f"{root} has no split sub-folders ({root}/train/<class>/..., {root}/test/...), so its "
            f"only split is 'all': name held-out splits of it, e.g. --splits "
            f"train=all[:90%],test=all[90%:] (no split {split!r})"
        )
    return f"{root} has no split {split!r}; its splits are {', '.join(sorted(splits))}"


# -------------------------------------------------------------------------------------- lists
def _label(text: str, index: dict[str, int], where: str, classes: str) -> int:
    if text in index:
        return index[text]
    if text.isdecimal() and int(text) < len(index):
        return int(text)
    raise ListingError(
        f"{where}: label {text!r} is not in the label space of {classes} ({len(index)} classes; "
        "a label is a class name, or its index 0..K-1)"
    )


def list_rows(path: str, classes: str | None) -> tuple[dict[str, Files], tuple[str, ...]]:
    """Every base split of the list ``path`` and its label space (module docstring)."""
    if classes is None:
        raise ListingError(
            f"list:{path} needs the label space: --classes FILE (one class name per line); the "
            "labels in the list are private and cannot define it"
        )
    names = read_classes(classes)
    index = {name: i for i, name in enumerate(names)}
    folder = os.path.dirname(os.path.abspath(path))
    splits: dict[str, Files] = {}
    first_line: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), 1):
                if not row or not "".join(row).strip():
                    continue
                cells = [c.strip() for c in row]
                if number == 1 and [c.lower() for c in cells] in (HEADER, HEADER[:2]):
                    continue
                where = f"{path} line {number}"
                if len(cells) not in (2, 3) or not cells[0]:
                    raise ListingError(f"{where}: expected path,label[,split], got {row!r}")
                key = posixpath.normpath(cells[0].replace(os.sep, "/"))
                if key in first_line:
                    raise ListingError(
                        f"{where}: {cells[0]} is already listed on line {first_line[key]}"
                    )
                first_line[key] = number
                label = _label(cells[1], index, where, classes)
                split = cells[2] if len(cells) == 3 and cells[2] else ALL
                problem = _missing(os.path.join(folder, key))
                splits.setdefault(split, Files()).add(
                    key, label, None if problem is None else f"{problem} ({where})"
                )
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ListingError(f"cannot read the list {path}: {err}") from None
    if not splits:
        raise ListingError(f"the list {path} has no rows")
    return splits, names


def _missing(path: str) -> str | None:
    """Why ``path`` is not a file that can be opened, or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return err.strerror or str(err)
    return "a folder, not an image file" if stat.S_ISDIR(mode) else None
