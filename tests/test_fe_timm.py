"""timm ViT checkpoints (``feature_extract/families/timm_vit.py``): parity with timm on the
fixtures made by ``tests/data/make_timm_fixtures.py`` (no torch needed here), the name map, the
position-grid resampling, loading by name from the cache, a hub-like download (redirect, resume)
from a local server, the offline error, and mismatched or damaged files."""

import hashlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feature_extract import checkpoint, download, registry, timm_convert

DATA = Path(__file__).parent / "data" / "timm"
FIXTURES = ("dinov2", "dinov2_reg4", "dinov2_giant_reg4", "clip_openai", "clip_laion", "siglip")
DINOV2 = "timm:vit_small_patch14_dinov2.lvd142m"


def _reference(fixture: str) -> dict:
    with np.load(DATA / f"{fixture}.npz") as f:
        ref = {k: f[k] for k in f.files}
    ref["name"], ref["config"] = str(ref["name"]), json.loads(str(ref["config"]))
    return ref


def _images(size: int) -> np.ndarray:
    """The fixture images cropped to ``size``, after ``value_range(0,1)`` (the model
    normalises them with the entry's mean and std)."""
    with np.load(DATA / "images.npz") as f:
        return f["images"][:, :size, :size].astype(np.float32) / 255


def _load(fixture: str, size: int, name: str | None = None, config: dict | None = None, **kw):
    """The fixture's registry entry at its tiny sizes (``config`` changes more), ``size`` px;
    ``url=`` replaces the entry's URL, other keywords go to ``load_backbone``."""
    ref = _reference(fixture)
    kw.setdefault("checkpoint", str(DATA / f"{fixture}.safetensors"))
    overrides = {"config": {**ref["config"], **(config or {})}}
    if "url" in kw:
        overrides["url"] = kw.pop("url")
    return registry.load_backbone(
        name or ref["name"],
        dtype=jnp.float32,
        resolution=size,
        spec_overrides=overrides,
        **kw,
    )


def _features(backbone, size: int) -> np.ndarray:
    return np.asarray(jax.jit(backbone.apply)(backbone.params, _images(size)))


