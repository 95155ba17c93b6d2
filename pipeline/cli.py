"""The command-line error surface every entry point shares (README "Errors and interruptions").

A user's mistake is refused before any work with one line on stderr (`error: ...`) and exit status 2,
with nothing written; Ctrl-C prints one line and exits 130, and a rerun of the same command resumes.
Entry points raise `UserError` from their checks and hand their `main` to `run_cli`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command
INTERRUPTED = "interrupted: rerun the same command to resume"


class UserError(Exception):
    """A mistake in the command line or its inputs; the message is one line shown as `error: <msg>`."""


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`: UserError -> one line and 2, Ctrl-C -> one line and 130, else main's status."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def one_line(text: str) -> str:
    return " ".join(text.split())


def existing_file(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a Path if it is a regular file, else UserError naming `what` it should have been."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_file():
        raise UserError(f"{what} must be a file, but {p} is {kind_of(p)}")
    if not os.access(p, os.R_OK):
        raise UserError(f"{what} is not readable: {p}")
    return p


def existing_dir(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a Path if it is a directory, else UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_dir():
        raise UserError(f"{what} must be a directory, but {p} is {kind_of(p)}")
    return p


def output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """`path` as a Path if it is a directory or can be created as one (checked, not created)."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{what} must be a directory, but {p} is {kind_of(p)}")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UserError(f"{what} is not writable: {p}")
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} cannot be created: {parent} is {kind_of(parent)}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} cannot be created: {parent} is not writable")
    return p


def output_file(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a Path if it names a file that may be written (not a directory; its folder creatable)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} must be a file name, but {p} is a directory")
    output_dir(p.absolute().parent, f"the folder of {what}")
    return p


def kind_of(p: Path) -> str:
    """A few words for what is at `p`, for error messages."""
    if p.is_symlink() and not p.exists():
        return "a broken link"
    if p.is_dir():
        return "a directory"
    if p.is_file():
        return f"a file of {p.stat().st_size} bytes"
    if not p.exists():
        return "missing"
    return "neither a file nor a directory"


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Append "(default: X)" to the help of every option (of `parser` and its subcommands) whose
    default is a value; flags and options without a default stay as they are. Returns `parser`."""
    for action in parser._actions:  # argparse has no public walk over its actions
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
            continue
        default = action.default
        if default is None or isinstance(default, bool) or default is argparse.SUPPRESS:
            continue
        if not action.option_strings or "%(default)" in (action.help or ""):
            continue
        action.help = f"{action.help or ''} (default: %(default)s)".strip()
    return parser


def quiet_library_progress() -> None:
    """--no-progress for the libraries too: no Hugging Face bars (transformers' "Loading weights",
    hub downloads). Works whether or not transformers is imported yet."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub is imported
    # Already imported ones are switched off directly (the imports then cost nothing).
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the block runs. Worker processes started inside inherit "ignore" from the
    very start (a handler set in the worker's initializer comes only after its imports, and Ctrl-C
    there prints a traceback per worker); the parent handles Ctrl-C again after the block."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def stop_pool_on_interrupt(pool: Any) -> Iterator[None]:
    """On Ctrl-C terminate a ProcessPoolExecutor's workers (started under `sigint_ignored`) instead of
    letting them finish their queued work, then re-raise; reruns redo what they left half-done."""
    try:
        yield
    except KeyboardInterrupt:
        # Terminate first: shutdown() forgets the processes. No public API for this before 3.14.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
