"""The model: the onnxruntime session, its manifest, pre- and post-processing, the self-test and hot reload."""
