"""The generated fast path accepts only what the full validator accepts, and most valid payloads.

Payloads come from every OCPP 1.6 schema: valid ones built from the schema itself, and
the same with one random change (a value replaced by any JSON value, a property
dropped, an unknown property added). Whenever the fast path returns without asking
the full validator, ``fastjsonschema`` must accept the payload too.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from functools import cache
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kilowatt.ocpp16.schemas import load_schema, schema_names
from kilowatt.protocol.errors import PropertyConstraintError, TypeConstraintError
from kilowatt.protocol.fastpath import FAST_PATH_ATTRIBUTE, with_fast_path
from kilowatt.protocol.validation import SchemaValidator

NAMES = schema_names()


def _max_lengths(schema: Any) -> set[int]:
    if isinstance(schema, dict):
        found = {schema["maxLength"]} if "maxLength" in schema else set()
        return found.union(*map(_max_lengths, schema.values()))
    if isinstance(schema, list):
        return set().union(*map(_max_lengths, schema))
    return set()


# Strings just inside and just outside every maxLength the schemas use.
BOUNDARY_LENGTHS = sorted(
    {
        length + step
        for name in NAMES
        for length in _max_lengths(load_schema(name))
        for step in (0, 1)
    }
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(BOUNDARY_LENGTHS).map(lambda length: "x" * length)
    | st.sampled_from(["2026-01-01T00:00:00Z", "Accepted", "Wh", "", "2026-13-01T00:00:00Z"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        schema = target
    return schema


def _date_times() -> st.SearchStrategy[str]:
    moments = st.datetimes(datetime(1970, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC))
    return st.one_of(
        moments.map(lambda moment: moment.isoformat()),
        moments.map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        moments.map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")),
    )


def valid(root: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy ``schema`` (the subset of JSON Schema the OCPP schemas use)."""
    schema = _resolve(root, schema)
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "string":
        if schema.get("format") == "date-time":
            return _date_times()
        if schema.get("format") == "uri":
            return st.just("https://example.com/firmware.bin")
        return st.text(max_size=schema.get("maxLength", 30))
    if kind == "integer":
        return st.integers(min_value=-(2**31), max_value=2**31)
    if kind == "number":
        if "multipleOf" in schema:
            return st.integers(min_value=0, max_value=10_000).map(lambda tenths: tenths / 10)
        return st.integers(-1000, 1000) | st.floats(-1e6, 1e6)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(
            valid(root, schema["items"]),
            min_size=schema.get("minItems", 0),
            max_size=max(schema.get("minItems", 0), 3),
        )
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: valid(root, sub) for name, sub in properties.items() if name in required},
            optional={
                name: valid(root, sub) for name, sub in properties.items() if name not in required
            },
        )
    return json_values


def _places(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) inside ``value``."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((value, key))
            found.extend(_places(child))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((value, index))
            found.extend(_places(child))
    return found


