"""The console reports print to: rich styling on a terminal, plain text everywhere else.

Pipes, files and notebooks get whole rows at a fixed width and no escape codes, so a saved
notebook or a redirected report reads the same as the screen without ANSI noise.
"""

from __future__ import annotations

import sys

from rich.console import Console


def report_console(width: int = 120) -> Console:
    if sys.stdout.isatty():
        return Console()
    # force_jupyter=False: in a notebook, rich would otherwise store an HTML copy and an ANSI text copy
    return Console(width=width, force_jupyter=False, force_terminal=False, no_color=True)
