"""``callrec user``: add, list, set, passwd, token, delete; all audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callrec.catalog import Catalog
from callrec.cli import app
from callrec.web.security import digest, verify_password


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'callrec.db'}"
    monkeypatch.setenv("CALLREC_DATABASE_URL", url)
    monkeypatch.delenv("CALLREC_CONFIG", raising=False)
    return url


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


def test_user_lifecycle(db: str) -> None:
    code, out = run("user", "list")
    assert code == 0 and "no users yet" in out
    code, out = run(
        "user", "add", "Boss", "--role", "admin", "--password-stdin", stdin="s3cret-pw\n"
    )
    assert code == 0 and "added admin boss" in out
    code, out = run(
        "user", "add", "ann", "-e", "3001", "-e", "3002", "-d", "0C383E0E709A", "--generate"
    )
    assert code == 0
    one_time = out.split("one-time password: ")[1].split()[0]
    code, out = run("user", "add", "ann", "--password-stdin", stdin="another-pw\n")
    assert code == 1 and "already exists" in out
    code, out = run("user", "add", "weak", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 8" in out

    code, out = run("user", "list", "--json")
    users = {u["username"]: u for u in json.loads(out)}
    assert users["boss"]["role"] == "admin" and users["boss"]["extensions"] == []
    assert users["ann"]["extensions"] == ["3001", "3002"]
    assert users["ann"]["devices"] == ["0c383e0e709a"]
    assert users["ann"]["must_change_password"] is True

    with Catalog(db) as catalog:
        found = catalog.user_credentials("ann")
        assert found is not None and verify_password(found[1], one_time)

    code, out = run("user", "set", "ann", "-e", "3005")
    assert code == 0 and "sees 0c383e0e709a 3005" not in out and "3005" in out
    code, out = run("user", "set", "ann", "--unrestricted", "--role", "admin")
    assert code == 0 and "admin, sees everything" in out
    code, out = run("user", "passwd", "ann", "--password-stdin", stdin="ann-own-pw\n")
    assert code == 0

    code, token = run("user", "token", "ann", "--name", "cron", "--days", "30")
    assert code == 0
    token = next(line for line in token.splitlines() if line.startswith("crt_"))
    assert token.startswith("crt_")
    with Catalog(db) as catalog:
        tokens = catalog.list_tokens()
        assert [t.name for t in tokens] == ["cron"] and tokens[0].expires_at is not None
        from datetime import UTC, datetime

        user = catalog.user_for_token(digest(token), datetime.now(UTC))
        assert user is not None and user.username == "ann"
        token_id = tokens[0].id
    code, out = run("user", "token", "ann", "--list")
    assert code == 0 and "cron" in out and token not in out
    code, out = run("user", "token", "ann", "--revoke", str(token_id))
    assert code == 0 and f"revoked token {token_id}" in out
    code, out = run("user", "token", "ann", "--revoke", str(token_id))
    assert code == 1

    code, out = run("user", "delete", "ann", "--yes")
    assert code == 0 and "deleted ann" in out
    code, out = run("user", "delete", "boss", "--yes")
    assert code == 1 and "the last admin" in out
    code, out = run("user", "passwd", "ghost", "--generate")
    assert code == 1 and "no user 'ghost'" in out

    with Catalog(db) as catalog:
        log = catalog.audit_entries(limit=100)
    actions = [e.action for e in reversed(log)]
    assert actions == [
        "user_add",
        "user_add",
        "user_update",
        "user_update",
        "user_update",
        "token_create",
        "token_revoke",
        "user_delete",
    ]
    assert all(e.username.startswith("cli") and e.client_address == "local" for e in log)
    assert "s3cret" not in json.dumps([e.detail for e in log])


def test_tokens_passwords_and_restrictions_from_the_cli(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: a one-time password gets no token; a new password revokes every token;
    web_token_max_days caps the CLI's tokens too; restrictions are checked."""
    code, out = run("user", "add", "dora", "--generate")
    assert code == 0
    code, out = run("user", "token", "dora")
    assert code == 1 and "still has a one-time password" in out
    code, out = run("user", "passwd", "dora", "--password-stdin", stdin="dora-own-pw\n")
    assert code == 0
    code, out = run("user", "token", "dora", "--name", "forever")
    assert code == 0
    monkeypatch.setenv("CALLREC_WEB_TOKEN_MAX_DAYS", "7")
    code, out = run("user", "token", "dora", "--name", "capped")
    assert code == 0 and "expires in 7 days" in out
    with Catalog(db) as catalog:
        tokens = {t.name: t for t in catalog.list_tokens()}
    assert tokens["forever"].expires_at is None and tokens["capped"].expires_at is not None
    code, out = run("user", "passwd", "dora", "--password-stdin", stdin="dora-new-pw\n")
    assert code == 0 and "2 API token(s) revoked" in out
    with Catalog(db) as catalog:
        assert catalog.list_tokens() == []
        entry = catalog.audit_entries(action="user_update", limit=1)[0]
    assert sorted(entry.detail["tokens_revoked"]) == sorted(t.id for t in tokens.values())

    # Numbers no catalogue can hold are errors, not tracebacks.
    code, out = run("user", "token", "dora", "--revoke", str(2**64))
    assert code == 1 and "too large" in out
    code, out = run("user", "token", "dora", "--days", "1e400")
    assert code == 2 and "at most 36500" in out

    code, out = run("user", "set", "dora", "-e", "30 01", "-e", "abc;")
    assert code == 1 and "'30 01', 'abc;' are not extensions" in out
    code, out = run("user", "set", "dora", "-e", "+4930123", "-d", "0C-38-3E-0E-70-9A")
    assert code == 0 and "+4930123" in out and "0c383e0e709a" in out
