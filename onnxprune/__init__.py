"""onnxprune: framework-agnostic structured pruning of ONNX models.

    import onnxprune
    info = onnxprune.inspect("model.onnx")
    result = onnxprune.prune("model.onnx", ratio=0.3, criterion="l2")
    result.save("small.onnx")
"""

__version__ = "0.1.0"

from .api import PruneResult, apply, inspect, prune  # noqa: E402
from .validate import validate  # noqa: E402
from .errors import OnnxPruneError  # noqa: E402
from .plan import Plan  # noqa: E402

__all__ = ["inspect", "prune", "apply", "validate", "PruneResult", "Plan", "OnnxPruneError", "__version__"]
