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
    with pytest.raises(ValueError, match=r"outside the label space \[0, 2\).*row 1: 2.*private"):
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


# --- read_into: caller-owned buffers ----------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """float32 and float16 stores of 500 rows x 4000 (chunks of 65 and 131 rows) and a virtual
    store assembled from two float32 shards of 230 and 270 rows."""
    from feature_extract import multihost

    folder = tmp_path_factory.mktemp("read_into")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 4000)).astype(np.float32)
    y = rng.integers(0, 7, 500)
    paths = {}
    for dtype in ("float32", "float16"):
        paths[dtype] = folder / f"{dtype}.h5"
        store.write_split(paths[dtype], "train", x.astype(dtype), y, num_classes=7)
    shards = []
    for i, (lo, hi) in enumerate(((0, 230), (230, 500))):
        shards.append(str(folder / f"shard{i}.h5"))
        store.write_split(
            shards[-1],
            "train",
            x[lo:hi],
            y[lo:hi],
            num_classes=7,
            ids=np.arange(lo, hi),
            attrs={"row_start": lo, "row_stop": hi},
        )
    paths["virtual"] = folder / "virtual.h5"
    multihost.assemble(paths["virtual"], shards)
    return paths


RANGES = [(0, 500), (0, 65), (65, 130), (7, 300), (64, 66), (455, 500), (490, 500), (499, 900)]


@pytest.mark.parametrize("kind", ["float32", "float16", "virtual"])
def test_read_into_equals_read_for_any_range(stores, kind):
    with SplitReader(stores[kind], "train") as reader:
        want_rows = {"float32": 65, "float16": 131, "virtual": 65}[kind]
        assert reader.chunk_rows_hint == want_rows
        dtype = np.dtype(reader.info.feature_dtype)
        features = np.full((600, 4000), -1, dtype)  # reused for every range, larger than needed
        labels = np.full(600, -1, np.int32)
        for start, stop in [*RANGES, (500, 500), (500, 600)]:
            n = reader.read_into(start, stop, features, labels)
            want_x, want_y = reader.read(start, stop)
            assert n == want_x.shape[0] == min(stop, 500) - start
            np.testing.assert_array_equal(features[:n], want_x)
            np.testing.assert_array_equal(labels[:n], want_y)
        features[:], labels[:] = -1, -1
        n = reader.read_into(10, 20, features, labels)
        assert (features[n:] == -1).all() and (labels[n:] == -1).all()  # rows past n untouched


def test_read_into_streams_whole_chunks_into_one_buffer(stores):
    with SplitReader(stores["float32"], "train") as reader:
        rows = 3 * reader.chunk_rows_hint
        features, labels = np.empty((rows, 4000), np.float32), np.empty(rows, np.int32)
        parts, start = [], 0
        while n := reader.read_into(start, start + rows, features, labels):
            parts.append((features[:n].copy(), labels[:n].copy()))
            start += n
        x, y = reader.read()
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    assert [p[0].shape[0] for p in parts] == [195, 195, 110]


def test_read_into_refuses_buffers_it_cannot_fill(stores):
    with SplitReader(stores["float16"], "train") as reader:
        labels = np.empty(100, np.int32)
        bad = {
            "dtype float16": np.empty((100, 4000), np.float32),
            r"shape \[>= 100, 4000\]": np.empty((99, 4000), np.float16),
            r"shape \[>= 100, 4000\], got \(100, 3999\)": np.empty((100, 3999), np.float16),
            "C-contiguous": np.empty((100, 8000), np.float16)[:, ::2],
        }
        for message, features in bad.items():
            with pytest.raises(ValueError, match=message):
                reader.read_into(0, 100, features, labels)
        features = np.empty((100, 4000), np.float16)
        with pytest.raises(ValueError, match="labels_out must be a numpy array of dtype int32"):
            reader.read_into(0, 100, features, np.empty(100, np.int64))
        with pytest.raises(ValueError, match=r"not a range inside \[0, 500\]"):
            reader.read_into(501, 600, features, labels)
        with pytest.raises(ValueError, match="not a range"):
            reader.read_into(10, 5, features, labels)


def test_read_into_turns_a_flipped_byte_into_a_store_error(tmp_path):
    path = tmp_path / "f.h5"
    x = np.random.default_rng(0).normal(size=(300, 4000)).astype(np.float32)
    store.write_split(path, "train", x, np.arange(300) % 2, num_classes=2)
    with h5py.File(path, "r") as f:
        chunk = f["train/features"].id.get_chunk_info(2)  # rows 130:195
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    features, labels = np.empty((65, 4000), np.float32), np.empty(65, np.int32)
    with SplitReader(path, "train") as reader:
        assert reader.read_into(65, 130, features, labels) == 65  # an intact chunk reads
        np.testing.assert_array_equal(features, x[65:130])
        with pytest.raises(StoreError, match=r"checksum.*features\[130:195\].*corrupt"):
            reader.read_into(130, 195, features, labels)


def test_the_chunk_shape_depends_on_the_dimension_and_dtype_never_on_the_row_count(tmp_path):
    """A chunk of N rows would publish N through every read size (and did: the head's chunk
    cap was a multiple of it). Datasets are resizable, so a chunk may exceed the split."""
    chunks = set()
    for n in (1, 2, 300, 301, 5000):
        rng = np.random.default_rng(n)
        path = tmp_path / f"{n}.h5"
        store.write_split(
            path, "train", rng.normal(size=(n, 5)), rng.integers(0, 2, n), num_classes=2
        )
        with SplitReader(path, "train") as reader:
            chunks.add(reader.chunk_rows_hint)
            np.testing.assert_array_equal(reader.read()[1], store.read_split(path, "train")[1])
        with h5py.File(path, "r") as f:
            chunks.add(f["train/features"].chunks)
    assert chunks == {(1 << 20) // 20, ((1 << 20) // 20, 5)}
