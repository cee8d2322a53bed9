"""What ``callrec serve`` runs beside the recording core, in the same process and loop.

Each front end (web UI, SIP) is a component with ``start()`` and ``stop()``; this is the one
place that decides which run, from the settings. Components start after the recording core
(they may use its catalogue and live sessions) and stop before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from callrec.config import Settings

if TYPE_CHECKING:
    from callrec.server.app import RecordingServer


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_components(settings: Settings, server: RecordingServer) -> list[Component]:
    components: list[Component] = []
    # -- web component registers here (issue 4) --
    if settings.web_enabled:
        from callrec.web import WebComponent

        components.append(WebComponent(settings, server))
    # -- sip component registers here (issue 6) --
    if settings.sip_enabled:
        from callrec.sip.server import SipComponent

        components.append(SipComponent(settings, server))
    return components
