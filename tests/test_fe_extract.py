"""End-to-end extraction: a mocked TFDS dataset through a ViT, digits + pixels via the CLI,
identity refusals, overwrite semantics, row ranges and data parallelism over several devices."""

import os
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from feature_extract import datasets, extract, load_backbone, preprocess, store
from feature_extract.__main__ import main
from feature_extract.arguments import parse_splits
from feature_extract.extraction import Extractor, identity_attrs, plan_split, run_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits_pixels(split):
    """Independent reference: digits images scaled to [0, 1] and flattened, labels, ids."""
    source = datasets.open_source("digits", split)
    images, labels, ids = source.get(range(len(source)))
    return np.stack(images).reshape(len(source), -1) / np.float32(255), labels, ids


def _read(path, split):
    with store.SplitReader(path, split) as reader:
        x, y = reader.read()
        return x, y, reader.ids(), reader.info


def test_mock_tfds_through_vit_matches_direct_apply(tmp_path):
    backbone = load_backbone("vit-mu16", init_random=True, dtype=jnp.float32)
    out = tmp_path / "mock.h5"
    with tfds.testing.mock_data(num_examples=10):
        infos = extract(
            "cifar10",
            backbone,
            out,
            splits="test,head=train[:50%]",
            batch_size=4,
            dtype="float32",
            progress=False,
            workers=2,
        )
        source = datasets.open_source("cifar10", "test")
        images, labels, ids = source.get(range(len(source)))
        version = str(tfds.builder("cifar10").info.version)
    x, y, stored_ids, info = _read(out, "test")
    prep = preprocess.build("decode|resize(32)|value_range(-1,1)")
    expected = jax.jit(backbone.apply)(backbone.params, np.stack([prep(i) for i in images]))
    np.testing.assert_allclose(x, np.asarray(expected), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(stored_ids, ids)
    assert stored_ids.tolist() == [datasets.hash_id(source._source[i]["id"]) for i in range(10)]
    assert (info.num_rows, info.dim, info.feature_dtype) == (10, 32, "float32")
    assert info.num_classes == 10 and len(info.class_names) == 10
    assert info.attrs["dataset"] == "cifar10" and info.attrs["dataset_version"] == version
    assert info.attrs["backbone"] == "vit-mu16"
    assert info.attrs["preprocessing"] == "decode|resize(32)|value_range(-1,1)"
    assert info.attrs["checkpoint_sha256"] == infos["head"].attrs["checkpoint_sha256"] != ""
    assert infos["head"].attrs["source_split"] == "train[:50%]"


def test_digits_pixels_cli_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "digits.h5")

    def cli(*extra: str) -> int:
        return main(
            ["--data", "digits", "--model", "pixels", "--out", out, "--no-progress", *extra]
        )

    assert cli("--batch-size", "500") == 0
    assert "1438 rows x 192" in capsys.readouterr().out
    for split in ("train", "test"):
        x, y, ids, info = _read(out, split)
        ref_x, ref_y, ref_ids = _digits_pixels(split)
        np.testing.assert_allclose(x, ref_x, rtol=1e-6)
        np.testing.assert_array_equal(y, ref_y)
        np.testing.assert_array_equal(ids, ref_ids)
        assert info.class_names == tuple("0123456789")
        assert info.attrs["preprocessing"] == "decode|value_range(0,1)"
        assert info.attrs["checkpoint_sha256"] == "" and info.attrs["backbone"] == "pixels"

    # Complete: the same command needs --overwrite; with it the content is rewritten identically.
    assert cli() == 2
    assert "already complete; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert cli("--skip-complete") == 0
    assert cli("--skip-complete", "--dtype", "float32") == 2  # another run: still refused
    assert "compute_dtype: store has 'bfloat16'" in capsys.readouterr().err
    assert cli("--splits", "test", "--overwrite", "--output-dtype", "float16") == 0
    x, _, _, info = _read(out, "test")
    assert info.feature_dtype == "float16"
    np.testing.assert_array_equal(x, _digits_pixels("test")[0].astype(np.float16))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no-such-net"], "unknown backbone 'no-such-net'"),
        (["--preprocessing", "resize(8)|blur(2)"], "unknown preprocessing op 'blur'"),
        (["--splits", "train[:10]"], "write name=spec"),
        (["--splits", "validation"], "bad split 'validation'"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, capsys, argv, message):
    base = {"--data": "digits", "--model": "pixels", "--out": str(tmp_path / "f.h5")}
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        base[flag] = value
    args = [a for kv in base.items() for a in kv] + ["--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("error: ")


def test_store_from_another_backbone_or_preprocessing_is_refused(tmp_path, capsys):
    out = str(tmp_path / "f.h5")
    args = ["--data", "digits", "--model", "pixels", "--out", out, "--no-progress"]
    assert main([*args, "--splits", "train"]) == 0
    # train is complete; asking for train+test with other preprocessing must not mix stores.
    assert main([*args, "--preprocessing", "value_range(-1,1)"]) == 2
    assert "preprocessing: store has 'decode|value_range(0,1)'" in capsys.readouterr().err
    # A partial split from another backbone is never appended to.
    source = datasets.open_source("digits", "test")
    other = load_backbone("pixels")
    other.name = "other-pixels"
    attrs = identity_attrs(
        source,
        other,
        "decode|value_range(0,1)",
        output_dtype="float32",
        compute_dtype="bfloat16",
        row_start=0,
        row_stop=len(source),
    )
    writer = store.SplitWriter(
        out, "test", dim=192, total_rows=len(source), num_classes=10, attrs=attrs
    )
    x, y, ids = _digits_pixels("test")
    writer.append(x[:5], y[:5], ids[:5])
    assert main([*args, "--splits", "train,test"]) == 2
    assert "backbone: store has 'other-pixels', this run has 'pixels'" in capsys.readouterr().err
    with h5py.File(out, "r") as f:
        assert f["test"].attrs["rows_written"] == 5  # untouched


def test_row_range_extracts_exactly_those_rows_with_one_compilation(tmp_path):
    out = tmp_path / "part.h5"
    backbone = load_backbone("pixels")
    extractor = Extractor(backbone)
    job = plan_split(
        datasets.open_source("digits", "test"),
        "test",
        backbone,
        extractor.preprocessing,
        output_dtype="float32",
        compute_dtype="bfloat16",
        row_range=(10, 47),
    )
    run_split(job, extractor, str(out), batch_size=8, progress=False)
    # one program, compiled ahead for the batch shape, served every batch (the padded last too)
    assert len(extractor._compiled) == 1 and extractor._forward._cache_size() == 0
    infos = {"test": store.split_info(out, "test")}
    x, y, ids, info = _read(out, "test")
    ref_x, ref_y, ref_ids = _digits_pixels("test")
    np.testing.assert_allclose(x, ref_x[10:47], rtol=1e-6)
    np.testing.assert_array_equal(y, ref_y[10:47])
    np.testing.assert_array_equal(ids, ref_ids[10:47])
    assert (infos["test"].attrs["row_start"], infos["test"].attrs["row_stop"]) == (10, 47)
    per_split = extract(
        "digits", "pixels", tmp_path / "per.h5", row_range={"test": (3, 5)}, progress=False
    )
    assert (per_split["train"].num_rows, per_split["test"].num_rows) == (1438, 2)
    with pytest.raises(ValueError, match="not inside the 359 rows"):
        extract("digits", "pixels", out, splits=["test"], row_range=(300, 400), progress=False)


def test_parse_splits_forms():
    assert [(r.name, r.spec) for r in parse_splits("train, val=train[90%:]")] == [
        ("train", "train"),
        ("val", "train[90%:]"),
    ]
    assert [(r.name, r.spec) for r in parse_splits({"a": "test"})] == [("a", "test")]
    with pytest.raises(ValueError, match="repeat"):
        parse_splits("train,train")


def test_extractor_rounds_batch_to_device_count():
    extractor = Extractor(load_backbone("pixels"))
    n = extractor.num_devices
    assert [extractor.round_batch_size(b) for b in (1, n, n + 1)] == [n, n, 2 * n]


def test_data_parallel_over_four_devices_gives_same_store(tmp_path):
    code = (
        "import jax, sys; from feature_extract import extract; assert jax.device_count() == 4;"
        "extract('digits', 'pixels', sys.argv[1], splits=['test'], batch_size=30, "
        "progress=False)"
    )
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    out = str(tmp_path / "multi.h5")
    subprocess.run(
        [sys.executable, "-c", code, out], env=env, cwd=ROOT, check=True, capture_output=True
    )
    x, y, ids, _ = _read(out, "test")
    ref_x, ref_y, ref_ids = _digits_pixels("test")
    np.testing.assert_allclose(x, ref_x, rtol=1e-6)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(ids, ref_ids)


def test_importing_the_store_loads_no_jax():
    code = (
        "import sys, feature_extract.store, feature_extract; "
        "heavy = [m for m in ('jax', 'flax', 'tensorflow_datasets') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
