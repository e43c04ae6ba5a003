"""The user's own images: decoding of every common mode, folders, lists, arrays, and bad input
(each a one-line error with exit status 2, or with --skip-unreadable a listed skip)."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from feature_extract import datasets, extract, image_sources, listing, store
from feature_extract.__main__ import main
from feature_extract.arrays import image_arrays
from feature_extract.decoding import ImageReadError, check_image, decode_image

RNG = np.random.default_rng(0)


def _image(path, size=(6, 5), mode="RGB", fmt=None) -> np.ndarray:
    """Write a random image; returns its RGB pixels as written."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return pixels


def _folder(root, classes=("cat", "dog", "eel"), per_class=4, prefix="") -> None:
    for c in classes:
        for i in range(per_class):
            _image(os.path.join(root, prefix, c, f"{i}.png"))


def _png(width: int, height: int, depth: int, color: int, rows: bytes = b"") -> bytes:
    """A PNG file with an IHDR claiming ``width x height`` and the given raw scanlines."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _cli(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args), "--no-progress"])
    return code, capsys.readouterr().err


def _pixels(tmp_path, data, *extra, out="out.h5") -> list[str]:
    return [
        "--data",
        data,
        "--model",
        "pixels",
        "--resolution",
        "4",
        "--out",
        tmp_path / out,
        *extra,
    ]


# ----------------------------------------------------------------------------------- decoding
def test_every_mode_becomes_rgb_uint8():
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = RNG.integers(0, 256, (5, 7), dtype=np.uint8)

    def encoded(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        return buf.getvalue()

    np.testing.assert_array_equal(
        decode_image(encoded(Image.fromarray(gray))), np.stack([gray] * 3, -1)
    )
    palette = Image.fromarray(rgb).quantize(16)
    np.testing.assert_array_equal(
        decode_image(encoded(palette)), np.asarray(palette.convert("RGB"))
    )
    rgba = np.concatenate([rgb, np.zeros((5, 7, 1), np.uint8)], -1)  # fully transparent
    np.testing.assert_array_equal(decode_image(encoded(Image.fromarray(rgba))), rgb)  # dropped
    cmyk = Image.fromarray(rgb).convert("CMYK")
    np.testing.assert_array_equal(
        decode_image(encoded(cmyk, "TIFF")), np.asarray(cmyk.convert("RGB"))
    )
    sixteen = (gray.astype(np.uint16) * 257 + RNG.integers(-128, 128, gray.shape)).clip(0, 65535)
    out = decode_image(encoded(Image.fromarray(sixteen.astype(np.uint16))))
    np.testing.assert_array_equal(out[..., 0], np.round(sixteen / 257).astype(np.uint8))
    rows = b"".join(b"\0" + np.full(7 * 3, 0xABCD, ">u2").tobytes() for _ in range(5))
    assert (decode_image(_png(7, 5, 16, 2, rows)) == 0xAB).all()  # 16-bit RGB: the high byte
    assert decode_image(encoded(Image.fromarray(gray).convert("1"))).dtype == np.uint8


def test_exif_orientation_is_applied():
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)  # 4 rows, 6 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", exif=exif)
    out = decode_image(buf.getvalue())
    assert out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out, np.rot90(rgb, -1))


def test_decompression_bomb_is_a_clear_error_without_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(40_000, 40_000, 8, 2))  # claims 4.8 GB of pixels; 60 bytes on disk
    with pytest.raises(ImageReadError, match=r"cannot read .*bomb.png: .*decompression bomb"):
        decode_image(bomb)
    assert "decompression bomb" in check_image(bomb)
    small = tmp_path / "small.png"
    small.write_bytes(_png(300, 300, 8, 0, b"".join(b"\0" + bytes(300) for _ in range(300))))
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 60_000  # between 1x and 2x the limit Pillow only warns
        with pytest.warns(Image.DecompressionBombWarning):
            assert "decompression-bomb limit" in check_image(small)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


# ------------------------------------------------------------------------------------ folders
def test_folder_rows_labels_ids_and_hash_order(tmp_path):
    _folder(tmp_path / "d", per_class=5)
    (tmp_path / "d" / "cat" / "notes.txt").write_text("not an image, ignored")
    (tmp_path / "d" / "dog" / "._0.png").write_bytes(b"macOS companion, ignored")
    _image(tmp_path / "d" / "eel" / "deep" / "nested.JPG", fmt="JPEG")
    source = datasets.open_source(f"folder:{tmp_path / 'd'}", "all")
    assert (source.num_classes, source.class_names, len(source)) == (3, ("cat", "dog", "eel"), 16)
    keys = source.keys
    assert keys == sorted(keys, key=listing.order_key)
    assert "eel/deep/nested.JPG" in keys and not any(k.endswith((".txt", "._0.png")) for k in keys)
    images, labels, ids = source.get(range(16))
    assert all(im.shape == (5, 6, 3) and im.dtype == np.uint8 for im in images)
    np.testing.assert_array_equal(
        labels, [("cat", "dog", "eel").index(k.split("/")[0]) for k in keys]
    )
    np.testing.assert_array_equal(ids, [datasets.hash_id(k) for k in keys])
    head = datasets.open_source(f"folder:{tmp_path / 'd'}", "all[:75%]")
    tail = datasets.open_source(f"folder:{tmp_path / 'd'}", "all[75%:]")
    assert head.keys + tail.keys == keys and len(head) == 12

    _image(tmp_path / "d" / "dog" / "new.png")  # a file added elsewhere keeps every other place
    again = datasets.open_source(f"folder:{tmp_path / 'd'}", "all").keys
    assert [k for k in again if k != "dog/new.png"] == keys
    moved = set(datasets.open_source(f"folder:{tmp_path / 'd'}", "all[:75%]").keys) ^ set(head.keys)
    assert moved <= {"dog/new.png", *keys[11:13]}


def test_split_folders_share_one_label_space(tmp_path, capsys):
    _folder(tmp_path / "d", ("cat", "dog"), 3, "train")
    _folder(tmp_path / "d", ("cat", "eel"), 2, "test")
    code, err = _cli(capsys, *_pixels(tmp_path, f"folder:{tmp_path / 'd'}"))
    assert code == 0, err
    train, test = (store.split_info(tmp_path / "out.h5", s) for s in ("train", "test"))
    assert train.class_names == test.class_names == ("cat", "dog", "eel")
    assert (train.num_rows, test.num_rows) == (6, 4)
    assert train.attrs["dataset"] == f"folder:{tmp_path / 'd'}"
    assert train.attrs["dataset_version"].startswith("files-sha256:")
    _, y, _ = store.read_split(tmp_path / "out.h5", "test")
    assert sorted(y.tolist()) == [0, 0, 2, 2]


def test_class_file_sets_the_label_space(tmp_path):
    _folder(tmp_path / "d", ("cat", "dog"), 2)
    (tmp_path / "classes.txt").write_text("dog\ncat\nbird\n")
    source = datasets.open_source(
        f"folder:{tmp_path / 'd'}", "all", classes=str(tmp_path / "classes.txt")
    )
    assert source.class_names == ("dog", "cat", "bird")
    _, labels, _ = source.get(range(len(source)))
    assert sorted(labels.tolist()) == [0, 0, 1, 1]


def test_a_flat_folder_needs_named_slices(tmp_path, capsys):
    _folder(tmp_path / "d")
    code, err = _cli(capsys, *_pixels(tmp_path, f"folder:{tmp_path / 'd'}"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "train=all[:90%],test=all[90%:]" in err
    extra = ["--splits", "train=all[:75%],test=all[75%:]"]
    assert _cli(capsys, *_pixels(tmp_path, f"folder:{tmp_path / 'd'}", *extra))[0] == 0
    assert store.split_info(tmp_path / "out.h5", "test").num_rows == 3


# -------------------------------------------------------------------------------------- lists
def test_list_rows_relative_absolute_integer_labels_and_split_column(tmp_path):
    for name in ("a", "b", "c", "d"):
        _image(tmp_path / "imgs" / f"{name}.png")
    absolute = tmp_path / "imgs" / "d.png"
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "l.csv").write_text(
        f"path,label,split\nimgs/a.png,cat,train\nimgs/b.png,1,train\n\nimgs/c.png,dog,test\n"
        f"{absolute},cat,test\n"
    )
    spec, classes = f"list:{tmp_path / 'l.csv'}", str(tmp_path / "classes.txt")
    train = datasets.open_source(spec, "train", classes=classes)
    test = datasets.open_source(spec, "test", classes=classes)
    assert sorted(zip(train.keys, train._labels.tolist(), strict=True)) == [
        ("imgs/a.png", 0),
        ("imgs/b.png", 1),
    ]
    assert sorted(test.keys) == sorted(["imgs/c.png", str(absolute)])
    images, _, ids = test.get([0, 1])
    assert images[0].shape == (5, 6, 3) and set(ids) == {datasets.hash_id(k) for k in test.keys}


def test_a_list_needs_a_class_file(tmp_path, capsys):
    _image(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("a.png,cat\n")
    code, err = _cli(capsys, *_pixels(tmp_path, f"list:{tmp_path / 'l.csv'}", "--splits", "all"))
    assert code == 2 and "needs the label space: --classes FILE" in err


# -------------------------------------------------------------------------------- bad input
def test_empty_class_folder_stays_in_the_label_space(tmp_path, capsys):
    _folder(tmp_path / "d", ("cat", "dog"), 3, "train")
    _folder(tmp_path / "d", ("cat", "dog"), 2, "test")
    os.makedirs(tmp_path / "d" / "train" / "eel")
    code, err = _cli(capsys, *_pixels(tmp_path, f"folder:{tmp_path / 'd'}"))
    assert code == 0
    assert "warning: class folder(s) with no images in" in err and "eel" in err
    info = store.split_info(tmp_path / "out.h5", "train")
    assert (info.num_classes, info.class_names, info.num_rows) == (3, ("cat", "dog", "eel"), 6)


def test_one_class_is_an_error(tmp_path, capsys):
    _folder(tmp_path / "d", ("cat",))
    code, err = _cli(capsys, *_pixels(tmp_path, f"folder:{tmp_path / 'd'}", "--splits", "all"))
    assert (code, err.count("\n")) == (2, 1)
    assert err.startswith(f"error: {tmp_path / 'd'} has 1 class folder(s) (cat)")
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("bad", ["not_an_image", "truncated_jpeg", "bomb", "self_loop"])
def test_unreadable_file_is_named_or_skipped_and_listed(tmp_path, capsys, bad):
    _folder(tmp_path / "d", ("cat", "dog"), 4)
    path = tmp_path / "d" / "dog" / f"{bad}.jpg"
    if bad == "not_an_image":
        path.write_text("hello")
    elif bad == "truncated_jpeg":
        buf = io.BytesIO()
        Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif bad == "bomb":
        path.write_bytes(_png(40_000, 40_000, 8, 2))
    else:
        os.symlink(path, path)  # a symlink loop: the link points at itself
    args = _pixels(tmp_path, f"folder:{tmp_path / 'd'}", "--splits", "all", "--batch-size", "2")
    code, err = _cli(capsys, *args)
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith(f"error: cannot read {path}")

    skip = _pixels(tmp_path, f"folder:{tmp_path / 'd'}", "--splits", "all", out="skip.h5")
    code, err = _cli(capsys, *skip, "--skip-unreadable")
    assert code == 0, err
    assert f"warning: skipped 1 unreadable file(s) of folder:{tmp_path / 'd'}" in err
    info = store.split_info(tmp_path / "skip.h5", "all")
    assert info.num_rows == 8 and info.attrs["skipped_files"] == [f"dog/{bad}.jpg"]
    assert len(info.attrs["skipped_reasons"]) == 1


def test_one_by_one_image_is_resized_like_any_other(tmp_path, capsys):
    _folder(tmp_path / "d", ("cat", "dog"), 2)
    _image(tmp_path / "d" / "cat" / "tiny.png", size=(1, 1))
    code, err = _cli(
        capsys, "--data", f"folder:{tmp_path / 'd'}", "--model", "scatnet", "--splits", "all",
        "--out", tmp_path / "s.h5",
    )  # fmt: skip
    assert code == 0, err
    x, _, info = store.read_split(tmp_path / "s.h5", "all")
    assert x.shape == (5, 3969) and np.isfinite(x).all()


def test_directory_symlink_loop(tmp_path, capsys):
    _folder(tmp_path / "d", ("cat", "dog"), 2)
    os.symlink(tmp_path / "d" / "cat", tmp_path / "d" / "cat" / "again")
    args = _pixels(tmp_path, f"folder:{tmp_path / 'd'}", "--splits", "all")
    code, err = _cli(capsys, *args)
    assert code == 2 and "cat/again: a symlink loop" in err
    skip = _pixels(tmp_path, f"folder:{tmp_path / 'd'}", "--splits", "all", "--skip-unreadable")
    assert _cli(capsys, *skip)[0] == 0
    assert store.split_info(tmp_path / "out.h5", "all").attrs["skipped_files"] == ["cat/again"]


def test_missing_file_and_unknown_label_in_a_list(tmp_path, capsys):
    for name in ("a", "b", "c"):
        _image(tmp_path / f"{name}.png")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "l.csv").write_text("a.png,cat\nb.png,dog\ngone.png,dog\nc.png,cat\n")
    args = [
        *_pixels(tmp_path, f"list:{tmp_path / 'l.csv'}", "--splits", "all"),
        "--classes",
        tmp_path / "classes.txt",
    ]
    code, err = _cli(capsys, *args)
    assert code == 2
    gone, where = tmp_path / "gone.png", f"({tmp_path / 'l.csv'} line 3)"
    assert f"cannot read {gone}: No such file or directory {where}" in err
    assert _cli(capsys, *args, "--skip-unreadable")[0] == 0
    assert store.split_info(tmp_path / "out.h5", "all").attrs["skipped_files"] == ["gone.png"]

    (tmp_path / "l.csv").write_text("a.png,cat\nb.png,zebra\n")
    code, err = _cli(capsys, *args, "--overwrite")
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'l.csv'} line 2: label 'zebra' is not in the label space of" in err
    (tmp_path / "l.csv").write_text("a.png,cat\nb.png,7\n")  # an index outside [0, K)
    assert "line 2: label '7'" in _cli(capsys, *args, "--overwrite")[1]


def test_class_folder_outside_the_class_file(tmp_path, capsys):
    _folder(tmp_path / "d", ("cat", "dog", "eel"), 1)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    code, err = _cli(
        capsys,
        *_pixels(tmp_path, f"folder:{tmp_path / 'd'}", "--splits", "all"),
        "--classes",
        tmp_path / "classes.txt",
    )
    assert code == 2 and f"class folder {tmp_path / 'd' / 'eel'} is not in the label space" in err


# ------------------------------------------------------------------------------------- arrays
def test_arrays_of_images_through_extract(tmp_path):
    x = RNG.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    y = np.arange(10) % 2
    data = image_arrays(
        {"train": (x[:7], y[:7]), "test": (x[7:], y[7:])}, class_names=["even", "odd"]
    )
    infos = extract(data, "pixels", tmp_path / "a.h5", progress=False)
    feats, labels, info = store.read_split(tmp_path / "a.h5", "train")
    np.testing.assert_allclose(feats, x[:7].reshape(7, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels, y[:7])
    assert infos["test"].num_rows == 3 and info.class_names == ("even", "odd")
    assert info.attrs["dataset_version"].startswith("arrays-sha256:")
    with pytest.raises(ValueError, match="outside the label space"):
        image_arrays({"train": (x, y + 1)}, num_classes=2)
    with pytest.raises(ValueError, match="needs the public label space"):
        image_arrays({"train": (x, y)})


def test_files_spec_and_base_splits():
    assert image_sources.is_files_spec("folder:/x") and not image_sources.is_files_spec("mnist")
    assert image_sources.base_splits("train[:10%]+test") == ["train", "test"]
    assert image_sources.base_splits("all[90%:]") == ["all"]


# The interrupted run announces its third committed batch, then waits for the test's SIGINT.
WAITER = """
import sys, time
from feature_extract import store
appends = [0]
append = store.SplitWriter.append
def append_then_wait(self, *args):
    append(self, *args)
    appends[0] += 1
    if appends[0] == 3:
        print("flushed", flush=True)
        time.sleep(120)
