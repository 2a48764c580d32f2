"""Progress of long operations, one step per blob or layer.

A bar (tqdm) on an interactive terminal; with ``-v`` a log line per step on
stderr; nothing at all otherwise, so pipes and scripts stay clean.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("cmpstore")


class Progress:
    """Call it once per finished step with a label such as ``"conv1 blob 0"``."""

    def __init__(self, total: int | None, description: str, bar: bool):
        self._bar = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit="blob", leave=False, file=sys.stderr)

    def __call__(self, label: str, detail: str = "") -> None:
        log.info("%s%s", label, f": {detail}" if detail else "")
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def silent(label: str, detail: str = "") -> None:
    """A progress callback that does nothing."""


def wants_bar(quiet: bool) -> bool:
    """Bars only for a person at a terminal: both streams interactive and not ``--quiet``."""
    return not quiet and sys.stdout.isatty() and sys.stderr.isatty()
