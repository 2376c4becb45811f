"""Parsers of what a user writes, each within the bounds it states (``bounded_yaml.py``)."""
