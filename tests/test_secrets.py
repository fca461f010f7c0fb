"""One way to read a secret: $NAME, else the file $NAME_FILE names; errors name the variable."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pricing_assets.alerts import AlertWebhook
from resources.config import AuthConfig
from resources.secrets import SecretFileError, read_secret
from resources.suppliers.auth import ApiKeyAuth, build_auth


def test_the_variable_wins_then_the_file_then_nothing(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("from-file\n")  # a mounted secret ends with a newline that is not the secret's
    assert read_secret("TOKEN", {"TOKEN": "from-env", "TOKEN_FILE": str(file)}) == "from-env"
    assert read_secret("TOKEN", {"TOKEN_FILE": str(file)}) == "from-file"
    assert read_secret("TOKEN", {}) is None
    file.write_text("")
    assert read_secret("TOKEN", {"TOKEN_FILE": str(file)}) is None


def test_an_unreadable_file_names_the_variable_not_the_path_content(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="TOKEN_FILE: cannot read the secret file"):
        read_secret("TOKEN", {"TOKEN_FILE": str(tmp_path / "missing")})


def test_a_supplier_key_and_the_alert_url_come_from_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "alpha-key"
    key.write_text("k-123\n")
    auth = build_auth(
        AuthConfig(kind="api_key", header="X-Api-Key", key_env="ALPHA_KEY"),
        supplier="alpha",
        base_url="http://127.0.0.1:9",
        client=httpx.AsyncClient(),
        environ={"ALPHA_KEY_FILE": str(key)},
    )
    assert isinstance(auth, ApiKeyAuth)
    request = next(auth.auth_flow(httpx.Request("GET", "http://127.0.0.1:9/")))
    assert request.headers["X-Api-Key"] == "k-123"

    url = tmp_path / "alert-url"
    url.write_text("http://127.0.0.1:9/hook\n")
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("ALERT_WEBHOOK_URL_FILE", str(url))
    assert AlertWebhook().configured()
    monkeypatch.delenv("ALERT_WEBHOOK_URL_FILE")
    assert not AlertWebhook().configured()
