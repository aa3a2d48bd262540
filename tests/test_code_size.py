"""The house limits: no module in pds_jax/ or benchmarks/ over 400 lines, no function over
60 lines of code (docstrings, comments and blank lines excluded; scripts/code_size.py)."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _code_size():
    spec = importlib.util.spec_from_file_location("code_size", os.path.join(ROOT, "scripts", "code_size.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_modules_and_functions_are_within_the_limits():
    assert _code_size().violations() == []


def test_the_counter_sees_a_long_function(tmp_path):
    """The check can fail: a 61-line function in a checked folder is reported."""
    code_size = _code_size()
    package = tmp_path / "pds_jax"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (package / "long.py").write_text(f'def f():\n    """doc"""\n{body}\n    return 0\n')
    assert [v for v in code_size.violations(str(tmp_path)) if "long.py" in v and "f:" in v]
