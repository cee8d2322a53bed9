"""Calls recorded through the phone front end of a server in this process, and what they
left: the catalogue row and the WAV file."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from callrec.catalog import RecordingInfo
from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.audio import read_wav
from tests.support.waiting import wait_catalogued, wait_received


async def record(
    server: Service,
    codec: str,
    datagrams: Sequence[bytes | RtpPacket],
    *,
    session_id: str = "15082",
    **kw: object,
) -> dict[str, str]:
    """One whole call by a simulated phone: start, ``datagrams`` as fast as they go, stop
    once the server has counted them all (``kw`` go to :class:`PhoneCall`). Returns the
    start answer; the stop answer must be a success, and the row is final on return (the
    server's journal applied: record first, catalogue later)."""
    call = PhoneCall("127.0.0.1", server.control_port, session_id=session_id, codec=codec, **kw)  # type: ignore[arg-type]
    try:
        answer = await call.start()
        assert answer["result"] == "success", answer
        await call.send_packets(datagrams, realtime=False)
        await wait_received(server, session_id, len(datagrams))
        stop = await call.stop("hangup")
        assert stop == {"cmd": "RecordStopResponse", "id": session_id, "result": "success"}
    finally:
        await call.close()
    await wait_catalogued(server)
    return answer


def only_recording(server: Service) -> RecordingInfo:
    rows = server.catalog.find(limit=10)
    assert len(rows) == 1
    return rows[0]


def read_recording(server: Service, rec_id: int) -> tuple[npt.NDArray[np.int16], int]:
    """The samples of a mono recording's file, and its rate."""
    rec = server.catalog.get(rec_id)
    assert rec is not None
    samples, rate = read_wav(server.root / rec.path)
    assert samples.ndim == 1, "not a mono file"
    return samples, rate
