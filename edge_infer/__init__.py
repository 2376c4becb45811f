"""edge-infer: an int8 MobileNetV2 image classification daemon for small edge devices."""

__version__ = "0.1.0"
