from __future__ import annotations

from pathlib import Path

import pytest

from callrec.config import Settings, load_settings
from callrec.exceptions import ConfigError


def test_defaults() -> None:
    settings, source = load_settings(environ={})
    assert settings.control_port == 10000
    assert settings.recordings_dir == Path("recordings")
    assert settings.database_url == "sqlite:///callrec.db"
    assert set(source.values()) == {"default"}


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "callrec.toml"
    cfg.write_text(
        "[callrec]\ncontrol_port = 11000\nmedia_port_min = 50000\n"
        "media_port_max = 50100\naccept_foreign_media = true\n"
    )
    env = {"CALLREC_CONTROL_PORT": "12000", "CALLREC_RECORDINGS_DIR": "/srv/rec"}
    settings, source = load_settings(cfg, environ=env, overrides={"media_port_max": 50010})
    assert settings.control_port == 12000 and source["control_port"] == "CALLREC_CONTROL_PORT"
    assert settings.media_port_min == 50000 and source["media_port_min"] == str(cfg)
    assert settings.media_port_max == 50010 and source["media_port_max"] == "command line"
    assert settings.accept_foreign_media is True
    assert settings.recordings_dir == Path("/srv/rec")


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("log_level = 'DEBUG'\n")
    settings, _ = load_settings(environ={"CALLREC_CONFIG": str(cfg)})
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1\n", "unknown setting 'nope'"),
        ("control_port = 'x'\n", "cannot use 'x' as int"),
        ("control_port = 70000\n", "must be a port number"),
        ("media_port_min = 5\nmedia_port_max = 4\n", "must not exceed"),
        ("control_host = 'example'\n", "must be an IP address"),
        ("accept_foreign_media = 'maybe'\n", "cannot use 'maybe' as bool"),
        ("filename_template = '{nope}.wav'\n", "nope"),
        ("control_port = [\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_settings(cfg, environ={})


def test_every_setting_is_documented() -> None:
    docs = Settings.fields_doc()
    assert len(docs) > 10
    assert all(doc.strip() for _, doc, _ in docs)


def test_node_name_defaults_to_the_host_name_and_is_checked() -> None:
    import socket

    from callrec.config import default_node_name

    assert Settings().node_name == default_node_name()
    if len(socket.gethostname()) <= 63:
        assert default_node_name() == socket.gethostname()
    settings, source = load_settings(environ={"CALLREC_NODE_NAME": "rec-2.site"})
    assert settings.node_name == "rec-2.site" and source["node_name"] == "CALLREC_NODE_NAME"
    for bad in ("-x", "a b", "x/y", "n" * 64):
        with pytest.raises(ConfigError, match=r"node_name: node name .* must be 1-63"):
            Settings(node_name=bad)


def test_peer_recordings_dirs_are_node_equals_directory() -> None:
    settings, _ = load_settings(
        environ={"CALLREC_PEER_RECORDINGS_DIRS": "beta=/mnt/b,gamma=/mnt/c"}
    )
    assert settings.peer_dirs() == {"beta": Path("/mnt/b"), "gamma": Path("/mnt/c")}
    with pytest.raises(ConfigError, match="'/mnt/b' is not node=directory"):
        Settings(peer_recordings_dirs=("/mnt/b",))
