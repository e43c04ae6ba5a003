"""benchmarks.store_speed runs on a small store and reports every pass (no timing claims)."""

from benchmarks import store_speed

READERS = ("raw_read", "reader_read", "read_into")
STREAMED = ("streamed_read", "streamed_single_step", "streamed_gradient")


def test_store_only_pass_reports_raw_read_and_into(tmp_path, capsys):
    result = store_speed.main(
        ["--rows", "3000", "--dim", "768", "--classes", "3", "--chunk-rows", "1000"]
        + ["--store-only", "--dir", str(tmp_path)]
    )
    assert result["chunk_rows"] == 682  # rounded down to a multiple of the 341-row HDF5 chunks
    for name in READERS:
        assert result[f"{name}_s"] > 0 and result[f"{name}_gb_s"] > 0
    assert result["read_into_over_raw"] > 0
    assert not any(key.startswith("streamed") for key in result)
    assert "SplitReader.read_into" in capsys.readouterr().out


def test_streamed_passes_through_open_rows(tmp_path, capsys):
    result = store_speed.main(
        ["--rows", "2000", "--dim", "64", "--classes", "3", "--chunk-rows", "512"]
        + ["--dir", str(tmp_path)]
    )
    for name in READERS + STREAMED:
        assert result[f"{name}_s"] > 0 and result[f"{name}_gb_s"] > 0
    for name in READERS[1:] + STREAMED:
        assert result[f"{name}_over_raw"] > 0
    out = capsys.readouterr().out
    assert "raw h5py read" in out and "SplitReader.read_into" in out
    assert "single-step pass (ZeroInitSums)" in out and "gradient pass (GradientSums)" in out


def test_streamed_rows_are_the_store_path_with_the_chunk_size(tmp_path):
    path = str(tmp_path / "s.h5")
    store_speed.write_random_store(path, 1500, 16, 4)
    rows = store_speed.streamed_rows(path, 4, 256)
    assert rows.kind == "store_streamed" and rows.chunk_rows == 256 and rows.dim == 16
