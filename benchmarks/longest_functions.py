"""The longest functions in ``wga/`` (lines from ``def`` to the last line of its body).

    python benchmarks/longest_functions.py [--top 10] [--exclude wga/serve] [ROOT]

Nested functions count inside their parent and again on their own. Used for issue 13's note:
the ten longest functions before and after a reshaping.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def function_lengths(root: Path, exclude: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """``(lines, "path:qualified.name")`` for every function under ``root``, longest first."""
    found: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.as_posix()
        if any(relative.startswith(prefix) for prefix in exclude):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found.extend(_walk(tree, relative, ""))
    return sorted(found, reverse=True)


def _walk(node: ast.AST, path: str, prefix: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                out.append((lines, f"{path}:{name}"))
            out.extend(_walk(child, path, f"{name}."))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="wga", type=Path)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--exclude", action="append", default=[], help="path prefix to skip")
    args = parser.parse_args()
    for lines, name in function_lengths(args.root, tuple(args.exclude))[: args.top]:
        print(f"{lines:5d}  {name}")


if __name__ == "__main__":
    main()
