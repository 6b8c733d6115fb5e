"""Importing user code named by ``module:Class`` from a project folder.

Users name their slicer and handler as ``code.data_slicer:CIFAR10Slicer``, relative to the folder that holds
the yaml. Importing it must not leak that folder onto ``sys.path`` for longer than needed, must not reuse a
same-named module imported from another project earlier in the process (``code`` is a popular name), and every
failure must say which file and field named the class.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from typing import Iterator

from builder.errors import SpecError, USER_CODE_ERRORS


@contextlib.contextmanager
def project_on_path(root: Path) -> Iterator[None]:
    """Put ``root`` first on ``sys.path`` while importing; imported modules stay in ``sys.modules``."""
    root_str = str(Path(root).resolve())
    sys.path.insert(0, root_str)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(root_str)


def _evict(module_name: str) -> None:
    """Forget cached modules of the same top-level package, so the import reads the files as they are now.

    Two projects often both call their package ``code``; and in a long-lived process (tests, notebooks) the user
    may have edited the file since the last import. Instances made from the old modules keep working.
    """
    top = module_name.split(".")[0]
    if top == "builder":  # never our own package; a user package named like a stdlib one (the seed's `code`) must win
        return
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def load_class(ref: str, root: Path, base: type, *, spec_file: Path, field: str) -> type:
    """Import ``module:Class`` from ``root`` and check it subclasses ``base``.

    Errors are :class:`SpecError` naming ``spec_file`` and ``field``; an exception raised *inside* the user's
    module while importing is reported with its type and message, not its traceback.
    """
    module_name, _, class_name = ref.partition(":")
    root = Path(root).resolve()
    with project_on_path(root):
        _evict(module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                raise SpecError(spec_file, f"cannot import '{module_name}': no module '{err.name}' under {root}", field=field) from None
            raise SpecError(spec_file, f"importing '{module_name}' failed: {err}", field=field) from None
        except SyntaxError as err:
            raise SpecError(spec_file, f"importing '{module_name}' failed: syntax error in {err.filename}:{err.lineno}", field=field) from None
        except USER_CODE_ERRORS as err:  # user code raised at import time
            raise SpecError(spec_file, f"importing '{module_name}' failed: {type(err).__name__}: {err}", field=field) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise SpecError(spec_file, f"module '{module_name}' has no '{class_name}'", field=field)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise SpecError(spec_file, f"'{ref}' is not a subclass of {base.__module__}.{base.__qualname__}", field=field)
    return cls


def module_source(ref: str, root: Path, limit: int = 1 << 20) -> str:
    """The text of the module ``module:Class`` names under ``root`` (its ``.py`` file, or a package's
    ``__init__.py``), read without importing it; "" when there is none, it cannot be read, or it is over ``limit``
    bytes."""
    parts = ref.partition(":")[0].split(".")
    if not all(part.isidentifier() for part in parts):
        return ""
    base = Path(root).joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        try:
            if path.is_file() and path.stat().st_size <= limit:
                return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
    return ""
