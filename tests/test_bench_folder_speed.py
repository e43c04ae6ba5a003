"""The folder-reader throughput benchmark on a tiny folder: every stage measured, bad input one
line."""

from benchmarks import folder_speed


def test_every_stage_is_measured_on_a_tiny_folder(tmp_path, capsys):
    assert folder_speed.main(["--images", "12", "--size", "16", "--classes", "3", "--repeats", "1",
                              "--dir", str(tmp_path / "imgs")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("wrote 12 JPEGs of 16x16 px in 3 class folders")
    rates = {line[:42].strip(): float(line[42:]) for line in lines[1:]}
    assert list(rates) == [
        "listing (files/s)",
        "check, --skip-unreadable (images/s)",
        "read + decode + resize(28) (images/s)",
        "end to end, extract(scatnet) (images/s)",
    ]
    assert all(rate > 0 for rate in rates.values())
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [
        "class000",
        "class001",
        "class002",
    ]


def test_a_folder_that_is_not_empty_is_refused(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert folder_speed.guard(folder_speed.main, ["--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not empty" in err and (tmp_path / "x").exists()
