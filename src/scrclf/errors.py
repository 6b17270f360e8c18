"""The one error family of scrclf.

Every error that a user can cause (bad data, settings, model folders, outputs) is a
:class:`ScrClfError`. Front ends (the ``scrclf`` command and the scripts) catch this family
alone and end with one line and exit status 2; anything else is a bug and shows its
traceback. Each class also derives from the built-in exception it refines (``ValueError``,
``OSError``, ``FileNotFoundError``), so code written against those keeps working.
"""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2


class ScrClfError(Exception):
    """Base of every error a user can cause and fix; the message says what and where."""


class DataError(ScrClfError, ValueError):
    """Bad input data, located by file, line and field."""

    def __init__(
        self,
        message: str,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        where = ""
        if self.file is not None:
            where = self.file
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)
        self.problem = message


class SettingsError(ScrClfError, ValueError):
    """A configuration value is missing, of the wrong type or out of range; names the setting."""


class TaskConfigError(SettingsError):
    """A task specification is malformed."""


class TrainingConfigError(SettingsError):
    """Training cannot start or go on with these settings."""


class SearchConfigError(SettingsError):
    """The hyperparameter search settings are malformed."""


class EncoderNotFoundError(ScrClfError, FileNotFoundError):
    """The encoder or tokenizer named by ``model.encoder``/``model.tokenizer`` is not installed."""


class ModelLoadError(ScrClfError, ValueError):
    """A model folder cannot be loaded; the message starts with the file at fault."""

    def __init__(self, message: str, file: str | Path | None = None):
        self.file = str(file) if file is not None else None
        self.problem = message
        super().__init__(f"{file}: {message}" if file is not None else message)


class ModelIntegrityError(ModelLoadError):
    """A file differs from what ``manifest.json`` records (changed, truncated or missing)."""


class UnsafeModelError(ModelLoadError):
    """The folder holds or names a pickle file, or names a path outside itself."""


class ExportError(ScrClfError, ValueError):
    """An export cannot be made; the message names the file or setting at fault."""


class PackagingError(ExportError):
    """The wheel cannot be built; the message names the setting or file at fault."""


class OutputError(ScrClfError, OSError):
    """A result could not be written; nothing partial was left behind."""

    def __str__(self) -> str:  # the message alone, without "[Errno N]" and the file name
        return self.strerror or super().__str__()


def one_line(err: BaseException) -> str:
    """The message of an error on one line: ``<file>[:<line>]: <problem>`` where known."""
    if isinstance(err, OutputError):
        text = err.strerror or str(err)
    elif isinstance(err, OSError) and not isinstance(err, ValueError):
        text = (f"{err.filename}: " if err.filename else "") + (err.strerror or str(err))
    else:
        text = str(err)
    return " ".join(str(text).split())
