"""packaging/systemd: the unit keeps the promises docs/install.md makes for it, systemd
accepts it (``systemd-analyze verify`` where installed), and its files fit together."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from callrec.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "packaging" / "systemd"
UNIT = SYSTEMD / "callrec.service"


def unit_keys(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> its values in order (systemd's own syntax: a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"not a unit line: {raw!r}"
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_restarts_runs_as_callrec_and_leaves_orphaned_workers_alone() -> None:
    service = unit_keys(UNIT)["Service"]

    def value(key: str) -> str:
        (only,) = service[key]
        return only

    assert value("Restart") == "always"
    assert value("User") == value("Group") == "callrec"
    # Others get nothing; the group (a backup user) may read (docs/deployment.md).
    assert value("UMask") == "0027"
    assert value("StateDirectoryMode") == "0750"
    # The default (control-group) and mixed would signal the orphaned workers when the main
    # process dies, ending the calls supervision keeps (callrec.service.supervision).
    assert value("KillMode") == "process"
    assert value("ExecStart").endswith("/callrec serve")
    assert value("Environment") == "CALLREC_CONFIG=/etc/callrec/callrec.toml"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert value(key) == "yes", key
    assert value("ProtectSystem") == "strict"
    # Under ProtectSystem=strict the recordings and the catalogue must be writable.
    assert value("StateDirectory") == "callrec"
    assert value("WorkingDirectory") == "/var/lib/callrec"
    # /proc/net/tcp is how an orphan sees the restarted server listen.
    assert "ProcSubset" not in service
    assert unit_keys(UNIT)["Unit"]["StartLimitIntervalSec"] == ["0"]


def test_the_settings_file_keeps_everything_in_the_state_directory() -> None:
    settings, _ = load_settings(SYSTEMD / "callrec.toml", environ={})
    assert settings.recordings_dir == Path("/var/lib/callrec/recordings")
    assert settings.database_url == "sqlite:////var/lib/callrec/callrec.db"
    assert settings.workers >= 2  # one process alone has no one to keep the port served


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists on an executable ExecStart: this environment's callrec stands in for
    # /opt/callrec/bin/callrec. Unknown keys and bad values are only warnings, so any output
    # about the unit fails the test.
    callrec = Path(sys.executable).parent / "callrec"
    unit = tmp_path / "callrec.service"
    unit.write_text(UNIT.read_text().replace("/opt/callrec/bin/callrec", str(callrec)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    said = [line for line in (result.stdout + result.stderr).splitlines() if "callrec" in line]
    assert result.returncode == 0 and not said, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_makes_the_callrec_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "sysusers.conf")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    users = [line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()]
    (callrec,) = [u for u in users if u[0] == "callrec"]
    assert callrec[5] == "/var/lib/callrec" and callrec[6].endswith("nologin")


def test_the_install_guide_names_every_file_and_the_readme_links_it() -> None:
    guide = (ROOT / "docs" / "install.md").read_text()
    for path in SYSTEMD.iterdir():
        assert f"packaging/systemd/{path.name}" in guide, path.name
    assert "KillMode=process" in guide
    assert "docs/install.md" in (ROOT / "README.md").read_text()


def test_the_sysctl_snippet_lets_media_sockets_have_their_buffer() -> None:
    """Not root, the service's media sockets get at most net.core.rmem_max: the snippet
    must allow the default media_rcvbuf."""
    values = {}
    for raw in (SYSTEMD / "sysctl.conf").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = int(value.strip())
    settings, _ = load_settings(SYSTEMD / "callrec.toml", environ={})
    assert values["net.core.rmem_max"] >= settings.media_rcvbuf
