"""The layering of docs/architecture.md, checked on every import of every module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "kilowatt"
STDLIB = set(sys.stdlib_module_names)


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def ours(names: set[str]) -> set[str]:
    return {name for name in names if top(name) == "kilowatt"}


MODULES = modules()


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_layering(module: str, path: Path) -> None:
    names = imports(path)
    mine = ours(names)
    where = layer(module)
    if where == "domain":
        third_party = {n for n in names if top(n) not in STDLIB and top(n) != "kilowatt"}
        assert not third_party, f"domain imports only the stdlib: {third_party}"
        assert all(layer(n) == "domain" for n in mine), f"domain imports only domain: {mine}"
    if where == "protocol":
        assert all(layer(n) == "protocol" for n in mine), (
            f"protocol imports nothing of ours: {mine}"
        )
    if where == "gateway":
        forbidden = {n for n in mine if layer(n) in {"services", "store", "api", "app"}}
        assert not forbidden, f"the gateway never imports services or storage: {forbidden}"
    if where == "services":
        forbidden = {
            n
            for n in mine
            if layer(n) in {"gateway", "api", "app", "cli"}
            or (layer(n) == "store" and n not in {"kilowatt.store.base", "kilowatt.store"})
        }
        assert not forbidden, f"services depend on domain and store.base only: {forbidden}"
    # SQL libraries live in kilowatt.store.sql; the composition root and the command
    # line (the edges) may name their exceptions to report failures clearly.
    edge = module == "kilowatt.app" or module.startswith("kilowatt.cli")
    if not module.startswith("kilowatt.store.sql") and not edge:
        sql = {n for n in names if top(n) in {"sqlalchemy", "alembic", "asyncpg"}}
        assert not sql, f"only kilowatt.store.sql touches SQL libraries: {sql}"
