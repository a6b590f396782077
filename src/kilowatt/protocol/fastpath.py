"""A fast path in front of the schema validator, generated from the same schemas.

Most payloads a Central System sees are valid, and for them the validator's only job
is to say so. This module turns a JSON schema (the subset the OCPP 1.6 schemas use)
into a plain Python function with one straight-line check per rule: ``type(x) is
str``, ``len(x) > 20``, ``x not in ENUM`` (a frozenset), ``keys <= ALLOWED`` and so on.
On a payload that passes every check it returns ``None`` at once; at the first check
that does not pass it hands the whole payload to the full validator
(``fastjsonschema``'s compiled function), which finds the failing rule, names it and
raises, exactly as before. The fast path never decides that a payload is *invalid*;
it only short-cuts the payloads it can prove valid.

Its checks are never weaker than the full validator's, which is what makes the
short-cut safe:

* types are tested with ``type(x) is …`` (no subclasses, no ``bool`` as ``int``, no
  ``1.0`` as an integer): anything unusual goes to the full validator;
* formats use the full validator's own regular expressions;
* a ``multipleOf`` that is not an integer, and any keyword this generator does not
  know, send the value (or, for an unknown keyword, the whole schema) to the full
  validator.

``tests/protocol/test_fastpath.py`` checks this against ``fastjsonschema`` on
generated valid and broken payloads of every OCPP 1.6 schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fastjsonschema.draft04 import CodeGeneratorDraft04
from fastjsonschema.draft06 import CodeGeneratorDraft06
from fastjsonschema.draft07 import CodeGeneratorDraft07

__all__ = ["FAST_PATH_ATTRIBUTE", "Unsupported", "with_fast_path"]

Check = Callable[[Any], Any]

#: Set on the functions this module generates (tests use it to tell them apart from
#: a plain full validator returned for an unsupported schema).
FAST_PATH_ATTRIBUTE = "kilowatt_fast_path"

# Keywords that do not constrain a value.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "id", "title", "description", "javaType", "definitions"}
)
_KEYWORDS = {
    "string": frozenset({"type", "enum", "maxLength", "minLength", "format"}),
    "integer": frozenset({"type", "enum", "minimum", "maximum", "multipleOf"}),
    "number": frozenset({"type", "minimum", "maximum", "multipleOf"}),
    "boolean": frozenset({"type"}),
    "array": frozenset({"type", "items", "minItems", "maxItems", "additionalItems"}),
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
}
_TYPE_TESTS = {
    "string": "type({v}) is not str",
    "integer": "type({v}) is not int",
    "number": "type({v}) is not int and type({v}) is not float",
    "boolean": "type({v}) is not bool",
    "array": "type({v}) is not list",
    "object": "type({v}) is not dict",
}
# The full validator's own format expressions, by the draft a schema declares (the
# OCPP 1.6 schemas are draft-04, the Security Whitepaper's draft-06); fastjsonschema
# takes a schema without "$schema" as draft-07.
_FORMATS: dict[str, Mapping[str, str]] = {
    "http://json-schema.org/draft-04/schema": CodeGeneratorDraft04.FORMAT_REGEXS,
    "http://json-schema.org/draft-06/schema": CodeGeneratorDraft06.FORMAT_REGEXS,
    "http://json-schema.org/draft-07/schema": CodeGeneratorDraft07.FORMAT_REGEXS,
}
_DEFAULT_DRAFT = "http://json-schema.org/draft-07/schema"
_MAX_REF_DEPTH = 32


class Unsupported(Exception):
    """The schema uses something this generator does not handle (the full validator will)."""


def with_fast_path(schema: Mapping[str, Any], full: Check) -> Check:
    """``full`` with a generated fast path in front of it, or ``full`` itself.

    The returned function returns ``None`` for a payload ``schema`` accepts, and for any
    other payload returns what ``full(payload)`` returns (or raises what it raises).
    When the schema uses a keyword the generator does not know, ``full`` is returned
    unchanged.
    """
    try:
        return _Generator(schema).build(full)
    except Unsupported:
        return full


class _Generator:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root
        self._lines: list[str] = []
        self._constants: dict[str, object] = {}
        self._resolving: list[str] = []
        draft = root.get("$schema", _DEFAULT_DRAFT)
        formats = _FORMATS.get(draft.rstrip("#")) if isinstance(draft, str) else None
        if formats is None:
            raise Unsupported(f"$schema {draft!r}")
        self._formats = formats

    def build(self, full: Check) -> Check:
        self._lines.append("def check(x0):")
        self._node(self._root, 0, 1)
        self._lines.append("    return None")
        namespace: dict[str, Any] = {"FULL": full, **self._constants}
        exec(compile("\n".join(self._lines), "<kilowatt fast path>", "exec"), namespace)
        check: Check = namespace["check"]
        setattr(check, FAST_PATH_ATTRIBUTE, True)
        return check

    # -- code emission ---------------------------------------------------------------

    def _emit(self, indent: int, line: str) -> None:
        self._lines.append("    " * indent + line)

    def _fail_if(self, indent: int, condition: str) -> None:
        self._emit(indent, f"if {condition}:")
        self._emit(indent + 1, "return FULL(x0)")

    def _constant(self, value: object) -> str:
        name = f"C{len(self._constants)}"
        self._constants[name] = value
        return name

    # -- schema nodes ----------------------------------------------------------------

    def _node(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        """Emit the checks of ``schema`` for the value in ``x{depth}``, following ``$ref``."""
        followed: list[str] = []
        try:
            while isinstance(schema, Mapping) and "$ref" in schema:
                ref = schema["$ref"]
                if set(schema) - _ANNOTATIONS - {"$ref"}:
                    raise Unsupported("$ref with sibling keywords")
                if not isinstance(ref, str) or not ref.startswith("#/"):
                    raise Unsupported(f"non-local $ref {ref!r}")
                if ref in self._resolving or len(self._resolving) > _MAX_REF_DEPTH:
                    raise Unsupported(f"recursive $ref {ref!r}")
                self._resolving.append(ref)
                followed.append(ref)
                schema = self._pointer(ref)
            if not isinstance(schema, Mapping):
                raise Unsupported("schema is not an object")
            self._typed_node(schema, depth, indent)
        finally:
            del self._resolving[len(self._resolving) - len(followed) :]

    def _pointer(self, ref: str) -> Any:
        target: Any = self._root
        for escaped in ref[2:].split("/"):
            part = escaped.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                raise Unsupported(f"unresolvable $ref {ref!r}")
            target = target[part]
        return target

    def _typed_node(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        v = f"x{depth}"
        if schema is not self._root and not schema.keys().isdisjoint({"id", "$id"}):
            # A nested id changes where $ref resolves: left to the full validator.
            raise Unsupported("nested id")
        keywords = set(schema) - _ANNOTATIONS
        kind = schema.get("type")
        if kind is None:
            # Untyped: only an enum of strings, or nothing at all, is handled.
            if keywords - {"enum"}:
                raise Unsupported("keywords without a type")
            if "enum" in keywords:
                self._fail_if(indent, f"type({v}) is not str or {v} not in {self._enum(schema)}")
            return
        if not isinstance(kind, str) or kind not in _KEYWORDS:
            raise Unsupported(f"type {kind!r}")
        # "additionalProperties" on a non-object is ignored by JSON Schema (the OCPP
        # schemas put it on their string enums).
        ignored = {"additionalProperties"} if kind != "object" else set()
        unknown = keywords - _KEYWORDS[kind] - ignored
        if unknown:
            raise Unsupported(f"keywords {sorted(unknown)}")
        self._fail_if(indent, _TYPE_TESTS[kind].format(v=v))
        getattr(self, f"_{kind}")(schema, depth, indent)

    def _enum(self, schema: Mapping[str, Any]) -> str:
        values = schema["enum"]
        if not isinstance(values, list) or not all(type(item) is str for item in values):
            raise Unsupported("enum of non-strings")
        return self._constant(frozenset(values))

    def _string(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        v = f"x{depth}"
        if "enum" in schema:
            self._fail_if(indent, f"{v} not in {self._enum(schema)}")
        if "maxLength" in schema:
            self._fail_if(indent, f"len({v}) > {self._count(schema['maxLength'])}")
        if "minLength" in schema:
            self._fail_if(indent, f"len({v}) < {self._count(schema['minLength'])}")
        if "format" in schema:
            pattern = self._formats.get(schema["format"])
            if pattern is None:
                raise Unsupported(f"format {schema['format']!r}")
            self._fail_if(indent, f"{self._constant(re.compile(pattern).match)}({v}) is None")

    def _integer(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        if "enum" in schema:
            raise Unsupported("integer enum")
        self._number(schema, depth, indent)

    def _number(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        v = f"x{depth}"
        if "minimum" in schema:
            self._fail_if(indent, f"{v} < {self._limit(schema['minimum'])}")
        if "maximum" in schema:
            self._fail_if(indent, f"{v} > {self._limit(schema['maximum'])}")
        if "multipleOf" in schema:
            step = schema["multipleOf"]
            if type(step) is int and step > 0:
                self._fail_if(indent, f"type({v}) is not int or {v} % {step}")
            else:
                # A fractional step needs the full validator's decimal arithmetic.
                self._emit(indent, "return FULL(x0)")

    def _boolean(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        del schema, depth, indent  # the type test is all there is

    def _array(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        v = f"x{depth}"
        if "minItems" in schema:
            self._fail_if(indent, f"len({v}) < {self._count(schema['minItems'])}")
        if "maxItems" in schema:
            self._fail_if(indent, f"len({v}) > {self._count(schema['maxItems'])}")
        items = schema.get("items")
        if items is None:
            if "additionalItems" in schema:
                raise Unsupported("additionalItems without items")
            return
        if not isinstance(items, Mapping):
            # A list of item schemas (where additionalItems would apply) is not used.
            raise Unsupported("positional items")
        self._emit(indent, f"for x{depth + 1} in {v}:")
        before = len(self._lines)
        self._node(items, depth + 1, indent + 1)
        if len(self._lines) == before:
            self._emit(indent + 1, "pass")

    def _object(self, schema: Mapping[str, Any], depth: int, indent: int) -> None:
        v = f"x{depth}"
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        extra = schema.get("additionalProperties", True)
        if not isinstance(properties, Mapping) or not isinstance(required, list):
            raise Unsupported("malformed properties or required")
        if not all(isinstance(name, str) for name in [*properties, *required]):
            raise Unsupported("property names that are not strings")
        if extra is False:
            self._fail_if(indent, f"not {v}.keys() <= {self._constant(frozenset(properties))}")
        elif extra is not True:
            raise Unsupported("additionalProperties with a schema")
        if required:
            self._fail_if(indent, f"not {v}.keys() >= {self._constant(frozenset(required))}")
        child = f"x{depth + 1}"
        for name, subschema in properties.items():
            if name in required:
                self._emit(indent, f"{child} = {v}[{name!r}]")
                self._node(subschema, depth + 1, indent)
            else:
                self._emit(indent, f"if {name!r} in {v}:")
                self._emit(indent + 1, f"{child} = {v}[{name!r}]")
                self._node(subschema, depth + 1, indent + 1)

    @staticmethod
    def _count(value: object) -> int:
        if type(value) is not int or value < 0:
            raise Unsupported(f"count {value!r}")
        return value

    @staticmethod
    def _limit(value: object) -> str:
        if type(value) not in (int, float):
            raise Unsupported(f"limit {value!r}")
        return repr(value)
