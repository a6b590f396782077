"""Fixtures for gateway tests."""

from __future__ import annotations

import pytest

from tests.pki import PkiFiles, create_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    """One test PKI per session: key generation is the slow part."""
    return create_pki(tmp_path_factory.mktemp("pki"))