store.SplitWriter.append = append_then_wait
from feature_extract.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_halfway_then_the_same_command_resumes(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    from tests.helpers import store_contents

    _folder(tmp_path / "d", ("cat", "dog", "eel"), 8)
    args = [
        *_pixels(
            tmp_path, f"folder:{tmp_path / 'd'}", "--splits", "train=all[:75%],test=all[75%:]"
        ),
        "--batch-size",
        "4",
        "--no-progress",
    ]
    args = [str(a) for a in args]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-c", WAITER, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "flushed\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err
    with pytest.raises(store.IncompleteSplitError):
        store.split_info(tmp_path / "out.h5", "train")
    assert 0 < store.stored_attrs(tmp_path / "out.h5", "train")["rows_written"] < 18

    assert main(args) == 0  # the same command resumes
    reference = [
        str(a) if a != str(tmp_path / "out.h5") else str(tmp_path / "ref.h5") for a in args
    ]
    assert main(reference) == 0
    resumed, clean = store_contents(tmp_path / "out.h5"), store_contents(tmp_path / "ref.h5")
    assert resumed == clean and set(resumed) == {"train", "test"}
    ids = np.frombuffer(resumed["train"][0]["ids"], np.int64)
    assert ids.size == 18 == len(set(ids.tolist()))
