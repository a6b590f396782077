"""The official OCPP 1.6 JSON schemas, as shipped by the ``ocpp`` package.

They are the source of truth for every payload we accept or send; nothing here
retypes them. Loading is lazy (per schema, on first use) and compiling happens in
:class:`kilowatt.protocol.validation.SchemaValidator`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib import resources
from typing import Any

import orjson

from kilowatt.protocol.validation import SchemaValidator

__all__ = ["SCHEMA_PACKAGE", "load_schema", "schema_names", "schema_validator"]

SCHEMA_PACKAGE = "ocpp.v16.schemas"


def schema_names() -> list[str]:
    """Every schema name (file stem) of OCPP 1.6 and its Security Whitepaper: 78 of them."""
    return sorted(
        entry.name.removesuffix(".json")
        for entry in resources.files(SCHEMA_PACKAGE).iterdir()
        if entry.name.endswith(".json")
    )


def load_schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(
        resources.files(SCHEMA_PACKAGE).joinpath(f"{name}.json").read_bytes()
    )
    return document


def schema_validator() -> SchemaValidator:
    loaders: dict[str, Callable[[], dict[str, Any]]] = {
        name: partial(load_schema, name) for name in schema_names()
    }
    return SchemaValidator(loaders)
