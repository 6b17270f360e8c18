"""Exporting a run: safetensors, ONNX (fp32 and int8), manifest, model card, optional wheel."""
