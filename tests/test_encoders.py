"""Encoders: registry, the tiny test model, EfficientNet-Lite on onnxruntime, ImageBind's clear failures."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from shoplens.encoders import EncoderError, UnknownEncoderError, create_encoder, list_encoders
from shoplens.encoders.imagebind import download_checkpoint, preprocess, verify_checkpoint
from shoplens.encoders.preprocess import fit_square


def test_unknown_encoder_lists_the_known_ones():
    with pytest.raises(UnknownEncoderError) as err:
        create_encoder("clip-vit-b32")
    assert "efficientnet-lite0" in str(err.value) and "tiny" in str(err.value)
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "imagebind", "tiny"} <= set(list_encoders())


def test_creating_encoders_loads_no_weights():
    enc = create_encoder("efficientnet-lite0")
    assert enc._session is None and enc.dim == 1280
    assert create_encoder("imagebind")._model is None


def test_tiny_encoder_is_exact_and_deterministic():
    enc = create_encoder("tiny")
    red, blue = Image.new("RGB", (30, 20), (255, 0, 0)), Image.new("RGB", (30, 20), (0, 0, 255))
    a, b = enc.embed_batch([red, blue])
    expected = np.tile([0.5, -0.5, -0.5], 16) / np.linalg.norm(np.tile([0.5, -0.5, -0.5], 16))
    assert np.allclose(a, expected, atol=1e-6)
    assert np.allclose(enc.embed(red), a) and float(a @ b) < 0.5
    assert enc.embed_batch([]).shape == (0, 48)


def test_fit_square_crop_and_pad():
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 20, 100))  # a black stripe on the left edge
    crop = fit_square(img, 50, "crop")
    pad = fit_square(img, 50, "pad")
    assert crop.size == pad.size == (50, 50)
    assert np.asarray(crop)[25, 0].mean() > 200  # the stripe is cut away
    assert np.asarray(pad)[25, 0].mean() < 50 and np.asarray(pad)[2, 25].mean() > 200  # kept, padded in white
    with pytest.raises(ValueError, match="fit"):
        fit_square(img, 50, "stretch")


def test_trim_cuts_plain_margins_and_nothing_else():
    from shoplens.encoders.preprocess import trim_margins

    shot = Image.new("RGB", (300, 400), (252, 252, 252))  # a catalog shot: a product amid wide white margins
    shot.paste((200, 30, 40), (100, 120, 200, 300))
    trimmed = trim_margins(shot)
    assert trimmed.size == (100 + 2 * 6, 180 + 2 * 8)  # the product plus 2 % of the photo each side
    assert np.asarray(trimmed)[trimmed.height // 2, trimmed.width // 2].tolist() == [200, 30, 40]
    busy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    assert trim_margins(busy) is busy  # no plain border: the very same photo, so the same vector
    assert trim_margins(Image.new("RGB", (50, 50), (255, 255, 255))).size == (50, 50)  # blank: unchanged
    square = fit_square(shot, 64, "trim")
    assert square.size == (64, 64) and np.asarray(square)[32, 32].tolist() == [200, 30, 40]
    # The product fills the trimmed square (about 0.9 of its height) but under half of the plain crop.
    red = lambda img: (np.asarray(img)[..., 1] < 100).mean()  # noqa: E731
    assert red(square) > 0.45 > red(fit_square(shot, 64, "crop"))
    assert create_encoder("efficientnet-lite0", fit="trim").version != create_encoder("efficientnet-lite0").version


def test_imagebind_preprocessing_matches_the_official_transform():
    # torchvision's Resize(224) keeps int(224 * long / short) and CenterCrop rounds the offset.
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 451, 3), dtype=np.uint8))
    arr = preprocess(img)
    ref = img.resize((int(224 * 451 / 300), 224), Image.BICUBIC)
    left = int(round((ref.size[0] - 224) / 2.0))
    ref = np.asarray(ref.crop((left, 0, left + 224, 224)), np.float32) / 255
    ref = (ref - [0.48145466, 0.4578275, 0.40821073]) / [0.26862954, 0.26130258, 0.27577711]
    assert arr.shape == (3, 224, 224) and np.allclose(arr, ref.transpose(2, 0, 1), atol=1e-5)


def test_imagebind_without_its_package_says_what_to_install():
    pytest.importorskip("torch")
    try:
        import imagebind  # noqa: F401
        pytest.skip("imagebind is installed here")
    except ImportError:
        pass
    with pytest.raises(EncoderError, match="requirements-gpu.txt"):
        create_encoder("imagebind").embed(Image.new("RGB", (8, 8)))


def test_imagebind_download_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path))
    import time

    started = time.time()
    with pytest.raises(EncoderError, match="could not download"):
        download_checkpoint(tmp_path / "ib.pth", url="http://127.0.0.1:9/imagebind_huge.pth", timeout=3)
    assert time.time() - started < 10 and list(tmp_path.iterdir()) == []  # no checkpoint, no temporary file


def test_imagebind_checkpoint_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "ib.pth"
    ckpt.write_bytes(b"x" * 100)
    with pytest.raises(EncoderError, match="not 4,803,584,173"):
        verify_checkpoint(ckpt)
    with pytest.raises(EncoderError, match="does not match"):
        verify_checkpoint(ckpt, expected_bytes=100, expected_sha256="0" * 64)
    verify_checkpoint(ckpt, expected_bytes=100, expected_sha256=hashlib.sha256(b"x" * 100).hexdigest())


def test_efficientnet_onnx_agrees_with_pytorch(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from shoplens.encoders.efficientnet import feature_module, load_torch_model

    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path))  # export afresh, as a new user would
    enc = create_encoder("efficientnet-lite0")
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (180 + 40 * i, 240, 3), dtype=np.uint8)) for i in range(3)]
    onnx_vecs = enc.embed_batch(images)
    assert enc.onnx_path().exists() and str(tmp_path) in str(enc.onnx_path())
    with torch.no_grad():
        ref = feature_module(load_torch_model("efficientnet-lite0"))(
            torch.from_numpy(np.stack([enc.preprocess(i) for i in images]))).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert onnx_vecs.shape == (3, 1280)
    assert np.abs(onnx_vecs - ref).max() < 1e-4
    assert np.allclose(np.linalg.norm(onnx_vecs, axis=1), 1, atol=1e-5)


def test_efficientnet_finds_the_same_product(datasets_dir):
    from shoplens.images import load_image

    folder = datasets_dir / "fashion-images" / "data" / "Footwear_Men" / "Images" / "images_with_product_ids"
    paths = sorted(folder.glob("*.jpg"))[:6]
    enc = create_encoder("efficientnet-lite0")
    vecs = enc.embed_batch([load_image(p) for p in paths])
    shifted = enc.embed(load_image(paths[0]).rotate(8, fillcolor=(255, 255, 255)))  # a phone shot, slightly tilted
    assert int(np.argmax(vecs @ shifted)) == 0
