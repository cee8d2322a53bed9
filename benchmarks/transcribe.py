"""What transcription (issue 18) costs and how well it hears: times real time per core and
word error rate of each engine available, and the recording benchmark's loss while
transcription runs.

**Accuracy and speed.** A few sentences are said by espeak-ng (``en-us+f2``, 130 words a
minute: see tests/support/speech.py), passed through a call's codec (PCMA at 8 kHz, G.722 at
16 kHz: our own encoder and decoder, as a recording holds them), and transcribed by each
engine, each sentence alone. "x real time per core" is the audio's seconds over the CPU
seconds this process spent in the engine (user + system); the word error rate is the word
edit distance to the sentence over its words (substitutions, deletions, insertions). A
synthetic voice is not a caller: real calls differ (worse for PocketSphinx on noisy lines,
usually better for Whisper).

**Recording while transcribing.** ``--load-calls`` calls of ``--load-seconds`` are recorded by
``benchmarks/ingest.py`` (its own ``callrec serve``) while ``--workers`` niced worker
processes (the server's :class:`~callrec.transcribe.pool.TranscriberPool`) transcribe a long
recording over and over; the loss must stay 0. Every run is printed and kept as JSON under
``--out``.

    .venv/bin/python benchmarks/transcribe.py
    .venv/bin/python benchmarks/transcribe.py --whisper-model /srv/models/faster-whisper-small
    .venv/bin/python benchmarks/transcribe.py --load-calls 100 --load-seconds 20 --workers 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from callrec.codecs import get_codec
from callrec.transcribe import load_engine
from callrec.transcribe.pool import TranscriberPool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support: espeak-ng sentences

from tests.support.speech import speak, write_wav  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "transcribe"

SENTENCES = (
    "please send the invoice for the blue car tomorrow morning",
    "i would like to cancel my order",
    "thank you for calling the support line",
    "my account number is seven four two",
    "the weather is lovely today in london",
)
#: Call layouts: (rate, codec).
LAYOUTS = {"16k-G722": (16000, "G722"), "8k-PCMA": (8000, "PCMA")}


def word_errors(reference: str, heard: str) -> tuple[int, int]:
    """(edits, reference words): the Levenshtein distance over words."""
    ref, hyp = reference.split(), heard.split()
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1], len(ref)


def through_codec(pcm: np.ndarray, codec_name: str) -> np.ndarray:
    codec = get_codec(codec_name)
    decoded = codec.decoder().decode(codec.encoder().encode(pcm.astype("<i2").tobytes()))
    return np.frombuffer(decoded, dtype="<i2")[: len(pcm)].astype(np.int16)


def engines(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, model dir) of every engine this machine can run."""
    found = [("pocketsphinx", "")]
    if args.whisper_model and importlib.util.find_spec("faster_whisper") is not None:
        found.append(("faster-whisper", args.whisper_model))
    return found


def accuracy(name: str, model_dir: str) -> list[dict[str, Any]]:
    engine = load_engine(name, model_dir=model_dir, language="en")
    rows = []
    for layout, (rate, codec) in LAYOUTS.items():
        audio = cpu = 0.0
        edits = words = 0
        for sentence in SENTENCES:
            pcm = through_codec(speak(sentence, rate), codec)
            start = time.process_time()
            heard = " ".join(w.text.lower().strip(".,?!") for w in engine.transcribe(pcm, rate))
            cpu += time.process_time() - start
            audio += len(pcm) / rate
            e, n = word_errors(sentence, heard)
            edits += e
            words += n
        rows.append(
            {
                "engine": name,
                "layout": layout,
                "audio_seconds": round(audio, 2),
                "cpu_seconds": round(cpu, 2),
                "x_real_time_per_core": round(audio / cpu, 2) if cpu else None,
                "word_error_rate": round(edits / words, 3),
            }
        )
    return rows


def under_load(args: argparse.Namespace, name: str, model_dir: str) -> dict[str, Any]:
    """The ingest benchmark while ``--workers`` niced processes transcribe without a pause."""
    with tempfile.TemporaryDirectory() as tmp:
        long_call = Path(tmp) / "call.wav"
        speech = np.concatenate([speak(s, 8000) for s in SENTENCES * 4])
        write_wav(str(long_call), through_codec(speech, "PCMA"), 8000)
        pool = TranscriberPool(name, model_dir=model_dir, workers=args.workers)
        stop = threading.Event()
        done = [0]

        def keep_busy() -> None:
            while not stop.is_set():
                pool.transcribe_blocking(long_call, {})
                done[0] += 1

        # Warm up: the workers are started and their engines loaded before the calls.
        for _ in range(args.workers):
            pool.transcribe_blocking(long_call, {})
        busy = [threading.Thread(target=keep_busy, daemon=True) for _ in range(args.workers)]
        for thread in busy:
            thread.start()
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "ingest.py"),
            "--calls",
            str(args.load_calls),
            "--seconds",
            str(args.load_seconds),
            "--no-save",
            "--json",
            "--quiet",
        ]
        began = time.monotonic()
        ran = subprocess.run(command, capture_output=True, text=True, check=False)
        stop.set()
        for thread in busy:
            thread.join()
        pool.close()
    if ran.returncode not in (0, 1) or not ran.stdout.strip():
        raise SystemExit(f"ingest.py failed ({ran.returncode}): {ran.stderr[-2000:]}")
    report = json.loads(ran.stdout)["reports"][0]
    return {
        "engine": name,
        "workers": args.workers,
        "calls": report["calls"],
        "calls_ok": report["calls_ok"],
        "seconds": report["seconds"],
        "loss_percent": report["loss_percent"],
        "packets_lost": report["packets_lost"],
        "packets_late": report["packets_late"],
        "kernel_drops": report["kernel_drops"],
        "verified": report["verified"],
        "verify_failed": report["verify_failed"],
        "transcriptions_during_run": done[0],
        "wall_seconds": round(time.monotonic() - began, 1),
        "problems": report["problems"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--whisper-model", default="", help="a faster-whisper model directory")
    p.add_argument("--load-calls", type=int, default=20, help="calls of the ingest run")
    p.add_argument("--load-seconds", type=float, default=15.0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-load", action="store_true", help="skip the recording-under-load run")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    began = datetime.now(UTC)
    result: dict[str, Any] = {
        "when": began.isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "accuracy": [],
        "under_load": [],
    }
    for name, model_dir in engines(args):
        for row in accuracy(name, model_dir):
            result["accuracy"].append(row)
            print(
                f"{row['engine']:>15} {row['layout']:>9}: {row['x_real_time_per_core']:>6}x real "
                f"time per core, WER {100 * row['word_error_rate']:.1f}% "
                f"({row['audio_seconds']} s of speech)"
            )
    if not args.no_load:
        name, model_dir = engines(args)[-1]
        load = under_load(args, name, model_dir)
        result["under_load"].append(load)
        print(
            f"recording {load['calls']} calls x {load['seconds']:g} s while {load['workers']} "
            f"{name} workers transcribe ({load['transcriptions_during_run']} runs of a "
            f"{len(SENTENCES) * 4}-sentence call): loss {load['loss_percent']}%, "
            f"{load['packets_lost']} lost, {load['packets_late']} late, kernel drops "
            f"{load['kernel_drops']}, {load['verified']} files verified, "
            f"{load['verify_failed']} failed"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"transcribe-{began.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path}")
    bad = any(r["loss_percent"] not in (0, 0.0) for r in result["under_load"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
