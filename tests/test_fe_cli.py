"""The feature_extract command line: --help shows every default, --list-models, and bad input of
any kind is one ``error:`` line on stderr with exit status 2 (subprocesses, no network: the
offline test points the download probe at a closed local port)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds

from feature_extract import datasets, netprobe, registry, store
from feature_extract.__main__ import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    ENV.pop(proxy, None)
# The CLI with the download probe aimed at a closed port of this machine: "offline", at once.
OFFLINE = """
import sys
from feature_extract import netprobe
netprobe.endpoints = lambda urls: [("127.0.0.1", int(sys.argv[1]))]
from feature_extract.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def _cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = (
        [sys.executable, "-c", code, *args]
        if code
        else [sys.executable, "-m", "feature_extract", *args]
    )
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def test_help_shows_every_default_and_list_models():
    done = _cli("--help")
    assert done.returncode == 0 and "--list-models" in done.stdout
    parser = build_parser()
    formatter = parser.formatter_class(prog=parser.prog)
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = formatter._get_help_string(action) % {"default": action.default}
        assert "default" in text or "required" in text, action.option_strings


def test_list_models_prints_family_dim_input_preprocessing_and_weights():
    done = _cli("--list-models")
    assert done.returncode == 0 and done.stderr == ""
    lines, notes, name = {}, {}, None
    for line in done.stdout.splitlines()[1:]:
        if line.startswith("    "):  # the description of the row above
            notes[name] = line.strip()
        else:
            name = line.split()[0]
            lines[name] = line.split()
    assert set(lines) == set(registry.list_backbones()) == set(notes)
    assert lines["vit-b16-i21k"][1:5] == [
        "big_vision_vit",
        "768",
        "224px",
        "resize(224)|value_range(-1,1)",
    ]
    assert lines["vit-b16-i21k"][5] == registry.get_spec("vit-b16-i21k").url
    assert lines["bit-m-r50x1"][1:4] == ["bit", "2048", "224px"]
    assert lines["pixels"][2] == "H*W*3" and lines["pixels"][5:7] == ["none", "(no"]
    assert "--init-random" in " ".join(lines["vit-mu16"])
    dinov2, clip = "timm:vit_small_patch14_dinov2.lvd142m", "timm:vit_base_patch16_clip_224.openai"
    assert lines[dinov2][1:5] == [
        "timm_vit",
        "768",
        "224px",
        "resize_small(256)|central_crop(224)|value_range(0,1)",
    ]
    assert lines[dinov2][5] == (
        "https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/model.safetensors"
    )
    assert "[cls token, mean patch token]" in notes[dinov2] and "0.485" in notes[dinov2]
    assert "before the projection" in notes[clip] and "0.48145466" in notes[clip]
    assert "MAP" in notes["timm:vit_base_patch16_siglip_224.v2_webli"]


def test_listed_dims_are_the_models_output_dims():
    known = {"vit-ti16-i21k": 192, "vit-s16-i21k": 384, "vit-l16-i21k": 1024}
    known.update({"siglip-so400m-224": 1152, "bit-m-r101x3": 6144, "bit-m-r152x4": 8192})
    for name, dim in known.items():
        assert registry.spec_feature_dim(registry.get_spec(name)) == dim
    for name in ("vit-mu16", "vit-mu16-map", "bit-tiny-test"):  # built: the dim they really give
        backbone = registry.load_backbone(name, init_random=True, dtype=jnp.float32)
        assert registry.spec_feature_dim(registry.get_spec(name)) == backbone.feature_dim


# The store goes under the test's own directory: a store left in features/ must not change this.
BASE = ["--data", "digits", "--model", "pixels", "--no-progress", "--out", "{tmp}/out.h5"]
TIMM = ["--data", "digits", "--no-progress", "--out", "{tmp}/out.h5", "--model"]
TIMM_DATA = pathlib.Path(ROOT) / "tests" / "data" / "timm"


