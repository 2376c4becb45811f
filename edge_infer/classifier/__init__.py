"""The model: the onnxruntime session, its manifest, post-processing, the self-test and hot reload
(its preprocessing is ``decoding.preprocess``)."""
