import numpy as np
import pytest

from onnxprune.data import load_data
from onnxprune.errors import DataError
from onnxprune.finetune.samples import augmented_image, resolve_augment, samples_of
from onnxprune.images import ImageOptions, load_image, resolve
from onnxprune.model import load_model
from tests.conftest import MODELS

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture
def photo_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        PIL.fromarray(rng.integers(0, 255, (40 + 10 * i, 50, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    return tmp_path


def test_image_samples_decode_and_augment(photo_dir):
    model = load_model(MODELS / "resnet_basic_bn.onnx")
    ds = load_data(f"images:{photo_dir}", model, batch_size=2)
    samples = samples_of(ds)
    assert samples.n == 3 and resolve_augment("auto", samples) == "crop+flip"
    plain = samples.batch(np.array([0, 2]), None, "none")["input"]
    assert plain.shape == (2, 3, 32, 32) and plain.dtype == np.float32
    a = samples.batch(np.array([0, 2]), np.random.default_rng(5), "crop+flip")["input"]
    b = samples.batch(np.array([0, 2]), np.random.default_rng(5), "crop+flip")["input"]
    np.testing.assert_array_equal(a, b)  # seeded
    assert not np.array_equal(a, plain)


def test_flip_only_is_the_mirror_of_the_evaluation_crop(photo_dir):
    options = resolve(ImageOptions(size=32), [None, 3, 32, 32])
    path = sorted(photo_dir.glob("*.png"))[0]
    plain = load_image(path, options)
    for seed in range(6):
        got = augmented_image(path, options, np.random.default_rng(seed), crop=False)
        assert np.allclose(got, plain, atol=1e-5) or np.allclose(got, plain[:, :, ::-1], atol=1e-5)


def test_array_augmentation_rules():
    model = load_model(MODELS / "resnet_basic_bn.onnx")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    samples = samples_of(load_data({"input": x}, model))
    assert resolve_augment("auto", samples) == "none"
    flipped = samples.batch(np.arange(4), np.random.default_rng(1), "flip")["input"]
    for i in range(4):
        assert np.array_equal(flipped[i], x[i]) or np.array_equal(flipped[i], x[i][:, :, ::-1])
    with pytest.raises(DataError, match="image folder"):
        resolve_augment("crop+flip", samples)
