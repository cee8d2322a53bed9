"""Play audio through the system's output, with whatever player the system has.

callrec plays nothing itself: it finds a player program whose sound system is there
(PipeWire, PulseAudio, ALSA, macOS Core Audio) and hands it a WAV file. Headless servers have
none, which :func:`find_player` reports instead of letting a player fail obscurely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from callrec.exceptions import CallrecError


class PlayerError(CallrecError):
    """No usable audio output, or the player failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Player:
    """A player program and the arguments that play one file and exit."""

    name: str
    command: tuple[str, ...]

    def argv(self, path: Path) -> list[str]:
        return [*self.command, str(path)]


def _pulse_running(env: Mapping[str, str], runtime: Path | None) -> bool:
    return bool(env.get("PULSE_SERVER")) or (
        runtime is not None and (runtime / "pulse" / "native").exists()
    )


def _pipewire_running(env: Mapping[str, str], runtime: Path | None) -> bool:
    return bool(env.get("PIPEWIRE_REMOTE")) or (
        runtime is not None and (runtime / "pipewire-0").exists()
    )


def _alsa_playback_device(dev_snd: Path) -> bool:
    try:
        return any(p.name.startswith("pcmC") and p.name.endswith("p") for p in dev_snd.iterdir())
    except OSError:
        return False


def find_player(
    *,
    which: Callable[[str], str | None] = shutil.which,
    env: Mapping[str, str] | None = None,
    dev_snd: Path = Path("/dev/snd"),
    platform: str = sys.platform,
) -> Player | None:
    """The first player whose audio output exists here, or None.

    PipeWire's ``pw-play`` and PulseAudio's ``paplay`` need their server's socket; ALSA's
    ``aplay`` needs a playback device under ``/dev/snd``; FFmpeg's ``ffplay`` plays through any
    of the three; macOS always has ``afplay``. The arguments exist for the tests.
    """
    environ = os.environ if env is None else env
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    runtime = Path(runtime_dir) if runtime_dir else None
    if platform == "darwin" and (path := which("afplay")):
        return Player(name="afplay", command=(path,))
    pipewire = _pipewire_running(environ, runtime)
    pulse = _pulse_running(environ, runtime)
    alsa = _alsa_playback_device(dev_snd)
    candidates: list[tuple[bool, str, tuple[str, ...]]] = [
        (pipewire, "pw-play", ()),
        (pulse or pipewire, "paplay", ()),
        (alsa, "aplay", ("-q",)),
        (pipewire or pulse or alsa, "ffplay", ("-nodisp", "-autoexit", "-loglevel", "error")),
    ]
    for available, name, args in candidates:
        if available and (path := which(name)):
            return Player(name=name, command=(path, *args))
    return None


def play(path: Path, player: Player, *, timeout: float | None = None) -> None:
    """Play ``path`` to the end with ``player``; :class:`PlayerError` if it fails."""
    try:
        done = subprocess.run(
            player.argv(path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PlayerError(f"{player.name} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise PlayerError(f"cannot run {player.name}: {exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise PlayerError(
            f"{player.name} failed (exit {done.returncode}): {lines[-1] if lines else 'no message'}"
        )
