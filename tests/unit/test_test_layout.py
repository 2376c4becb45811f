"""The tests' own shape, checked: they share helpers through tests/support/ and fixtures through
conftest.py files, which pytest finds by itself. A test module imported by another runs its
module-level code twice under two names; a conftest imported as a module is a second copy of its
fixtures."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _is_forbidden(module: str) -> bool:
    """A conftest or a test module (``test_*``), named by its dotted path."""
    last = module.rsplit(".", 1)[-1]
    return last == "conftest" or last.startswith("test_")


def _imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every module that ``path`` imports, the modules that
    ``from package import name`` may name included; relative imports resolved against ``root``."""
    package = list(path.parent.relative_to(root.parent).parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def violations(root: Path) -> list[str]:
    """Every import of a conftest or a test module by any module under ``root``."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        for line, module in _imported_modules(path, root):
            if _is_forbidden(module):
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {module}")
    return bad


def test_no_module_imports_a_conftest_or_a_test_module():
    assert violations(TESTS) == [], (
        "share helpers from tests/support/ and fixtures from a conftest.py (never imported)")


def test_the_checker_sees_each_kind_of_import(tmp_path):
    root = tmp_path / "tests"
    (root / "faults").mkdir(parents=True)
    (root / "support").mkdir()
    (root / "faults" / "test_a.py").write_text(
        "from tests.conftest import write_images\n"
        "from tests.faults import test_stuck_inputs as stuck\n"
        "from .conftest import metric\n"
        "from ..integration.test_daemon_process import run_cli\n"
        "import tests.unit.test_workers_writer\n"
        "from tests.support.daemon import wait_for\n"  # allowed: a helper
        "from tests.support import images\n")  # allowed
    (root / "support" / "helpers.py").write_text("import conftest\nfrom test_web import TIMEOUT\n")
    assert violations(root) == [
        "tests/faults/test_a.py:1 imports tests.conftest",
        "tests/faults/test_a.py:2 imports tests.faults.test_stuck_inputs",
        "tests/faults/test_a.py:3 imports tests.faults.conftest",
        "tests/faults/test_a.py:4 imports tests.integration.test_daemon_process",
        "tests/faults/test_a.py:5 imports tests.unit.test_workers_writer",
        "tests/support/helpers.py:1 imports conftest",
        "tests/support/helpers.py:2 imports test_web",
    ]
