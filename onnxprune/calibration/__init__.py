"""Calibration: run the model in ONNX Runtime on sample data and reduce what the criteria need to per-channel statistics."""
