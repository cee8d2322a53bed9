"""What the recorder made of a load run: its counters, its files, and the report.

After the load, :func:`catalogue_totals` sums callrec's catalogue counters over the run's
calls, and :func:`verify_recording` checks a sample of the recordings against the audio that
was sent: the decoded payloads, sample for sample, except where a lost packet became
silence. :func:`make_report` puts every figure of the run (loss, CPU and memory per call,
start and stop latencies, the generator's own lateness) and every reason to fail it into a
:class:`LoadReport`.
"""

from __future__ import annotations

import dataclasses
import time
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from callrec.codecs import get_codec
from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadrun import PACKET_MS, PACKETS_PER_SECOND, LoadRun

#: The verification looks this far for the first packet of a file whose start was lost.
MAX_LEAD_SEARCH: Final = 1000
#: A send tick later than this (p99) means the generator could not keep real time.
LATE_TICK_MS: Final = 100.0
#: Seconds the report waits for the last rows to be finished in the catalogue, and how often
#: it looks.
ROWS_WAIT: Final = 60.0
ROWS_POLL: Final = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class FileCheck:
    """The verification of one recording against the audio its phone sent."""

    call: int
    path: str
    ok: bool
    #: 20 ms frames equal to the decoded payload sent in that place.
    audio_frames: int = 0
    #: Frames of silence, where the recorder filled a lost packet.
    silent_frames: int = 0
    #: Sent packets missing before the first and after the last frame of the file.
    leading_missing: int = 0
    trailing_missing: int = 0
    mismatched: int = 0
    problem: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderTotals:
    """What the recorder says it got, summed over the calls."""

    received: int
    recorded: int
    lost: int
    late: int
    #: Calls whose recording is finalised (catalogue status complete / file closed).
    finalised: int


