"""Tests never reach the user's data/: every app a test builds gets a temporary store (tests/conftest.py), the apps
module-scoped fixtures build (before any per-test fixture runs) as well as those built per test."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import Settings, get_settings
from app.engine.profiles import DATA_DIR


@pytest.fixture(scope="module")
def module_settings():
    return Settings(profile="tiny")


def _store_path(url: str) -> Path:
    assert url.startswith("sqlite:///"), url
    return Path(url[len("sqlite:///"):])  # sqlite:////abs/x.db -> /abs/x.db


def test_module_scoped_app_store_is_not_the_users(module_settings):
    path = str(_store_path(module_settings.store_url))
    assert not path.startswith(str(DATA_DIR)), path


def test_per_test_store_differs_from_the_modules(module_settings, _private_store):
    assert str(_store_path(Settings().store_url)) == str(_private_store)
    assert str(_private_store) != str(_store_path(module_settings.store_url))


def test_settings_default_is_a_temporary_store_under_tests(_private_store):
    for s in (Settings(), Settings(profile="tiny"), get_settings()):
        p = _store_path(s.store_url)
        assert p == _private_store
        assert DATA_DIR.resolve() not in p.resolve().parents


def test_settings_default_for_real_users_stays_in_data(monkeypatch):
    monkeypatch.delenv("ASN_STORE_URL")
    assert Settings().store_url == f"sqlite:///{DATA_DIR / 'explorations.db'}"


def test_a_save_through_the_default_client_lands_in_the_temporary_store(tiny_client, _private_store):
    real = DATA_DIR / "explorations.db"
    before = real.stat().st_mtime_ns if real.exists() else None
    store = tiny_client.app.state.store
    assert Path(store.path) == _private_store
    i = store.put({"schema_version": 2, "kind": "analysis", "title": "t", "inputs": {}, "result": {}})
    assert store.get(i)["title"] == "t"
    assert (real.stat().st_mtime_ns if real.exists() else None) == before
