"""Fixtures: every test gets its own freshly registered user on the live
Orderly named by ORDERLY_URL (scripts/clients_test.sh starts one)."""

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orderly_client import Client, login, register  # noqa: E402


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("ORDERLY_URL")
    if not url:
        pytest.skip("ORDERLY_URL is not set: these tests need a live Orderly (scripts/clients_test.sh)")
    return url


@pytest.fixture
def client(base_url: str) -> Client:
    email = f"py-{uuid.uuid4().hex}@example.com"
    password = "correct horse battery"
    register(base_url, email, password)
    return login(base_url, email, password)
