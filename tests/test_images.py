"""images:DIR data: standard preprocessing, layouts, labels from sub-folders, clear errors."""

import sys

import numpy as np
import pytest

from onnxprune.data import load_data
from onnxprune.errors import DataError
from onnxprune.images import IMAGENET_MEAN, IMAGENET_STD, ImageOptions
from onnxprune.model import load_model

from .conftest import MODELS
from .test_cli import assert_clean_failure, run

PIL = pytest.importorskip("PIL.Image")


def write_images(folder, colors, size=(40, 30), sub=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(colors):
        d = folder / sub[i] if sub else folder
        d.mkdir(exist_ok=True)
        PIL.new("RGB", size, tuple(c)).save(d / f"img{i}.png")


def expected(color, order="rgb"):
    v = (np.array(color, np.float32) / 255 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return v[::-1] if order == "bgr" else v


def test_constant_images_normalize_exactly(tmp_path):
    colors = [(255, 0, 0), (10, 200, 30), (0, 0, 255)]
    write_images(tmp_path / "im", colors)
    model = load_model(MODELS / "mobilenetv2.onnx")  # input [N, 3, 32, 32]
    ds = load_data(f"images:{tmp_path / 'im'}", model, batch_size=2)
    assert ds.samples == 3 and len(ds.batches) == 2
    batch = np.concatenate([b["input"] for b in ds.batches])
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == np.float32
    for img, c in zip(batch, colors):
        np.testing.assert_allclose(img, np.broadcast_to(expected(c)[:, None, None], img.shape), atol=1e-5)


def test_nhwc_bgr_layout(tmp_path):
    write_images(tmp_path / "im", [(255, 128, 0)])
    model = load_model(MODELS / "mobilenetv2.onnx")
    opts = ImageOptions(size=32, layout="nhwc", channel_order="bgr")
    with pytest.raises(DataError, match="3 channels|channels"):
        load_data(f"images:{tmp_path / 'im'}", model, image_options=opts)  # the model is NCHW: 3 != 32
    opts = ImageOptions(size=32, channel_order="bgr")
    (b,) = load_data(f"images:{tmp_path / 'im'}", model, image_options=opts).batches
    np.testing.assert_allclose(b["input"][0, :, 5, 5], expected((255, 128, 0), "bgr"), atol=1e-5)


def test_labels_from_sub_folders(tmp_path):
    write_images(tmp_path / "im", [(1, 2, 3)] * 4, sub=["cat", "dog", "cat", "ant"])
    model = load_model(MODELS / "mobilenetv2.onnx")
    ds = load_data(f"images:{tmp_path / 'im'}", model, labels_key="folder")
    # files sorted by path: ant/img3, cat/img0, cat/img2, dog/img1
    assert list(ds.labels) == [0, 1, 1, 2]
    with pytest.raises(DataError, match="sub-folder"):
        write_images(tmp_path / "flat", [(1, 2, 3)])
        load_data(f"images:{tmp_path / 'flat'}", model, labels_key="folder")


def test_bad_image_folders(tmp_path):
    model = load_model(MODELS / "mobilenetv2.onnx")
    with pytest.raises(DataError, match="no such folder"):
        load_data(f"images:{tmp_path / 'missing'}", model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_data(f"images:{tmp_path / 'empty'}", model)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"not a jpeg")
    ds = load_data(f"images:{tmp_path / 'broken'}", model)
    with pytest.raises(DataError, match="cannot read as an image"):
        ds.batches[0]
    with pytest.raises(DataError, match="spatial"):
        write_images(tmp_path / "ok", [(1, 2, 3)])
        load_data(f"images:{tmp_path / 'ok'}", model, image_options=ImageOptions(size=64))


def test_missing_pillow_is_a_clear_error(tmp_path, monkeypatch):
    write_images(tmp_path / "im", [(1, 2, 3)])
    monkeypatch.setitem(sys.modules, "PIL", None)
    ds = load_data(f"images:{tmp_path / 'im'}", load_model(MODELS / "mobilenetv2.onnx"))
    with pytest.raises(DataError, match="needs Pillow"):
        ds.batches[0]


def test_cli_prune_calibrates_on_images(tmp_path):
    rng = np.random.default_rng(0)
    write_images(tmp_path / "im", rng.integers(0, 256, (6, 3)))
    out = tmp_path / "out.onnx"
    code, stdout, err = run("prune", MODELS / "mobilenetv2.onnx", "-o", out, "--ratio", "0.3", "--criterion",
                            "activation", "--calib", f"images:{tmp_path / 'im'}", "--batch-size", "4", "--json")
    assert code == 0, err
    import json

    report = json.loads(stdout)
    assert report["calibration"]["samples"] == 6
    assert report["validation"]["samples"] == 6
    assert out.exists()
    code, _, err = run("prune", MODELS / "mobilenetv2.onnx", "-o", out, "--ratio", "0.3", "--criterion", "wanda",
                       "--calib", f"images:{tmp_path / 'im'}", "--mean", "1,2")
    assert_clean_failure(code, err, 11, "--mean")
