"""The settings of a server under test: everything on loopback, any free port, its files
under the test's ``tmp_path``, and only the front ends a test asks for.

:func:`server_settings` is the one builder; the others are it with a front end switched on,
or the same values as the environment of a ``callrec serve`` process.
"""

from __future__ import annotations

from pathlib import Path

from callrec.config import Settings


def _values(tmp_path: Path) -> dict[str, object]:
    return dict(
        control_host="127.0.0.1",
        control_port=0,
        media_host="127.0.0.1",
        media_port_min=0,
        media_port_max=0,
        recordings_dir=tmp_path / "recordings",
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        # The phone front end alone unless a test asks for more: no fixed web/SIP ports to
        # collide with a server running on the machine.
        web_enabled=False,
        sip_enabled=False,
    )


def server_settings(tmp_path: Path, **overrides: object) -> Settings:
    """A server in this process, its audio written to the files every 0.1 s."""
    values = {**_values(tmp_path), "sync_interval": 0.1, **overrides}
    return Settings(**values)  # type: ignore[arg-type]


def sip_settings(tmp_path: Path, **overrides: object) -> Settings:
    """:func:`server_settings` with SIP (UDP and TCP) on loopback, short registrations."""
    values: dict[str, object] = dict(
        sip_enabled=True,
        sip_host="127.0.0.1",
        sip_port=0,
        sip_min_expires=1,
        sip_account_refresh=0.5,
    )
    return server_settings(tmp_path, **{**values, **overrides})


def web_settings(tmp_path: Path, **overrides: object) -> Settings:
    """:func:`server_settings` with the web UI and API on loopback."""
    values: dict[str, object] = dict(web_enabled=True, web_host="127.0.0.1", web_port=0)
    return server_settings(tmp_path, **{**values, **overrides})


def serve_environment(tmp_path: Path, **overrides: object) -> dict[str, str]:
    """``CALLREC_*`` variables for a ``callrec serve`` process with :func:`server_settings`'
    values (but the default sync interval, unless given)."""
    values = {**_values(tmp_path), **overrides}
    return {
        f"CALLREC_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in values.items()
    }