@dataclass(slots=True, kw_only=True)
class LoadReport:
    """Every figure of one load test; :meth:`as_dict` for ``--json``."""

    recorder: str
    codec: str
    calls: int
    calls_ok: int
    seconds: float
    ramp: float
    packets_sent: int
    send_errors: int
    packets_received: int | None
    packets_recorded: int | None
    #: Gaps the recorder saw in the sequence numbers (its ``lost`` counter).
    packets_lost: int | None
    packets_late: int | None
    #: (sent - received) / sent, and late / sent, in percent.
    loss_percent: float | None
    late_percent: float | None
    kernel_drops: int | None
    #: Recorder CPU in percent of one core over the window, per call, per packet.
    cpu_percent: float | None
    cpu_window: str
    cpu_window_seconds: float
    cpu_per_call_percent: float | None
    cpu_us_per_packet: float | None
    rss_before_kib: int | None
    rss_peak_kib: int | None
    rss_per_call_kib: float | None
    processes: int
    start_ms_median: float | None
    start_ms_p99: float | None
    #: Stop request -> its answer (files closed, end journaled).
    stop_ms_median: float | None
    stop_ms_p99: float | None
    #: Stop request -> the row's end committed in the catalogue (its ``updated_at``).
    stop_row_ms_median: float | None = None
    stop_row_ms_p99: float | None = None
    tick_lag_ms_p99: float
    tick_lag_ms_max: float
    #: The generator's own CPU over the same window, percent of one core (when the recorder
    #: runs in this process, as in the tests, it includes the recorder).
    loadgen_cpu_percent: float | None
    loadgen_nice: int
    verified: int
    verify_failed: int
    checks: list[FileCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Remarks that are no failure (how a figure was taken).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        return data


# -- verification ----------------------------------------------------------------------------


def verify_recording(
    path: Path,
    audio: AudioLoop,
    packets_sent: int,
    *,
    audio_offset: int = 0,
    call: int = -1,
    expected_audio_frames: int | None = None,
) -> FileCheck:
    """Compare a recording with what its phone sent, frame by frame.

    Frame ``k`` of the file must be the decoded payload of packet ``lead + k`` (``lead``:
    packets lost before the first one recorded; packet ``j`` carries loop payload
    ``audio_offset + j``), decoded by callrec's decoder fed every
    payload recorded before it, exactly; or silence, where a packet was lost or came late.
    ``expected_audio_frames`` (the recorder's own count) must equal the frames of audio.
    """
    codec = audio.codec
    name = str(path)

    def failed(problem: str, *, trailing_missing: int = 0) -> FileCheck:
        return FileCheck(
            call=call, path=name, ok=False, problem=problem, trailing_missing=trailing_missing
        )

    try:
        with wave.open(name, "rb") as wav:
            params = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
            data = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        return failed(f"cannot read the file: {exc}")
    if params != (1, 2, codec.sample_rate):
        return failed(
            f"{params[0]} channel(s), {8 * params[1]}-bit, {params[2]} Hz; expected mono "
            f"16-bit {codec.sample_rate} Hz"
        )
    samples = np.frombuffer(data, dtype="<i2")
    size = audio.frame_samples
    if len(samples) % size:
        return failed(f"{len(samples)} samples is not a whole number of {size}-sample packets")
    frames = samples.reshape(-1, size)
    count = len(frames)
    if count == 0:
        return failed("the file holds no audio", trailing_missing=packets_sent)
    if count > packets_sent:
        return failed(f"the file holds {count} packets of audio, {packets_sent} were sent")
    first = frames[0].tobytes()
    lead = next(
        (
            k
            for k in range(min(packets_sent - count, MAX_LEAD_SEARCH) + 1)
            if codec.decoder().decode(audio.payload(audio_offset + k)) == first
        ),
        None,
    )
    if lead is None:
        return failed("the first frame of the file is none of the first packets sent")
    decoder = codec.decoder()
    audio_frames = silent = mismatched = 0
    first_bad = -1
    for k in range(count):
        frame = frames[k]
        if not frame.any():
            silent += 1  # a lost packet: the recorder wrote silence and decoded nothing
            continue
        if decoder.decode(audio.payload(audio_offset + lead + k)) == frame.tobytes():
            audio_frames += 1
        else:
            mismatched += 1
            if first_bad < 0:
                first_bad = k
    check = FileCheck(
        call=call,
        path=name,
        ok=True,
        audio_frames=audio_frames,
        silent_frames=silent,
        leading_missing=lead,
        trailing_missing=packets_sent - lead - count,
        mismatched=mismatched,
    )
    if mismatched:
        # A run of zeros reaching into the first bad frame: silence that is not a whole
        # number of packets long, after which everything is shifted.
        bad, before = frames[first_bad], frames[first_bad - 1] if first_bad else None
        shifted = not bad[:8].any() or (before is not None and not before[-8:].any())
        why = ", after a gap that is not a whole number of packets" if shifted else ""
        # A stateless codec (G.711) shows a gap left unfilled: the frame is a later packet.
        here = audio_offset + lead + first_bad
        ahead = next(
            (
                d
                for d in range(1, len(audio.payloads))
                if codec.decoder().decode(audio.payload(here + d)) == bad.tobytes()
            ),
            None,
        )
        if ahead is not None:
            why = (
                f": the audio jumps {ahead} packets ahead (mod {len(audio.payloads)}), "
                "a gap left unfilled"
            )
        return dataclasses.replace(
            check,
            ok=False,
            problem=f"{mismatched} of {count} frames differ from the audio sent (first at "
            f"{first_bad * PACKET_MS / 1000:.2f} s{why})",
        )
    if expected_audio_frames is not None and audio_frames != expected_audio_frames:
        return dataclasses.replace(
            check,
            ok=False,
            problem=f"the file has {audio_frames} packets of audio, the recorder counts "
            f"{expected_audio_frames} recorded",
        )
    return check


def sample_indices(population: Sequence[int], k: int) -> list[int]:
    """``k`` members spread evenly over ``population`` (deterministic), first and last in."""
    n = len(population)
    if k <= 0 or n == 0:
        return []
    if k >= n:
        return list(population)
    if k == 1:
        return [population[0]]
    return sorted({population[round(j * (n - 1) / (k - 1))] for j in range(k)})


# -- the report ------------------------------------------------------------------------------


def _percentile_ms(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values) * 1000, q))


