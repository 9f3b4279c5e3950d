"""Bridges from hpa models to other tools: ONNX export and inference, class activation maps."""
