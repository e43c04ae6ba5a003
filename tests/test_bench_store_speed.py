"""benchmarks.store_speed runs on a small store and reports the three readers (no timing claims)."""

from benchmarks import store_speed


def test_store_only_pass_reports_raw_read_and_into(tmp_path, capsys):
    result = store_speed.main(
        ["--rows", "3000", "--dim", "768", "--classes", "3", "--chunk-rows", "1000"]
        + ["--store-only", "--dir", str(tmp_path)]
    )
    assert result["chunk_rows"] == 682  # rounded down to a multiple of the 341-row HDF5 chunks
    for name in ("raw_read", "reader_read", "read_into"):
        assert result[f"{name}_s"] > 0 and result[f"{name}_gb_s"] > 0
    assert result["read_into_over_raw"] > 0 and "streamed_gradient_s" not in result
    assert "SplitReader.read_into" in capsys.readouterr().out
