"""How a command talks to its user: errors the user can fix become one line on stderr and exit status 2
(never a traceback; EMOPORTRAITS_DEBUG=1 shows it anyway), notes go to stderr as ``note: …`` lines.
Every command line of the package (``emoportraits …``, ``python -m emoportraits.data.prepare``, the
training scripts) runs through `run_command`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from .errors import EmoPortraitsError

__all__ = ["run_command", "show_notes"]


def run_command(func: Callable[[argparse.Namespace], object], args: argparse.Namespace, prog: str,
                interrupted: str = "interrupted") -> int:
    """Run a command: errors the user can fix become one line on stderr and exit status 2."""
    try:
        func(args)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    # ImportError: an optional dependency the command needs, its message naming the extra to install
    except (EmoPortraitsError, ValueError, FileNotFoundError, OSError, ImportError) as e:
        if os.environ.get("EMOPORTRAITS_DEBUG"):
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def show_notes(quiet: bool = False) -> None:
    """The package's INFO notes (``emoportraits`` logger) on stderr as ``note: …`` lines; warnings only
    when ``quiet``."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="note: %(message)s")
