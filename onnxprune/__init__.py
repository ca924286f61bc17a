"""onnxprune: framework-agnostic structured pruning of ONNX models."""

__version__ = "0.1.0"
