"""What every command shares: one-line errors with a non-zero exit, logging, progress bars."""

from __future__ import annotations

import functools
import sys
import traceback
from typing import NoReturn

import click
from tqdm import tqdm

from pathoseg import __version__
from pathoseg.errors import PathosegError
from pathoseg.io.files import DiskFullError

BUG_REPORT = (
    "this is a bug in pathoseg {version}, not a problem with your input: please report it with the "
    "traceback above and the command you ran"
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def friendly_errors(command):
    """Expected failures (``PathosegError``: bad input, settings, output folder, cluster) end in one line
    ``error: <file>: <problem>`` and exit 2 (3 for a full disk); anything else is a bug: its traceback, a request to
    report it, exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        """Run the command; expected failures end in one line, bugs in a traceback and a request to report them."""
        try:
            return command(*args, **kwargs)
        except DiskFullError as error:
            fail(str(error), 3)
        except PathosegError as error:
            fail(str(error).splitlines()[0] if str(error) else error.__class__.__name__)
        except KeyboardInterrupt:
            fail("interrupted; rerun the same command to resume", 130)
        except Exception:
            traceback.print_exc()
            fail(BUG_REPORT.format(version=__version__), 1)

    return wrapper


class StageProgress:
    """tqdm bars for the pipeline's ``progress(stage, increment, total)`` callback."""

    def __init__(self, enabled: bool = True, prefix: str = ""):
        self.enabled, self.prefix = enabled, prefix
        self.bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, increment: int, total: int) -> None:
        if not self.enabled:
            return
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(
                total=total, desc=f"{self.prefix}{stage}", unit=stage[:-1] or stage, leave=False, file=sys.stderr
            )
        bar.update(increment)

    def close(self) -> None:
        """Close every bar."""
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
