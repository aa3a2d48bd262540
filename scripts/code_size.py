"""Module and function sizes of the package and the benchmarks (the house limits).

    python scripts/code_size.py            # list what is over the limits; exit 1 if any

A module may have at most MAX_MODULE_LINES lines; a function at most MAX_FUNCTION_LINES
lines of code, counted from its `def` to its last line, docstring, blank and comment-only
lines excluded. `tests/test_code_size.py` runs the same check.
"""

from __future__ import annotations

import ast
import io
import os
import sys
import tokenize
from typing import Iterator, List, Tuple

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKED = ("pds_jax", "benchmarks")


def python_files(root: str = ROOT) -> Iterator[str]:
    for top in CHECKED:
        for folder, _dirs, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def _code_lines(source: str) -> set:
    """Line numbers that hold code (not blank, not only a comment)."""
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER):
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(node) -> set:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        return set(range(body[0].lineno, body[0].end_lineno + 1))
    return set()


def function_sizes(path: str) -> List[Tuple[str, int, int]]:
    """(qualified name, first line, lines of code) of every function in `path`."""
    with open(path) as f:
        source = f.read()
    code = _code_lines(source)
    tree = ast.parse(source)
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = set(range(child.lineno, child.end_lineno + 1)) & code
                for inner in ast.walk(child):
                    if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                        lines -= _docstring_lines(inner)
                out.append((prefix + child.name, child.lineno, len(lines)))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
    visit(tree, "")
    return out


def violations(root: str = ROOT) -> List[str]:
    found = []
    for path in python_files(root):
        rel = os.path.relpath(path, root)
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_MODULE_LINES:
            found.append(f"{rel}: {n} lines (module limit {MAX_MODULE_LINES})")
        for name, line, size in function_sizes(path):
            if size > MAX_FUNCTION_LINES:
                found.append(f"{rel}:{line} {name}: {size} lines of code (function limit {MAX_FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    problems = violations()
    print("\n".join(problems) if problems else "all modules and functions within the limits")
    sys.exit(1 if problems else 0)
