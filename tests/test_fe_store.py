"""The HDF5 feature store: round trips, resumable writer, refusals and corruption detection."""

import os
import re
import tempfile

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from feature_extract import store
from feature_extract.store import IncompleteSplitError, SplitReader, SplitWriter, StoreError

ATTRS = {
    "backbone": "pixels",
    "dataset": "digits",
    "dataset_version": "1.0.0",
    "preprocessing": "decode",
    "checkpoint_sha256": "",
}


def _writer(path, split="train", *, total_rows=10, dim=3, attrs=ATTRS, **kw):
    return SplitWriter(
        path,
        split,
        dim=dim,
        total_rows=total_rows,
        num_classes=4,
        class_names=("a", "b", "c", "d"),
        attrs=attrs,
        **kw,
    )


def _rows(start, stop, dim=3):
    x = np.arange(start * dim, stop * dim, dtype=np.float32).reshape(-1, dim)
    return x, (np.arange(start, stop) % 4).astype(np.int32), np.arange(start, stop) * 7


@given(
    n=st.integers(1, 40),
    dim=st.integers(1, 9),
    dtype=st.sampled_from([np.float16, np.float32]),
    classes=st.integers(2, 6),
    data=st.data(),
)
def test_write_read_round_trip(n, dim, dtype, classes, data):
    x = data.draw(hnp.arrays(dtype, (n, dim), elements=st.floats(-1e3, 1e3, width=16)))
    y = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, classes - 1)))
    ids = data.draw(hnp.arrays(np.int64, n, elements=st.integers(-(2**62), 2**62), unique=True))
    names = tuple(f"class {k}" for k in range(classes))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f.h5")
        info = store.write_split(
            path,
            "test",
            x,
            y,
            num_classes=classes,
            class_names=names,
            ids=ids,
            attrs={"backbone": "b"},
        )
        assert (info.num_rows, info.dim, info.num_classes, info.class_names) == (
            n,
            dim,
            classes,
            names,
        )
        assert info.feature_dtype == np.dtype(dtype).name and info.attrs["backbone"] == "b"
        got_x, got_y, got_info = store.read_split(path, "test")
        assert got_x.dtype == dtype and got_y.dtype == np.int32
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
        with SplitReader(path, "test") as reader:
            np.testing.assert_array_equal(reader.ids(), ids)
            chunks = list(reader.iter_chunks(7))
        assert len(chunks) == -(-n // 7)
        np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), x)
        assert got_info == info and store.split_names(path) == ["test"]


def test_default_ids_are_row_indices_and_store_path_parsing(tmp_path):
    path = tmp_path / "f.h5"
    store.write_split(path, "train", np.ones((5, 2)), np.zeros(5, int), num_classes=2)
    with SplitReader(path, "train") as reader:
        np.testing.assert_array_equal(reader.ids(), np.arange(5))
    assert store.parse_store_path(f"{path}:train") == (str(path), "train")
    assert store.parse_store_path(str(path), "test") == (str(path), "test")


def test_incomplete_split_is_refused_with_resume_message_then_resumes(tmp_path):
    path = tmp_path / "f.h5"
    writer = _writer(path)
    writer.append(*_rows(0, 4))
    with pytest.raises(IncompleteSplitError, match=r"4 of 10 rows.*same extraction command again"):
        store.read_split(path, "train")
    resumed = _writer(path)
    assert resumed.rows_written == 4
    resumed.append(*_rows(4, 10))
    resumed.finish()
    x, y, _ = store.read_split(path, "train")
    np.testing.assert_array_equal(x, _rows(0, 10)[0])
    np.testing.assert_array_equal(y, _rows(0, 10)[1])


def test_uncommitted_rows_are_dropped_on_resume(tmp_path):
    """Rows flushed but not committed (killed before the commit) are dropped: no duplicate."""
    path = tmp_path / "f.h5"
    _writer(path).append(*_rows(0, 3))
    with h5py.File(path, "a") as f:  # simulate a crash after the resize+write, before the commit
        for name, rows in zip(("features", "labels", "ids"), _rows(3, 5), strict=True):
            f["train"][name].resize(5, axis=0)
            f["train"][name][3:5] = rows
    resumed = _writer(path)
    assert resumed.rows_written == 3
    resumed.append(*_rows(3, 10))
    resumed.finish()
    with SplitReader(path, "train") as reader:
        np.testing.assert_array_equal(reader.ids(), _rows(0, 10)[2])


