"""Fixtures every service's tests share, loaded by pytest with `-p kit.pytest_plugin` (pyproject's addopts).

- `keypair`: an Ed25519 key pair for the session (private, public PEM files), as user-svc signs tokens with.
- `signer`: a `TokenSigner` with that key and the issuer and audience the services' test settings verify.

A service's conftest may still define its own fixture of the same name; the nearer one wins."""

from pathlib import Path

import pytest

from kit.auth import TokenSigner
from kit.testing import write_keypair

TEST_ISSUER, TEST_AUDIENCE = "pb-user-svc", "pb"


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def signer(keypair: tuple[Path, Path]) -> TokenSigner:
    return TokenSigner.from_file(keypair[0], TEST_ISSUER, TEST_AUDIENCE)
