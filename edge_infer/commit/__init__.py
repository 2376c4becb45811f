"""Committing results: the writer and its durability helpers."""