MISMATCHES = [
    ("backbone", "vit-b16-i21k"),
    ("preprocessing", "resize(8)"),
    ("checkpoint_sha256", "ab"),
]


@pytest.mark.parametrize("key, value", MISMATCHES)
def test_identity_mismatch_is_refused(tmp_path, key, value):
    path = tmp_path / "f.h5"
    _writer(path).append(*_rows(0, 2))
    with pytest.raises(StoreError, match=rf"refusing to append.*{key}.*{re.escape(value)}"):
        _writer(path, attrs={**ATTRS, key: value})
    with pytest.raises(StoreError, match="dim: store has 3, this run has 4"):
        _writer(path, dim=4)


def test_complete_split_needs_overwrite(tmp_path):
    path = tmp_path / "f.h5"
    store.write_split(path, "train", np.ones((3, 2)), np.zeros(3, int), num_classes=2)
    with pytest.raises(StoreError, match="already complete.*overwrite"):
        store.write_split(path, "train", np.ones((3, 2)), np.zeros(3, int), num_classes=2)
    store.write_split(
        path, "train", np.full((4, 5), 2.0), np.ones(4, int), num_classes=2, overwrite=True
    )
    x, y, info = store.read_split(path, "train")
    assert info.num_rows == 4 and info.dim == 5
    np.testing.assert_array_equal(x, np.full((4, 5), 2.0))


def test_nan_rows_are_named_and_labels_checked(tmp_path):
    x = np.zeros((20, 3), np.float32)
    x[3, 1], x[17, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"2 row\(s\): 3, 17"):
        store.write_split(tmp_path / "f.h5", "train", x, np.zeros(20, int), num_classes=2)
    with pytest.raises(ValueError, match=r"outside the label space \[0, 2\).*row 1: 2"):
        store.write_split(
            tmp_path / "g.h5", "train", np.zeros((3, 2)), np.array([0, 2, 1]), num_classes=2
        )


def test_flipped_bytes_are_caught_by_the_checksum(tmp_path):
    path = tmp_path / "f.h5"
    x = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    store.write_split(path, "train", x, np.zeros(64, int), num_classes=2)
    with h5py.File(path, "r") as f:
        chunk = f["train/features"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with SplitReader(path, "train") as reader, pytest.raises(StoreError, match="checksum.*corrupt"):
        reader.read()


def test_truncated_file_gives_a_store_error(tmp_path):
    path = tmp_path / "f.h5"
    store.write_split(path, "train", np.ones((500, 32)), np.zeros(500, int), num_classes=2)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(StoreError, match="truncated or not HDF5"):
        store.read_split(path, "train")


def test_missing_store_and_split_are_explained(tmp_path):
    with pytest.raises(StoreError, match="no feature store.*make features"):
        store.split_info(tmp_path / "none.h5", "train")
    path = tmp_path / "f.h5"
    store.write_split(path, "train", np.ones((2, 2)), np.zeros(2, int), num_classes=2)
    with pytest.raises(StoreError, match=r"no split 'test'.*\['train'\]"):
        store.split_info(path, "test")


def test_empty_one_class_and_duplicate_id_splits_are_refused(tmp_path):
    path = tmp_path / "f.h5"
    x, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least one row"):
        store.write_split(path, "train", np.ones((0, 2)), np.zeros(0, int), num_classes=2)
    with pytest.raises(ValueError, match=r"num_classes must be >= 2 .*got 1"):
        store.write_split(path, "train", x, np.zeros(4, int), num_classes=1)
    with pytest.raises(
        ValueError, match=r"ids must be unique: 1 id\(s\) repeat, e.g. id 5 at rows 1, 3"
    ):
        store.write_split(path, "train", x, y, num_classes=2, ids=np.array([2, 5, 7, 5]))
    with pytest.raises(ValueError, match="ids must be integers"):
        store.write_split(path, "train", x, y, num_classes=2, ids=np.array([0.5, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"ids must have shape \(4,\)"):
        store.write_split(path, "train", x, y, num_classes=2, ids=np.arange(3))
    for total_rows, num_classes in ((0, 2), (5, 1)):
        with pytest.raises(ValueError, match="total_rows >= 1 and num_classes >= 2"):
            SplitWriter(path, "train", dim=2, total_rows=total_rows, num_classes=num_classes)
    assert not os.path.exists(path)  # nothing was written
    store.write_split(path, "train", x, y, num_classes=2, ids=np.array([2, 5, 7, 9]))
    with SplitReader(path, "train") as reader:
        np.testing.assert_array_equal(reader.ids(), [2, 5, 7, 9])