@st.composite
def broken(draw: st.DrawFn, payload: Any) -> Any:
    """``payload`` with one random change somewhere inside it."""
    changed = copy.deepcopy(payload)
    places = _places(changed)
    action = draw(st.sampled_from(["replace", "stretch", "drop", "add", "root"]))
    if action == "root" or not places:
        return draw(json_values)
    strings = [(container, key) for container, key in places if isinstance(container[key], str)]
    if action == "stretch" and strings:
        # A string just inside or just outside one of the schemas' length limits.
        container, key = draw(st.sampled_from(strings))
        container[key] = "x" * draw(st.sampled_from(BOUNDARY_LENGTHS))
        return changed
    container, key = draw(st.sampled_from(places))
    if action in ("replace", "stretch"):
        container[key] = draw(json_values)
    elif action == "drop" and isinstance(container, dict):
        del container[key]
    elif action == "drop":
        container.clear()
    elif isinstance(container, dict):
        container[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    else:
        container.append(draw(json_values))
    return changed


@cache
def _compiled(name: str) -> tuple[Any, Any]:
    schema = load_schema(name)
    return schema, fastjsonschema.compile(schema)


def _fast_path_accepts(name: str, payload: Any) -> bool:
    schema, _ = _compiled(name)
    asked: list[Any] = []
    with_fast_path(schema, asked.append)(payload)
    return not asked


def _full_accepts(name: str, payload: Any) -> bool:
    _, full = _compiled(name)
    try:
        full(payload)
    except (fastjsonschema.JsonSchemaValueException, ValueError, TypeError):
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_every_ocpp_schema_gets_a_fast_path(name: str) -> None:
    schema, full = _compiled(name)
    assert getattr(with_fast_path(schema, full), FAST_PATH_ATTRIBUTE, False)


@st.composite
def valid_payloads(draw: st.DrawFn, names: list[str] = NAMES) -> tuple[str, dict[str, Any], Any]:
    """(schema name, schema, a payload valid by it), for any of ``names``."""
    name = draw(st.sampled_from(names))
    schema, _ = _compiled(name)
    return name, schema, draw(valid(schema, schema))


@settings(max_examples=1500, deadline=None)
@given(valid_payloads(), st.data())
def test_the_fast_path_never_accepts_what_the_schema_rejects(
    case: tuple[str, dict[str, Any], Any], data: st.DataObject
) -> None:
    name, _, payload = case
    payload = data.draw(broken(payload))
    if _fast_path_accepts(name, payload):
        assert _full_accepts(name, payload), (name, payload)


@settings(max_examples=600, deadline=None)
@given(valid_payloads())
def test_the_fast_path_accepts_valid_payloads(case: tuple[str, dict[str, Any], Any]) -> None:
    name, schema, payload = case
    assert _full_accepts(name, payload), (name, payload)
    # A fractional multipleOf (charging limits) is left to the full validator on purpose.
    if "multipleOf" not in str(schema):
        assert _fast_path_accepts(name, payload), (name, payload)


def _limited_strings(root: dict[str, Any], schema: Any, value: Any) -> list[tuple[Any, Any, int]]:
    """Every (container, key, maxLength) of a length-limited string inside ``value``."""
    schema = _resolve(root, schema)
    found: list[tuple[Any, Any, int]] = []
    children: list[tuple[Any, Any]] = []
    if schema.get("type") == "object" and isinstance(value, dict):
        children = [(key, schema["properties"][key]) for key in value]
    elif schema.get("type") == "array" and isinstance(value, list):
        children = [(index, schema["items"]) for index in range(len(value))]
    for key, subschema in children:
        resolved = _resolve(root, subschema)
        if resolved.get("type") == "string" and "maxLength" in resolved:
            found.append((value, key, resolved["maxLength"]))
        found.extend(_limited_strings(root, subschema, value[key]))
    return found


LIMITED = [name for name in NAMES if _max_lengths(load_schema(name))]


@settings(max_examples=400, deadline=None)
@given(valid_payloads(LIMITED), st.data())
def test_length_limits_are_exact(
    case: tuple[str, dict[str, Any], Any], data: st.DataObject
) -> None:
    name, schema, payload = case
    places = _limited_strings(schema, schema, payload)
    if places:
        container, key, limit = data.draw(st.sampled_from(places))
        container[key] = "x" * (limit + data.draw(st.sampled_from([0, 1])))
        fast, full = _fast_path_accepts(name, payload), _full_accepts(name, payload)
        assert full or not fast, (name, payload)
        if "multipleOf" not in str(schema):  # a fractional step is always left to the full one
            assert fast == full, (name, payload)


def test_a_payload_that_fails_the_fast_path_gets_the_full_validators_error() -> None:
    validator = SchemaValidator({"MeterValues": lambda: load_schema("MeterValues")})
    sample = {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}
    validator.validate("MeterValues", {"connectorId": 1, "meterValue": [sample]})
    with pytest.raises(TypeConstraintError) as caught:
        validator.validate("MeterValues", {"connectorId": "1", "meterValue": [sample]})
    assert caught.value.details["path"] == "payload.connectorId"
    bad_time = {**sample, "timestamp": "yesterday"}
    with pytest.raises(PropertyConstraintError):
        validator.validate("MeterValues", {"connectorId": 1, "meterValue": [bad_time]})


def test_unusual_values_are_left_to_the_full_validator() -> None:
    # Not a JSON object; an integral float where an integer belongs; a fractional step.
    assert not _fast_path_accepts("Heartbeat", [])
    status = {"connectorId": 1.0, "errorCode": "NoError", "status": "Available"}
    assert not _fast_path_accepts("StatusNotification", status)
    limit = {"startPeriod": 0, "limit": 16.0}
    profile = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [limit]},
        },
    }
    assert _full_accepts("SetChargingProfile", profile)
    assert not _fast_path_accepts("SetChargingProfile", profile)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a"},  # a keyword the generator does not know
        {"type": "object", "properties": {"a": {"$id": "#x", "type": "string"}}},  # nested id
        {"type": "object", "properties": {"a": {"$ref": "other.json#/a"}}},  # not local
        {"definitions": {"n": {"$ref": "#/definitions/n"}}, "$ref": "#/definitions/n"},
        {"type": ["string", "null"]},
        {"type": "integer", "enum": [1, 2]},
        {"$schema": "http://json-schema.org/draft-03/schema#", "type": "string"},
    ],
)
def test_what_the_generator_does_not_know_is_left_whole_to_the_full_validator(
    schema: dict[str, Any],
) -> None:
    def full(payload: Any) -> None:
        return None

    assert with_fast_path(schema, full) is full
