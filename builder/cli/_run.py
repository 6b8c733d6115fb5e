"""The one place where an exception becomes output and an exit code, for `swcli` and the model image's entrypoint.

A :class:`~builder.errors.SwcliError` prints its one line and exits with its ``exit_code``; a usage error (unknown
option, bad value) prints one line and exits 2; Ctrl-C exits 130; a stray ``OSError`` (a read-only folder, a
full disk, a path that is a file) prints one line naming the path. Anything else is a bug and keeps its traceback.

Usage errors are recognised by their class's name anywhere in the MRO (``ClickException``), not by importing
``click``: typer 0.29 vendors click and a fresh install has no ``click`` package at all.
"""

from __future__ import annotations

import gc
import sys

import typer

from builder.errors import SwcliError
from builder.evaluate.runner.gcpolicy import freeze_after_load
from builder.text import shown

INTERRUPTED = 130


def _say(message: str) -> None:
    """The one error line: whitespace runs (newlines too) as one space, control characters neutralised (the message
    may quote a registry's words, a pulled run's field or a file name: :func:`builder.text.shown`)."""
    print(f"swcli: error: {shown(' '.join(message.split()))}", file=sys.stderr)


def _usage_error(err: BaseException) -> bool:
    return any(cls.__name__ == "ClickException" for cls in type(err).__mro__)


def _usage_line(err) -> str:
    ctx = getattr(err, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{err.format_message()}{hint}"


def _os_error_line(err: OSError) -> str:
    what = err.strerror or str(err)
    if err.filename is None:
        return f"{what} ({type(err).__name__})"
    where = str(err.filename) + (f" -> {err.filename2}" if err.filename2 is not None else "")
    return f"{where}: {what}"


def run(app: typer.Typer, argv: list[str] | None, prog_name: str, *, exiting: bool = False) -> int:
    """Run a typer app and map whatever it raises to one stderr line and an exit code.

    ``exiting``: the process ends when this returns (a console script, not a test calling ``main``). The command
    is done and its files are closed then, so the interpreter's final garbage collection is kept off what it
    loaded: walking torch's object graph at exit costs ~0.4 s of every ``model eval`` (measured here).
    """
    if exiting:
        freeze_after_load()  # builder.evaluate.runner.gcpolicy: the model a command loads stays until the process ends
    try:
        return _run(app, argv, prog_name)
    finally:
        if exiting:
            gc.freeze()


def _run(app: typer.Typer, argv: list[str] | None, prog_name: str) -> int:
    try:
        result = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except SwcliError as err:
        _say(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        _say("interrupted; nothing half-built was kept")
        return INTERRUPTED
    except typer.Exit as ex:  # --help, --version, a command's own exit code
        return ex.exit_code
    except typer.Abort as err:  # click turns Ctrl-C outside a command body into Abort
        if isinstance(err.__cause__ or err.__context__, KeyboardInterrupt):
            _say("interrupted; nothing half-built was kept")
            return INTERRUPTED
        _say("aborted")
        return 1
    except OSError as err:
        _say(_os_error_line(err))
        return 1
    except Exception as err:
        if _usage_error(err):
            if err.format_message():  # no_args_is_help has printed the help already: nothing more to say
                _say(_usage_line(err))
            return int(getattr(err, "exit_code", 2))
        raise
    # standalone_mode=False returns a typer.Exit's code instead of raising it
    return result if isinstance(result, int) else 0
