"""The few errors a user can cause; the CLI turns each into a one-line message and an exit code."""

from __future__ import annotations


class LcdocError(Exception):
    """Base of every error lcdoc reports to the user rather than crashing on."""

    exit_code = 1


class UsageError(LcdocError):
    """Arguments that cannot work together (exit 2, like a shell tool's bad usage)."""

    exit_code = 2


class InputFileError(LcdocError):
    """A file that cannot be read as a document: missing, corrupt, encrypted, empty, binary."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):  # picklable, so a PDF worker process can raise it to the parent
        return (type(self), (self.path, self.problem))


class NothingToReadError(LcdocError):
    """No document to work on: an empty folder, only unreadable files, an empty index (exit 1,
    the same for every command)."""


class IndexMissingError(LcdocError):
    """The named index does not exist."""


class IndexLockedError(LcdocError):
    """Another process is writing the same index."""


class IndexWriteError(LcdocError):
    """The index cannot be written: its folder is read-only, or the disk is full."""


class ModelMissingError(LcdocError):
    """The model file is missing or is not a GGUF / embedding model."""


class DoesNotFitError(LcdocError):
    """The model or the requested context does not fit the memory available."""


class Cancelled(BaseException):
    """Work stopped on purpose (its client went away): like KeyboardInterrupt, a BaseException,
    so no handler that names one bad file and goes on to the next can swallow it."""
