"""Helpers the tests share: plain functions and classes, imported by name (tests.support.daemon,
.images, .fs, ...). Fixtures live in conftest.py files, found by pytest and never imported; no module
imports a test module (tests/unit/test_test_layout.py checks both)."""
