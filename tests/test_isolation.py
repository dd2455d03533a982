"""Tests never reach the user's data: apps built by module-scoped fixtures (before any per-test fixture runs) and
per test both land in a temporary store."""
from __future__ import annotations

import pytest

from app.engine.profiles import DATA_DIR


@pytest.fixture(scope="module")
def module_settings():
    from app.core.settings import Settings

    return Settings(profile="tiny")


def _path_of(url: str) -> str:
    assert url.startswith("sqlite:///"), url
    return url[len("sqlite:///"):]


def test_module_scoped_app_store_is_not_the_users(module_settings):
    path = _path_of(module_settings.store_url)
    assert not path.startswith(str(DATA_DIR)), path


def test_per_test_store_differs_from_the_modules(module_settings, _private_store):
    from app.core.settings import Settings

    assert _path_of(Settings().store_url) == str(_private_store)
    assert str(_private_store) != _path_of(module_settings.store_url)
