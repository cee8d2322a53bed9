"""``callrec transcribe``: transcribe recordings now, in this process (issue 18).

The engine (``--engine``, default ``transcribe_engine``) is loaded once and run here, not in
``callrec serve``'s workers: for catching up on old recordings, or trying an engine. Each
recording's words replace its transcript before, as the server's job does; safe while the
server runs (a transcript is written in one transaction).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from callrec.cli import ConfigOption, _catalog, app, console, err_console

#: Recordings ``--all`` reads from the catalogue per query.
BATCH = 500


@app.command("transcribe")
def transcribe(
    ids: Annotated[list[int] | None, typer.Argument(help="Recording ids.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every finished recording without a transcript.")
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option(help="pocketsphinx or faster-whisper (default: transcribe_engine)."),
    ] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Transcribe recordings (IDs, or --all without a transcript) with a local engine and
    store their words, replacing any transcript they had. Exit status 1 if one failed."""
    from callrec.catalog import TranscriptStore
    from callrec.jobs.transcription import recording_path, store_transcription
    from callrec.transcribe import TranscribeError, load_engine
    from callrec.transcribe.audio import transcribe_file

    if bool(ids) == every:
        err_console.print("[red]give recording ids or --all (not both)[/red]")
        raise typer.Exit(2)
    settings, catalog = _catalog(config)
    try:
        name = engine or settings.transcribe_engine
        # --engine other than the setting's: its model directory is the setting's only when
        # the setting names that engine too.
        model_dir = settings.transcribe_model_dir if name == settings.transcribe_engine else ""
        try:
            loaded = load_engine(name, model_dir=model_dir, language=settings.transcribe_language)
        except TranscribeError as exc:
            err_console.print(f"[red]cannot load the engine:[/red] {exc}")
            raise typer.Exit(2) from exc
        todo = list(ids or [])
        if every:
            store = TranscriptStore(catalog)
            after = 0
            while batch := store.untranscribed(limit=BATCH, after=after):
                todo.extend(batch)
                after = batch[-1]
        root = settings.recordings_dir.resolve()
        results: list[dict[str, Any]] = []
        failed = 0
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console if as_json else console,
            transient=as_json,
        ) as progress:
            task = progress.add_task("transcribing", total=len(todo))
            for rec_id in todo:
                progress.update(task, description=f"recording {rec_id}")
                rec = catalog.get(rec_id)
                try:
                    if rec is None:
                        raise TranscribeError(f"no recording {rec_id}")
                    result = transcribe_file(loaded, recording_path(root, rec), rec.extra)
                    stored = store_transcription(catalog, rec_id, result)
                except TranscribeError as exc:
                    failed += 1
                    results.append({"id": rec_id, "error": str(exc)})
                    progress.console.print(f"[red]recording {rec_id}:[/red] {exc}")
                else:
                    results.append(
                        {
                            "id": rec_id,
                            "words": len(stored.words),
                            "audio_seconds": round(result.audio_seconds, 2),
                            "elapsed_seconds": round(result.elapsed_seconds, 2),
                        }
                    )
                progress.advance(task)
    finally:
        catalog.close()
    if as_json:
        print(json.dumps({"engine": name, "recordings": results}, indent=2))
    else:
        done = len(results) - failed
        console.print(f"{done} recordings transcribed with {name}, {failed} failed")
    if failed:
        raise typer.Exit(1)