@pytest.mark.parametrize(
    "args, first_line",
    [
        ([], "error: the following arguments are required: --data, --model"),
        (["--data", "digits"], "error: the following arguments are required: --model"),
        ([*BASE, "--batch-size", "abc"], "error: argument --batch-size: invalid int value"),
        ([*BASE, "--batch-size", "0"], "error: batch_size must be >= 1"),
        ([*BASE, "--dtype", "float64"], "error: argument --dtype: invalid choice"),
        ([*BASE, "--splits", "t=train[:0]"], "error: split 't' (digits:train[:0], rows [0, 0))"),
        (["--data", "digits", "--model", "no-such-net"], "error: unknown backbone 'no-such-net'"),
        (["--data", "cifar1O", "--model", "pixels"], "error: unknown dataset 'cifar1O'"),
        (
            ["--data", "digits", "--model", "vit-mu16", "--checkpoint", "{tmp}/bad.npz"],
            "error: checkpoint '{tmp}/bad.npz' is not a readable .npz archive",
        ),
        (
            ["--data", "digits", "--model", "timm:vit_small_patch14_dinov2"],
            "error: unknown backbone 'timm:vit_small_patch14_dinov2'; did you mean "
            "timm:vit_small_patch14_dinov2.lvd142m,",
        ),
        (
            [*TIMM, "timm:vit_small_patch14_dinov2.lvd142m", "--checkpoint", "{tmp}/bad.npz"],
            "error: checkpoint '{tmp}/bad.npz' is not a readable .safetensors file",
        ),
        (
            [*TIMM, "timm:vit_small_patch14_dinov2.lvd142m", "--checkpoint", "{tmp}/cut.st"],
            "error: checkpoint '{tmp}/cut.st' is not a readable .safetensors file (Error while "
            "deserializing header: incomplete metadata",
        ),
        (
            [*TIMM, "timm:vit_base_patch16_clip_224.openai", "--checkpoint", "{tmp}/dino.st"],
            "error: checkpoint '{tmp}/dino.st' does not match the model: missing",
        ),
        ([*BASE, "--out", "{tmp}"], "error: {tmp} is a directory"),
        ([*BASE, "--out", "{tmp}/bad.npz"], "error: {tmp}/bad.npz is corrupt"),
        (
            ["--data", "cifar10", "--model", "pixels", "--no-download", "--data-dir", "{tmp}/tfds"],
            "error: TFDS dataset 'cifar10' is not prepared in '{tmp}/tfds' and downloading is off",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(tmp_path, args, first_line):
    (tmp_path / "bad.npz").write_text("not an archive\n")
    dinov2 = (TIMM_DATA / "dinov2.safetensors").read_bytes()
    (tmp_path / "dino.st").write_bytes(dinov2)
    (tmp_path / "cut.st").write_bytes(dinov2[: len(dinov2) // 2])
    done = _cli(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(first_line.format(tmp=tmp_path)), done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert not os.path.exists(tmp_path / "tfds")


@pytest.mark.parametrize("model", ["pixels", "scatnet"])
def test_a_weight_free_backbone_refuses_a_checkpoint_before_any_work(tmp_path, model):
    (tmp_path / "w.npz").write_bytes(b"")
    done = _cli(
        "--data",
        "digits",
        "--model",
        model,
        "--checkpoint",
        str(tmp_path / "w.npz"),
        "--out",
        str(tmp_path / "out.h5"),
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"error: backbone {model!r} has no weights (family {model!r} is weight-free), so it "
        "takes no checkpoint: drop --checkpoint (checkpoint=)\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]  # no store, no lock file


# Runs main on each argv of a JSON list in one fresh interpreter; prints, per argv, its exit
# status and the heavy modules imported so far.
IMPORTS_AFTER = """
import json, sys
from feature_extract.__main__ import main
for argv in json.loads(sys.argv[1]):
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    heavy = [m for m in ("jax", "flax", "tensorflow_datasets", "tensorflow") if m in sys.modules]
    print(json.dumps([status, heavy]))
"""


def test_usage_errors_return_before_jax_is_imported(tmp_path):
    base = ["--data", "digits", "--model", "pixels", "--out", str(tmp_path / "out.h5")]
    cases = [
        [],
        ["--data", "digits"],
        [*base, "--batch-size", "abc"],
        [*base, "--batch-size", "0"],
        [*base, "--dtype", "float64"],
        [*base, "--splits", "train[:10]"],
        [*base, "--splits", "a=train,a=test"],
        [*base, "--preprocessing", "resize(8)|blur(2)"],
        [*base, "--bogus"],
    ]
    done = _cli(json.dumps(cases), code=IMPORTS_AFTER)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [[2, []]] * len(cases)
    lines = done.stderr.splitlines()
    assert len(lines) == len(cases) and all(line.startswith("error: ") for line in lines)
    assert not os.path.exists(tmp_path / "out.h5")


def test_unknown_dataset_names_close_matches(tmp_path):
    done = _cli("--data", "cifar1O", "--model", "pixels", "--out", str(tmp_path / "x.h5"))
    assert "did you mean cifar10, cifar100" in done.stderr


def test_offline_tfds_download_fails_at_once_and_creates_nothing(tmp_path):
    port = _closed_port()
    data_dir = tmp_path / "tfds"
    args = ["--data", "cifar10", "--model", "pixels", "--data-dir", str(data_dir)]
    done = _cli(str(port), *args, "--out", str(tmp_path / "c.h5"), code=OFFLINE)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        f"error: cannot reach the download servers of TFDS dataset 'cifar10' (127.0.0.1:{port})"
    )
    assert (
        "tfds build cifar10 --file_format=array_record" in done.stderr
        and "--data-dir" in done.stderr
    )
    assert done.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []  # no TFDS folder, no store, no lock file


def test_a_failed_download_removes_what_it_created_and_keeps_the_rest(tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    (data_dir / "mnist" / "3.0.1").mkdir(parents=True)  # someone else's prepared dataset
    (data_dir / "mnist" / "3.0.1" / "keep.txt").write_text("keep")
    (data_dir / "downloads").mkdir()

    def download_and_prepare(self, **kwargs):  # a download that dies halfway
        (data_dir / "cifar10" / "incomplete.X").mkdir(parents=True)
        (data_dir / "cifar10" / "incomplete.X" / "part.array_record").write_text("half")
        (data_dir / "downloads" / "cifar10.tar.gz.tmp").write_text("half")
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(netprobe, "unreachable", lambda urls: [])
    monkeypatch.setattr(
        tfds.core.dataset_builder.DatasetBuilder, "download_and_prepare", download_and_prepare
    )
    with pytest.raises(datasets.DatasetError, match="downloading TFDS dataset 'cifar10' failed"):
        datasets.open_source("cifar10", "train", data_dir=str(data_dir))
    left = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))
    assert left == ["downloads", "mnist", "mnist/3.0.1", "mnist/3.0.1/keep.txt"]


def test_netprobe_connects_or_names_what_it_cannot_reach(monkeypatch):
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert netprobe.unreachable(points=[("127.0.0.1", port)]) == []
    closed = _closed_port()
    assert netprobe.unreachable(points=[("127.0.0.1", closed)], timeout=1) == [
        f"127.0.0.1:{closed}"
    ]
    assert netprobe.endpoints(
        ["https://a.example/x", "https://a.example/y", "http://b.example"]
    ) == [
        ("a.example", 443),
        ("b.example", 80),
    ]
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert netprobe.endpoints(["https://a.example/x"]) == [("proxy.example", 3128)]


def test_a_damaged_store_is_reported_by_the_cli_in_one_line(tmp_path):
    out = tmp_path / "s.h5"
    store.write_split(out, "train", [[1.0], [2.0]], [0, 1], num_classes=2)
    with open(out, "r+b") as fh:
        fh.truncate(1000)
    done = _cli(*BASE, "--splits", "train", "--out", str(out))
    assert done.returncode == 2 and done.stderr.startswith(f"error: {out} is corrupt")
