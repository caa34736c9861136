"""The bases of the errors pathoseg raises on purpose, apart from its bugs.

The command line prints a ``PathosegError`` as one line naming the file and the problem (exit 2; 3 for a full disk);
anything else is a bug and keeps its traceback, with a request to report it. Each module's own errors derive from
these (``io.slide.SlideError`` is an ``InputError``, ``io.files.OutputError`` a ``PathosegError``, ...).
"""

from __future__ import annotations


class PathosegError(Exception):
    """Base of every deliberate error: the message names the file or setting and the problem."""


class InputError(PathosegError):
    """A file or folder the user gave cannot be used: a slide, annotations, a data set, model weights."""


class SettingsError(PathosegError):
    """A setting (configuration file, option) that is invalid or cannot be honoured on this machine."""