def make_report(
    recorder: str,
    run: LoadRun,
    totals: RecorderTotals | None,
    checks: Sequence[FileCheck],
    problems: Sequence[str] = (),
) -> LoadReport:
    """Every figure of the run, and every reason to fail it, in one report."""
    options = run.options
    ok_calls = [c for c in run.calls if c.ok]
    sent = sum(c.packets_sent for c in run.calls)
    issues = list(problems)
    failed = [c for c in run.calls if not c.ok]
    if failed:
        reasons: dict[str, int] = {}
        for c in failed:
            reasons[str(c.error)] = reasons.get(str(c.error), 0) + 1
        worst = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        issues.append(
            f"{len(failed)} of {len(run.calls)} calls failed: "
            + "; ".join(f"{n} x {reason}" for reason, n in worst)
        )
    loss = late = None
    if totals is not None and sent:
        loss = 100 * (sent - totals.received) / sent
        late = 100 * totals.late / sent
        if loss > options.max_loss:
            issues.append(
                f"loss {loss:.4f}% ({sent - totals.received} of {sent} packets) is over "
                f"--max-loss {options.max_loss:g}%"
            )
        if totals.finalised < len(ok_calls):
            issues.append(f"only {totals.finalised} of {len(ok_calls)} recordings are finalised")
    elif totals is None:
        issues.append("no recorder counters: loss is unknown")
    bad = [c for c in checks if not c.ok]
    for check in bad[:5]:
        issues.append(f"verification failed for call {check.call}: {check.problem} ({check.path})")
    if len(bad) > 5:
        issues.append(f"... and {len(bad) - 5} more recordings failed verification")
    # The CPU window: every call streaming, else (a ramp longer than a call) first to last.
    window = "steady"
    start, end = run.marks.get("steady_start"), run.marks.get("steady_end")
    if start is None or end is None or end.at - start.at < 1.0:
        window = "streaming"
        start, end = run.marks.get("stream_start"), run.marks.get("stream_end")
    cpu = per_call = per_packet = own = None
    seconds = 0.0
    if start is not None and end is not None and end.at > start.at:
        seconds = end.at - start.at
        own = 100 * (end.own_cpu - start.own_cpu) / seconds
        if start.processes:
            cpu = 100 * (end.cpu - start.cpu) / seconds
            # Calls streaming on average over the window: all of them in the steady window.
            streaming = len(ok_calls) if window == "steady" else _mean_streaming(run, seconds)
            if streaming:
                per_call = cpu / streaming
                per_packet = 1e6 * (cpu / 100) / (streaming * PACKETS_PER_SECOND)
    rss_before = (
        run.baseline.rss_kib if run.baseline is not None and run.baseline.processes else None
    )
    rss_peak = max((s.rss_kib for s in run.samples if s.processes), default=None)
    per_call_rss = None
    if rss_before is not None and rss_peak is not None and ok_calls:
        per_call_rss = max(0, rss_peak - rss_before) / len(ok_calls)
    notes = []
    lag_p99 = _percentile_ms(run.lags, 99) or 0.0
    if lag_p99 > LATE_TICK_MS:
        notes.append(
            f"the generator ran late (tick lag p99 {lag_p99:,.0f} ms): packets went out in "
            "bursts and below the asked rate; the machine is overloaded, read the figures so"
        )
    if window == "streaming":
        notes.append(
            "no steady window (a call ended before the last began): CPU per call is "
            "over first packet to last, per call streaming on average"
        )
    starts = [c.start_seconds for c in run.calls if c.start_seconds is not None]
    stops = [c.stop_seconds for c in run.calls if c.stop_seconds is not None]
    rows = [c.stop_row_seconds for c in run.calls if c.stop_row_seconds is not None]
    return LoadReport(
        recorder=recorder,
        codec=get_codec(options.codec).name,
        calls=options.calls,
        calls_ok=len(ok_calls),
        seconds=options.seconds,
        ramp=options.ramp,
        packets_sent=sent,
        send_errors=sum(c.send_errors for c in run.calls),
        packets_received=totals.received if totals else None,
        packets_recorded=totals.recorded if totals else None,
        packets_lost=totals.lost if totals else None,
        packets_late=totals.late if totals else None,
        loss_percent=loss,
        late_percent=late,
        kernel_drops=run.kernel_drops,
        cpu_percent=cpu,
        cpu_window=window,
        cpu_window_seconds=seconds,
        cpu_per_call_percent=per_call,
        cpu_us_per_packet=per_packet,
        rss_before_kib=rss_before,
        rss_peak_kib=rss_peak,
        rss_per_call_kib=per_call_rss,
        processes=max((s.processes for s in run.samples), default=0),
        start_ms_median=_percentile_ms(starts, 50),
        start_ms_p99=_percentile_ms(starts, 99),
        stop_ms_median=_percentile_ms(stops, 50),
        stop_ms_p99=_percentile_ms(stops, 99),
        stop_row_ms_median=_percentile_ms(rows, 50),
        stop_row_ms_p99=_percentile_ms(rows, 99),
        tick_lag_ms_p99=lag_p99,
        tick_lag_ms_max=1000 * max(run.lags, default=0.0),
        loadgen_cpu_percent=own,
        loadgen_nice=run.nice,
        verified=len(checks),
        verify_failed=len(bad),
        checks=list(checks),
        problems=issues,
        notes=notes,
    )


