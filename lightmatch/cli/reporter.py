"""Progress and results of a batch for the terminal: a tqdm bar and warnings on stderr, JSON lines on stdout."""

from __future__ import annotations

import json
import os
import sys

import click


class Reporter:
    """Turns batch events into a tqdm bar and warnings on stderr and, with ``--json``, JSON lines on stdout."""

    def __init__(self, as_json: bool, quiet: bool, unit: str) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.unit = unit
        self.bar = None
        self.failed_images: set[str] = set()
        self.stdout = sys.stdout  # JSON lines go here even while a Ray run drops its own notices
        self.stdout_open = True

    def __call__(self, event) -> None:
        from ..pipeline.events import BatchStart, ImageEvent, PairEvent

        if isinstance(event, BatchStart):
            for path in event.removed:
                self.warn(f"--overwrite: removed {path}")
            total = event.pairs_todo if self.unit == "pair" else event.images_todo
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit=self.unit, dynamic_ncols=True, leave=False,
                            disable=self.quiet or not sys.stderr.isatty())
            return
        if isinstance(event, ImageEvent):
            if event.status == "failed":
                self.failed_images.add(event.name)
                self.warn(f"{event.error} (image skipped)")
            if self.unit == "image" and event.status in ("extracted", "failed"):
                self.bar.update(1)
            if event.status == "failed" or self.unit == "image":  # match: only failures get an image line
                self.emit(event.to_json())
        elif isinstance(event, PairEvent):
            if event.status == "failed" and not {event.name0, event.name1} & self.failed_images:
                self.warn(f"pair {event.name0} {event.name1} failed: {event.error}")
            for warning in event.warnings:
                self.warn(warning)
            if event.status in ("ok", "failed"):
                self.bar.update(1)
            self.emit(event.to_json())

    def emit(self, obj: dict) -> None:
        if not self.as_json or not self.stdout_open:
            return
        try:
            self.stdout.write(json.dumps(obj) + "\n")
            self.stdout.flush()
        except BrokenPipeError:  # the reader went away (e.g. `| head`): keep working, stop printing
            self.stdout_open = False
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stdout.fileno())

    def warn(self, message: str) -> None:
        line = f"lightmatch: warning: {message}"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
