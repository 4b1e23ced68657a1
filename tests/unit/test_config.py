"""Settings: environment variables, nesting, and errors that name the variable at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.config import SettingsError, env_name, load_settings


def test_nested_variables_and_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("STUDIO_STORE__MONGO_URL", "mongodb://db:27017")
    monkeypatch.setenv("STUDIO_API__CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("STUDIO_SERVING__INGRESS_REPLICAS", "3")
    settings = load_settings()
    assert settings.data_dir == (tmp_path / "d").resolve()
    assert settings.store.mongo_url is not None
    assert settings.store.mongo_url.get_secret_value() == "mongodb://db:27017"
    assert settings.api.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.serving.ingress_replicas == 3


def test_wrong_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_STORE__EMBEDDED_PORT", "not-a-port")
    monkeypatch.setenv("STUDIO_REDIS__CONFIG_TTL_S", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "STUDIO_STORE__EMBEDDED_PORT" in message
    assert "STUDIO_REDIS__CONFIG_TTL_S" in message


def test_wildcard_origin_with_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_API__CORS_ORIGINS", "*")
    monkeypatch.setenv("STUDIO_API__CORS_ALLOW_CREDENTIALS", "true")
    with pytest.raises(SettingsError, match="STUDIO_API"):
        load_settings()


def test_short_admin_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="STUDIO_ADMIN_KEY"):
        load_settings(admin_key="short")


def test_env_name() -> None:
    assert env_name(("store", "mongo_url")) == "STUDIO_STORE__MONGO_URL"
    assert env_name(("api", "cors_origins", 0)) == "STUDIO_API__CORS_ORIGINS"
