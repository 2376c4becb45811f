"""Decoding images: the sandboxed decoder processes and everything that parses image bytes."""