def _agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(smallest cosine over the images, largest |difference| / largest |want|)."""
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(cos.min()), float(np.abs(got - want).max() / np.abs(want).max())


CASES = [(f, int(s)) for f in FIXTURES for s in _reference(f)["sizes"]]


@pytest.mark.parametrize("fixture, size", CASES)
def test_features_match_timm(fixture, size):
    """Cosine >= 0.99999 per image, and every coordinate within 1e-5 of the features' scale
    (what a tanh-for-erf GELU or a 1e-6-for-1e-5 LayerNorm epsilon would break). The DINOv2
    fixtures are made at 56 px; 42 and 70 px exercise the resampled position grid."""
    backbone = _load(fixture, size)
    want = _reference(fixture)[f"features_{size}"]
    got = _features(backbone, size)
    assert got.shape == want.shape == (3, backbone.feature_dim)
    cosine, deviation = _agreement(got, want)
    assert cosine >= 0.99999 and deviation <= 1e-5, (cosine, deviation)


@pytest.mark.parametrize(
    "fixture, size, config",
    [
        ("clip_openai", 48, {"act": "gelu"}),  # OpenAI weights were trained with quick GELU
        ("clip_laion", 48, {"act": "quick_gelu"}),
        ("clip_laion", 48, {"ln_eps": 1e-6}),
        ("siglip", 48, {"act": "gelu_tanh"}),  # big_vision's GELU, not timm's
        ("dinov2", 56, {"input_mean": (0.5,) * 3, "input_std": (0.5,) * 3}),
    ],
)
def test_parity_tells_the_family_details_apart(fixture, size, config):
    backbone = _load(fixture, size, config=config)
    cosine, deviation = _agreement(
        _features(backbone, size), _reference(fixture)[f"features_{size}"]
    )
    assert deviation > 1e-4, (cosine, deviation)


def test_grid_resampling_is_timms_bicubic_not_bilinear(monkeypatch):
    monkeypatch.setattr(timm_convert, "resample_grid", checkpoint.resample_posemb)
    backbone = _load("dinov2", 42)
    cosine, _ = _agreement(_features(backbone, 42), _reference("dinov2")["features_42"])
    assert cosine < 0.999


def test_name_map_splits_fused_projections_and_folds_prefix_positions():
    d, heads = 4, 2
    rng = np.random.default_rng(0)
    state = {
        "cls_token": rng.normal(size=(1, 1, d)),
        "pos_embed": rng.normal(size=(1, 1 + 9, d)),  # the cls position first, then 3 x 3
        "blocks.0.attn.qkv.weight": rng.normal(size=(3 * d, d)),
        "blocks.0.attn.qkv.bias": rng.normal(size=(3 * d,)),
        "blocks.0.attn.proj.weight": rng.normal(size=(d, d)),
        "blocks.0.norm1.weight": rng.normal(size=(d,)),
        "blocks.0.ls2.gamma": rng.normal(size=(d,)),
        "attn_pool.kv.weight": rng.normal(size=(2 * d, d)),
        "head.weight": rng.normal(size=(5, d)),
        "mask_token": rng.normal(size=(1, d)),
        "some.other.weight": rng.normal(size=(3,)),
    }
    attn = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0"
    pool = "MAPHead_0/MultiHeadDotProductAttention_0"
    template = {
        f"{attn}/query/kernel": jax.ShapeDtypeStruct((d, heads, d // heads), jnp.float32),
        f"{pool}/query/kernel": jax.ShapeDtypeStruct((d, heads, d // heads), jnp.float32),
        "pos_embedding": jax.ShapeDtypeStruct((1, 9, d), jnp.float32),
    }
    out = timm_convert.to_vit(state, template)
    w, b = state["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.bias"]
    for s, name in enumerate(("query", "key", "value")):
        for h in range(heads):
            for j in range(d // heads):
                row = s * d + h * (d // heads) + j
                np.testing.assert_array_equal(out[f"{attn}/{name}/kernel"][:, h, j], w[row])
                assert out[f"{attn}/{name}/bias"][h, j] == b[row]
    proj = state["blocks.0.attn.proj.weight"]
    np.testing.assert_array_equal(out[f"{attn}/out/kernel"][1, 0], proj[:, 1 * (d // heads)])
    np.testing.assert_array_equal(
        out[f"{pool}/value/kernel"][:, 0, 1], state["attn_pool.kv.weight"][d + 1]
    )
    np.testing.assert_allclose(out["cls"], state["cls_token"] + state["pos_embed"][:, :1])
    np.testing.assert_allclose(out["pos_embedding"], state["pos_embed"][:, 1:])
    assert out["Transformer/encoderblock_0/LayerNorm_0/scale"] is state["blocks.0.norm1.weight"]
    assert out["Transformer/encoderblock_0/LayerScale_1/scale"] is state["blocks.0.ls2.gamma"]
    assert "some.other.weight" in out  # unknown: kept, so the mismatch report lists it
    assert not any(k.startswith("head") or k == "mask_token" for k in out)


def test_registered_names_carry_their_family():
    def spec(name):
        return registry.get_spec("timm:" + name)

    dims = {"small": 768, "base": 1536, "large": 2048, "giant": 3072}
    for size, dim in dims.items():
        for reg in ("", "_reg4"):
            s = spec(f"vit_{size}_patch14{reg}_dinov2.lvd142m")
            assert registry.spec_feature_dim(s) == dim and s.resolution == 224
            assert s.config["patch"] == 14 and s.config["layer_scale"]
            assert s.config["num_registers"] == (4 if reg else 0)
            assert s.config["act"] == ("swiglu" if size == "giant" else "gelu")
            assert s.config["input_mean"] == (0.485, 0.456, 0.406)
    for name, act, dim in [
        ("vit_base_patch16_clip_224.openai", "quick_gelu", 768),
        ("vit_large_patch14_clip_224.openai", "quick_gelu", 1024),
        ("vit_base_patch16_clip_224.laion2b", "gelu", 768),
        ("vit_large_patch14_clip_224.laion2b", "gelu", 1024),
    ]:
        s = spec(name)
        assert s.config["act"] == act and registry.spec_feature_dim(s) == dim
        assert s.config["pre_norm"] and not s.config["embedding_bias"]
        assert s.config["ln_eps"] == 1e-5
    for tag in ("webli", "v2_webli"):
        s = spec(f"vit_base_patch16_siglip_224.{tag}")
        assert s.config["pool_type"] == "map" and s.config["input_std"] == (0.5, 0.5, 0.5)
        assert s.preprocessing == "resize_small(248)|central_crop(224)|value_range(0,1)"
    for name in registry.list_backbones():
        if name.startswith("timm:"):
            s = registry.get_spec(name)
            assert s.url == f"https://huggingface.co/timm/{name[5:]}/resolve/main/model.safetensors"
            assert s.filename == f"{name[5:]}.safetensors" and "feature:" in s.description


def test_a_resolution_scales_the_resize_with_the_crop():
    backbone = _load("dinov2", 56)
    assert backbone.preprocessing == "resize_small(64)|central_crop(56)|value_range(0,1)"
    assert backbone.params["pos_embedding"].shape == (1, 16, 16)


def test_loads_by_name_from_the_cache_without_network(tmp_path):
    cached = tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors"
    shutil.copy(DATA / "dinov2.safetensors", cached)
    backbone = _load("dinov2", 56, checkpoint=None, cache_dir=str(tmp_path), download=False)
    assert backbone.checkpoint == str(cached)
    assert backbone.checkpoint_sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert (tmp_path / (cached.name + ".sha256")).exists()
    cosine, deviation = _agreement(_features(backbone, 56), _reference("dinov2")["features_56"])
    assert cosine >= 0.99999 and deviation <= 1e-5


def test_offline_error_names_the_hub_url_and_the_cache_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="downloading is off") as err:
        registry.load_backbone(DINOV2, cache_dir=str(tmp_path), download=False)
    url = registry.get_spec(DINOV2).url
    dest = str(tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors")
    assert url in str(err.value) and dest in str(err.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the block ends
    closed = f"http://127.0.0.1:{port}/timm/vit_small_patch14_dinov2.lvd142m/model.safetensors"
    with pytest.raises(download.DownloadError) as err:
        registry.load_backbone(DINOV2, cache_dir=str(tmp_path), spec_overrides={"url": closed})
    assert closed in str(err.value) and dest in str(err.value) and "--checkpoint" in str(err.value)


def test_a_checkpoint_of_another_family_is_a_mismatch():
    clip = "timm:vit_base_patch16_clip_224.openai"
    with pytest.raises(checkpoint.CheckpointMismatchError) as err:
        _load("dinov2", 48, name=clip)  # DINOv2's sizes: only the families' parts differ
    msg = str(err.value)
    assert "does not match the model" in msg
    assert "Transformer/encoder_prenorm/scale" in msg  # CLIP's pre-norm, missing
    assert "Transformer/encoderblock_0/LayerScale_0/scale" in msg  # DINOv2's, unexpected
    assert "embedding/kernel: file (14, 14, 3, 16) vs model (16, 16, 3, 16)" in msg
    with pytest.raises(checkpoint.CheckpointMismatchError, match="MAPHead_0/probe"):
        _load("siglip", 56, name=DINOV2)


def test_damaged_or_foreign_files_are_clear_errors(tmp_path):
    good = (DATA / "dinov2.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.safetensors").write_text("not a checkpoint\n")
    np.savez(tmp_path / "model.npz", cls=np.zeros((1, 1, 16), np.float32))
    for name in ("cut.safetensors", "text.safetensors", "model.npz"):
        with pytest.raises(ValueError, match="is not a readable .safetensors file"):
            _load("dinov2", 56, checkpoint=str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _load("dinov2", 56, checkpoint=str(tmp_path / "missing.safetensors"))


def test_bfloat16_files_load(tmp_path):
    from safetensors.flax import save_file

    state = checkpoint.read_safetensors(str(DATA / "dinov2.safetensors"))
    save_file(
        {k: jnp.asarray(v, jnp.bfloat16) for k, v in state.items()},
        str(tmp_path / "bf16.safetensors"),
    )
    read = checkpoint.read_safetensors(str(tmp_path / "bf16.safetensors"))
    assert read["cls_token"].dtype == jnp.bfloat16
    backbone = _load("dinov2", 56, checkpoint=str(tmp_path / "bf16.safetensors"))
    cosine, _ = _agreement(_features(backbone, 56), _reference("dinov2")["features_56"])
    assert cosine > 0.99


class _Hub(BaseHTTPRequestHandler):
    """``/timm/<model>/resolve/main/model.safetensors`` redirects (302) to ``/blob``, as the hub
    does; ``/blob`` serves ``server.payload`` from a ``Range: bytes=N-`` start, and cuts its first
    answer to ``server.cut`` bytes when set."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        srv = self.server
        if self.path.startswith("/timm/"):
            self.send_response(302)
            self.send_header("Location", "/blob")
            self.end_headers()
            return
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = srv.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            total = len(srv.payload)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut, srv.cut = srv.cut, None
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, *args):
        pass


def test_downloads_through_a_redirect_resumes_and_caches_under_its_name(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    srv.payload = (DATA / "dinov2.safetensors").read_bytes()
    srv.ranges, srv.cut = [], 1000
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    model = "vit_small_patch14_dinov2.lvd142m"
    url = f"http://127.0.0.1:{srv.server_address[1]}/timm/{model}/resolve/main/model.safetensors"
    try:
        with pytest.raises(download.DownloadError, match="run again to resume"):
            _load("dinov2", 56, checkpoint=None, cache_dir=str(tmp_path), url=url)
        backbone = _load("dinov2", 56, checkpoint=None, cache_dir=str(tmp_path), url=url)
    finally:
        srv.shutdown()
        srv.server_close()
    assert srv.ranges == [None, "bytes=1000-"]  # the Range header survives the redirect
    cached = tmp_path / f"{model}.safetensors"
    assert backbone.checkpoint == str(cached) and cached.read_bytes() == srv.payload
    assert backbone.checkpoint_sha256 == hashlib.sha256(srv.payload).hexdigest()
    cosine, _ = _agreement(_features(backbone, 56), _reference("dinov2")["features_56"])
    assert cosine >= 0.99999
