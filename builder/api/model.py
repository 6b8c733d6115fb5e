"""The model SDK users subclass: a :class:`PipelineHandler` turns records into predictions and scores them.

Same surface as Starwhale's ``starwhale.api.model.PipelineHandler``, so the tutorial's ``CIFAR10Inference``
runs after changing only its import lines. The runner (:mod:`builder.evaluate.runner.run`) calls
:meth:`ppl` per record (or per batch, when the handler opts in), :meth:`handle_label` per record, and
:meth:`cmp` once over everything stored.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable


class PipelineHandler(abc.ABC):
    """Base class of every evaluation handler.

    ``merge_label``: store ``handle_label(label)`` beside each result (the seed's default); when False the raw
    label bytes are stored as a list of ints. ``ignore_error``: a record whose ``ppl`` raises is logged, counted
    and skipped instead of stopping the run. ``batch_size``: 1 feeds ``ppl`` one record's bytes, exactly like the
    seed; a larger value opts in to batching: ``ppl`` then receives a list of record bytes and must return a
    sequence with one output per record (``swcli model eval --batch-size`` can then change the size).
    """

    def __init__(self, merge_label: bool = True, ignore_error: bool = False, batch_size: int = 1, **kw: Any) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.merge_label = merge_label
        self.ignore_error = ignore_error
        self.batch_size = int(batch_size)
        self.extra = kw

    @abc.abstractmethod
    def ppl(self, data: Any, **kw: Any) -> Any:
        """Predict one record (``bytes``) or, for a batching handler, a list of records.

        Return ``(result, probabilities)`` to have both stored (the seed's form) or any JSON-able result. ``kw``
        carries ``index`` (``indices`` for a batch), ``label`` (the raw label bytes, a list for a batch),
        ``dataset_name`` and ``dataset_version``.
        """

    def handle_label(self, label: bytes, **kw: Any) -> Any:
        """Turn a record's raw label bytes into what ``cmp`` compares; by default the bytes as a list of ints."""
        return list(label)

    def cmp(self, _data_loader: Iterable[dict]) -> Any:
        """Score the stored results. ``_data_loader`` yields ``{"index", "label", "result", "pr"}`` per record.

        Usually decorated with :func:`builder.api.metric.multi_classification`. Not overriding it writes a
        metrics.json with the record counts only.
        """
        return None

    @property
    def batching(self) -> bool:
        """True when the handler opted in to receiving lists of records."""
        return self.batch_size > 1
