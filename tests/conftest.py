import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
sys.path.insert(0, str(ROOT))

# Fixtures with no ORT kernel for some op: analysis only.
ANALYSIS_ONLY = {"custom_op.onnx"}


def fixture_paths(runnable_only=True):
    paths = sorted(MODELS.glob("*.onnx"))
    if runnable_only:
        paths = [p for p in paths if p.name not in ANALYSIS_ONLY]
    return paths


@pytest.fixture
def models_dir():
    return MODELS
