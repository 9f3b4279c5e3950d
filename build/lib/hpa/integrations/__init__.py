"""Other tools: Weights & Biases logging, ONNX export and inference, class activation maps."""
