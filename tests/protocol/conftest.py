from __future__ import annotations

import pytest

from kilowatt.ocpp16.routes import protocol_spec
from kilowatt.protocol.session import ProtocolSpec, Session

_SPEC = protocol_spec()


@pytest.fixture(scope="session")
def spec() -> ProtocolSpec:
    return _SPEC


def make_session(**kwargs: object) -> Session:
    handled = kwargs.pop("handled", _SPEC.incoming - {"SignCertificate"})
    counter = iter(range(1, 10_000))
    return Session(
        _SPEC,
        handled=handled,  # type: ignore[arg-type]
        id_factory=lambda: f"id-{next(counter)}",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def session() -> Session:
    return make_session()
