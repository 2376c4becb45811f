"""torch weights -> ONNX fp32 -> calibrated int8 -> verified, with manifests (needs the export extra)."""
