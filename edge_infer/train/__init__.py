"""``edge-infer train``: fine-tune the pretrained MobileNetV2 on a folder per class, then the export's steps."""
