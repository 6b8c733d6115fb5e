"""The dataset SDK users subclass: a :class:`BuildExecutor` slices raw files into records.

Same surface as Starwhale's ``starwhale.api.dataset.BuildExecutor``, so the tutorial's ``CIFAR10Slicer`` runs
after changing only its import line.
"""

from __future__ import annotations

import abc
from typing import Iterator, Mapping, Sequence


class BuildExecutor(abc.ABC):
    """Turns the files matched by ``data_filter`` / ``label_filter`` into records.

    ``swcli dataset build`` calls :meth:`iter_data_slice` on each data file and :meth:`iter_label_slice` on each
    label file (both lists sorted by path) and pairs the n-th data record with the n-th label record. Each must
    yield ``bytes``. ``spec`` is the parsed ``dataset.yaml`` (:class:`builder.spec.DatasetSpec`).

    Optionally, :meth:`label_names` names the label values (``["airplane", ...]`` or ``{0: "airplane", ...}``);
    tables, reports and diffs then show names. ``labels:`` in dataset.yaml wins over it.
    """

    def __init__(self, spec=None, **kw) -> None:
        self.spec = spec

    @abc.abstractmethod
    def iter_data_slice(self, path: str) -> Iterator[bytes]:
        """Yield the data of each record stored in the file at ``path``."""

    @abc.abstractmethod
    def iter_label_slice(self, path: str) -> Iterator[bytes]:
        """Yield the label of each record stored in the file at ``path``."""

    def label_names(self) -> Sequence[str] | Mapping[object, str] | None:
        """Names of the label values: a list (value *i* -> ``names[i]``) or a mapping {label value: name} of
        non-empty strings, or None (the default) when there are none. Called once, after every record is sliced."""
        return None
