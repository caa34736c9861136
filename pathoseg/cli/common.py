"""What every command shares: one-line errors with a non-zero exit, logging, progress bars."""

from __future__ import annotations

import functools
import logging
import sys

import click
from tqdm import tqdm

from pathoseg.config import ConfigError
from pathoseg.distributed import ClusterError
from pathoseg.io.slide import SlideError
from pathoseg.models.weights import CheckpointError
from pathoseg.io.files import DiskFullError, OutputError

USER_ERRORS = (SlideError, OutputError, CheckpointError, ConfigError, ClusterError, FileNotFoundError, ValueError)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def friendly_errors(command):
    """Turn expected failures into ``error: <file>: <problem>`` on one line and exit 2 (3 for a full disk, 1 for the
    unexpected)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DiskFullError as error:
            fail(str(error), 3)
        except USER_ERRORS as error:
            fail(str(error).splitlines()[0] if str(error) else error.__class__.__name__)
        except KeyboardInterrupt:
            fail("interrupted; rerun the same command to resume", 130)
        except Exception as error:  # the last line of defence: still one line, no traceback
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            fail(f"unexpected {error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''} "
                 "(rerun with -v for details)", 1)

    return wrapper


class StageProgress:
    """tqdm bars for the pipeline's ``progress(stage, increment, total)`` callback."""

    def __init__(self, enabled: bool = True, prefix: str = ""):
        self.enabled, self.prefix, self.bars = enabled, prefix, {}

    def __call__(self, stage: str, increment: int, total: int) -> None:
        if not self.enabled:
            return
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=f"{self.prefix}{stage}", unit=stage[:-1] or stage,
                                          leave=False, file=sys.stderr)
        bar.update(increment)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
