"""Allow-lists and the refusal log, without a server (the listeners' tests are in
tests/resilience/test_access_limits.py)."""

from __future__ import annotations

import logging

import pytest

from callrec.access import (
    OTHER_SOURCES,
    AllowList,
    DeviceAllowList,
    RefusalLog,
    normalise_mac,
)
from callrec.config import load_settings
from callrec.exceptions import ConfigError


def test_empty_allow_list_allows_every_address() -> None:
    allow = AllowList([])
    assert allow.everyone
    assert allow.allows("203.0.113.9") and allow.allows("2001:db8::1") and allow.allows("?")


def test_allow_list_takes_networks_and_single_addresses() -> None:
    allow = AllowList(["10.20.0.0/16", "192.0.2.7", " 2001:db8::/32 ", ""])
    assert [str(n) for n in allow.networks] == ["10.20.0.0/16", "192.0.2.7/32", "2001:db8::/32"]
    assert allow.allows("10.20.255.1")
    assert not allow.allows("10.21.0.1")
    assert allow.allows("192.0.2.7") and not allow.allows("192.0.2.8")
    assert allow.allows("2001:db8:1::5") and not allow.allows("2001:db9::5")
    assert not allow.allows("not an address")


def test_ipv4_mapped_peers_and_entries_are_ipv4() -> None:
    # A dual-stack listener sees an IPv4 phone as ::ffff:a.b.c.d.
    assert AllowList(["10.20.0.0/16"]).allows("::ffff:10.20.3.4")
    assert not AllowList(["10.20.0.0/16"]).allows("::ffff:10.21.3.4")
    assert AllowList(["::ffff:10.20.0.0/112"]).allows("10.20.9.9")


def test_a_bad_entry_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^sip_allow: '10.0.0.300' is not an IP address"):
        AllowList(["10.0.0.300"], setting="sip_allow")


@pytest.mark.parametrize(
    "spelling",
    ["00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e", "001a.2b3c.4d5e", "001A2B3C4D5E", " 001a2b3c4d5e "],
)
def test_mac_spellings_normalise_to_the_phones_form(spelling: str) -> None:
    assert normalise_mac(spelling) == "001a2b3c4d5e"
    assert DeviceAllowList([spelling]).allows("001a2b3c4d5e")
    assert DeviceAllowList(["001a2b3c4d5e"]).allows(spelling)


def test_device_allow_list() -> None:
    assert DeviceAllowList([]).allows("")
    devices = DeviceAllowList(["0c:38:3e:0e:70:9a"])
    assert devices.allows("0c383e0e709a")
    assert not devices.allows("0c383e0e709b")
    assert not devices.allows("")  # a start without a device is not a listed phone
    assert normalise_mac("0c383e0e709") is None and normalise_mac("0c383e0e709g") is None
    with pytest.raises(ConfigError, match="control_allow_devices: 'phone-1' is not a MAC"):
        DeviceAllowList(["phone-1"], setting="control_allow_devices")


def test_settings_take_lists_from_toml_and_environment(tmp_path: object) -> None:
    settings, _ = load_settings(
        environ={
            "CALLREC_CONTROL_ALLOW": "10.20.0.0/16, 192.0.2.7",
            "CALLREC_CONTROL_ALLOW_DEVICES": "00:1A:2B:3C:4D:5E",
        }
    )
    assert settings.control_allow == ("10.20.0.0/16", "192.0.2.7")
    assert settings.control_allow_devices == ("00:1A:2B:3C:4D:5E",)
    assert settings.sip_allow == () and settings.web_allow == ()
    assert settings.max_connections_per_source == 64
    assert settings.max_sessions_per_connection == 4
    with pytest.raises(ConfigError, match="web_allow: 'lan' is not an IP address"):
        load_settings(environ={"CALLREC_WEB_ALLOW": "lan"})
    with pytest.raises(ConfigError, match="max_sessions_per_connection must be >= 1"):
        load_settings(environ={"CALLREC_MAX_SESSIONS_PER_CONNECTION": "0"})


def test_settings_take_a_toml_array(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "callrec.toml"
    path.write_text('[callrec]\nsip_allow = ["10.0.0.0/8", "192.0.2.1"]\n', encoding="utf-8")
    settings, source = load_settings(path, environ={})
    assert settings.sip_allow == ("10.0.0.0/8", "192.0.2.1")
    assert source["sip_allow"] == str(path)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "callrec.access"]


def test_refusals_are_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="callrec.access")
    log = RefusalLog("control", quiet=60, report_every=300)
    for i in range(200):
        log.refused("127.0.0.2", "too_many_sessions", "4 sessions open", now=10.0 + i * 0.01)
    log.refused("127.0.0.9", "forbidden", "not in control_allow", now=12.0)
    assert log.counts == {"too_many_sessions": 200, "forbidden": 1}
    lines = _lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("control: refused 127.0.0.2 (too_many_sessions): 4 sessions open")
    assert lines[1].startswith("control: refused 127.0.0.9 (forbidden)")
    caplog.clear()
    log.sweep(now=40.0)  # still within the quiet time: the episode goes on
    assert _lines(caplog) == [] and log.open_episodes == 2
    log.sweep(now=80.0)
    # The end of an episode with repeats is summed up; a single refusal needs no second line.
    assert _lines(caplog) == [
        "control: 127.0.0.2 (too_many_sessions) was refused 200 times in 2 s; none for 68 s now"
    ]
    assert log.open_episodes == 0
    caplog.clear()
    log.refused("127.0.0.2", "too_many_sessions", "again", now=100.0)  # a new episode
    assert len(_lines(caplog)) == 1


def test_a_long_episode_reports_every_few_minutes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="callrec.access")
    log = RefusalLog("sip", quiet=60, report_every=300)
    for second in range(0, 601):
        log.refused("198.51.100.1", "forbidden", "not in sip_allow", now=float(second))
    lines = _lines(caplog)
    assert len(lines) == 3
    assert lines[1] == (
        "sip: still refusing 198.51.100.1 (forbidden): 300 more in the last 300 s, 301 since "
        "300 s ago"
    )


def test_many_sources_share_one_episode_past_the_table_size(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="callrec.access")
    log = RefusalLog("web", max_episodes=4)
    for i in range(100):
        log.refused(f"198.51.100.{i}", "forbidden", "not in web_allow", now=1.0)
    assert log.open_episodes == 5
    assert log.counts["forbidden"] == 100
    lines = _lines(caplog)
    assert len(lines) == 5
    assert lines[-1].startswith(f"web: refused {OTHER_SOURCES} (forbidden)")
