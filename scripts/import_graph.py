"""Which pds_jax module imports which (module-level and function-level imports), as text.

    python scripts/import_graph.py [ROOT]       # ROOT: a checkout (default: this one)

One line per module: `module -> imported pds_jax modules`; a `(f)` marks an import made
inside a function. Benchmarks are listed too, so the layering rule (benchmarks import only
the library, the library never imports pds_jax.modes) can be read off.
"""

from __future__ import annotations

import ast
import os
import sys


def module_name(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return rel[:-9] if rel.endswith(".__init__") else rel


def imports(path: str, package: str):
    tree = ast.parse(open(path).read())
    found = {}
    for node in ast.walk(tree):
        inside = any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in _parents(tree, node))
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("pds_jax"):
                found[name] = found.get(name, False) or inside
    return found


def _parents(tree, target):
    stack = [(tree, [])]
    while stack:
        node, chain = stack.pop()
        if node is target:
            return chain
        for child in ast.iter_child_nodes(node):
            stack.append((child, chain + [node]))
    return []


def graph(root: str):
    modules = {}
    for top in ("pds_jax", "benchmarks"):
        for folder, _dirs, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(folder, f)
                    modules[module_name(root, path)] = path
    known = set(modules)
    out = {}
    for name, path in sorted(modules.items()):
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        deps = {}
        for dep, inside in imports(path, package).items():
            while dep not in known and "." in dep:
                dep = dep.rsplit(".", 1)[0]
            if dep in known and dep != name:
                deps[dep] = deps.get(dep, False) or inside
        out[name] = deps
    return out


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name, deps in graph(root).items():
        print(f"{name} -> " + ", ".join(f"{d}{' (f)' if f else ''}" for d, f in sorted(deps.items())))