def _mean_streaming(run: LoadRun, seconds: float) -> float:
    return sum(c.packets_sent for c in run.calls) / PACKETS_PER_SECOND / seconds


# -- callrec: catalogue and files ----------------------------------------------------------------


def catalogue_totals(
    database_url: str, run: LoadRun, *, wait: float = ROWS_WAIT
) -> tuple[RecorderTotals, dict[int, Any], list[str]]:
    """Sum the catalogue's counters over this run's calls (found by their devices).

    The rows follow the calls through the server's journal ("Record first"), so a row may
    still say ``recording`` (checkpoint counters) just after its stop was answered: this waits
    up to ``wait`` seconds for every row to be finished, rather than count its last packets
    as lost. Each call's stop -> row time (``stop_row_seconds``) is set from the row's
    ``updated_at``, the time its end was written (its commit follows within the batch)."""
    from callrec.catalog import STATUS_COMPLETE, STATUS_RECORDING, Catalog

    by_device = {c.device: c.index for c in run.calls}
    problems: list[str] = []
    deadline = time.monotonic() + wait
    with Catalog(database_url) as catalog:
        while True:
            rows = catalog.find(
                since=run.began - timedelta(seconds=60), limit=len(by_device) + 10_000
            )
            found: dict[int, Any] = {}
            for row in rows:
                index = by_device.get(row.device)
                if index is not None and row.session_id == run.calls[index].session_id:
                    found[index] = row
            pending = [
                c.index
                for c in run.calls
                if c.ok and (c.index not in found or found[c.index].status == STATUS_RECORDING)
            ]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(ROWS_POLL)
    missing = [c.index for c in run.calls if c.ok and c.index not in found]
    if missing:
        problems.append(f"{len(missing)} calls have no catalogue row (e.g. call {missing[0]})")
    open_rows = [i for i, row in found.items() if row.status == STATUS_RECORDING]
    if open_rows:
        problems.append(
            f"{len(open_rows)} rows still say recording {wait:g} s after the run "
            f"(e.g. call {open_rows[0]})"
        )
    received = recorded = lost = late = finalised = 0
    for index, row in found.items():
        received += row.packets_received
        recorded += _recorded(row)
        lost += row.packets_lost
        late += row.packets_late
        finalised += row.status == STATUS_COMPLETE
        call = run.calls[index]
        if row.status != STATUS_RECORDING and call.stop_sent_at is not None:
            call.stop_row_seconds = max(0.0, row.updated_at.timestamp() - call.stop_sent_at)
    totals = RecorderTotals(
        received=received, recorded=recorded, lost=lost, late=late, finalised=finalised
    )
    return totals, found, problems


def _recorded(row: Any) -> int:
    """Packets whose audio is in the file: received, less what the stream core dropped."""
    dropped = (
        row.packets_late
        + row.packets_duplicate
        + row.packets_foreign
        + row.packets_malformed
        + row.packets_other
    )
    return int(row.packets_received - dropped)


def verify_catalogued(
    run: LoadRun, audio: AudioLoop, rows: Mapping[int, Any], recordings_dir: Path, k: int
) -> list[FileCheck]:
    """Verify ``k`` recordings spread over the calls that went well and have a row."""
    checks = []
    for index in sample_indices(sorted(i for i in rows if run.calls[i].ok), k):
        row = rows[index]
        checks.append(
            verify_recording(
                recordings_dir / row.path,
                audio,
                run.calls[index].packets_sent,
                audio_offset=run.calls[index].audio_offset,
                call=index,
                expected_audio_frames=_recorded(row),
            )
        )
    return checks
