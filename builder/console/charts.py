"""The console's charts as SVG text, drawn on the server: the confusion matrix (:func:`confusion_svg`, each cell a
``rect`` carrying the true and predicted label keys the record browser queries), the ROC curves (:func:`roc_svg`)
and per-label deltas between two runs (:func:`delta_bars_svg`).

Every string that comes from a run (label values, names) is hostile: it is written with its control characters
shown (:func:`builder.text.shown`), the characters XML cannot hold escaped, then XML-escaped, in text and in
attributes alike. A chart references nothing outside itself (colours are attributes), and a chart with no data is
``""``.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

import numpy as np

from builder.console.records import label_key
from builder.runs.history import label_title
from builder.text import shown

MODES = ("counts", "true", "pred", "all")
MODE_TITLES = {"counts": "counts", "true": "normalised by true label", "pred": "normalised by predicted label",
               "all": "normalised over all records"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MAX_VALUES_SHOWN = 20  # labels up to which each confusion cell prints its value
MAX_AXIS_LABELS = 60  # labels up to which the axes name each label
MAX_CURVES = 30  # ROC curves drawn; the legend says how many more there are
LABEL_CHARS = 22  # characters of a label title on an axis or in a legend (the tooltip has it whole)
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")
_LOW, _HIGH = np.array([247, 251, 255]), np.array([8, 48, 107])  # the "Blues" ramp's ends


def _esc(text: Any) -> str:
    """``text`` safe in XML text and in a double-quoted attribute: controls shown, what XML cannot hold escaped."""
    plain = _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", shown(text))
    return html.escape(plain, quote=True)


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    width, height = math.ceil(width), math.ceil(height)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" font-family="sans-serif" font-size="11"><title>{_esc(title)}</title>'
            + "".join(body) + "</svg>")


def _label(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{_esc(text)}</text>'


def normalised(counts: list[list[float]], mode: str) -> list[list[float]]:
    """``counts`` as ``mode`` shows them, as scikit-learn's ``confusion_matrix(normalize=)``: ``counts`` as they are,
    ``true`` each row summing to 1, ``pred`` each column, ``all`` the whole matrix; a row or column of zeros stays 0."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {str(mode)[:40]!r}")
    try:
        values = np.asarray(counts, dtype=np.float64)
    except (ValueError, TypeError):
        raise ValueError("counts: expected a matrix of numbers (rows of one length)") from None
    if values.ndim != 2:
        raise ValueError(f"counts: expected a matrix of numbers, got {values.ndim} dimensions")
    if mode == "counts":
        return values.tolist()
    sums = {"true": values.sum(axis=1, keepdims=True), "pred": values.sum(axis=0, keepdims=True),
            "all": np.full((1, 1), values.sum())}[mode]
    return np.divide(values, sums, out=np.zeros_like(values), where=sums != 0).tolist()


def _colour(share: float) -> str:
    r, g, b = (_LOW + (_HIGH - _LOW) * min(max(share, 0.0), 1.0)).round().astype(int)
    return f"#{r:02x}{g:02x}{b:02x}"


def _cell(x: float, y: float, size: float, true: tuple[str, str], pred: tuple[str, str], count: float,
          value: float, mode: str, share: float, printed: bool) -> str:
    """One confusion cell: ``true`` and ``pred`` are (key, title)."""
    shown_value = f"{int(value)}" if mode == "counts" else f"{value:.2f}"
    tip = f"true {true[1]}, predicted {pred[1]}: {int(count)}" + ("" if mode == "counts" else f" ({value:.3f})")
    out = (f'<rect class="cell" data-true="{_esc(true[0])}" data-pred="{_esc(pred[0])}" x="{x:.1f}" y="{y:.1f}" '
           f'width="{size:.1f}" height="{size:.1f}" fill="{_colour(share)}"><title>{_esc(tip)}</title></rect>')
    if printed:
        fill = "#ffffff" if share > 0.5 else "#000000"
        out += _label(x + size / 2, y + size / 2 + 4, shown_value, "middle",
                      f' fill="{fill}" font-size="{min(11, size / 3):.0f}" pointer-events="none"')
    return out


def confusion_svg(metrics: dict, names: dict[str, str], mode: str) -> str:
    """The confusion matrix of ``metrics`` as a heatmap (rows the true label, columns the predicted one), values as
    ``mode`` says (:func:`normalised`); ``names`` are run.json's label names. Each cell is a ``rect.cell`` with
    ``data-true``/``data-pred`` label keys and a tooltip; with many labels only the cells that hold records are
    drawn, over a background of the zero colour."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {str(mode)[:40]!r}")
    counts = ((metrics.get("confusion_matrix") or {}).get("counts")) or []
    try:
        values = np.asarray(normalised(counts, mode)) if counts else np.zeros((0, 0))
    except ValueError:
        return ""  # not a matrix of numbers: nothing to draw
    n = len(values)
    if n == 0 or values.shape != (n, n):
        return ""
    raw = np.asarray(counts, dtype=np.float64)
    all_labels = metrics.get("all_labels")
    keys = [label_key(v) for v in all_labels] if isinstance(all_labels, list) and len(all_labels) == n \
        else [str(i) for i in range(n)]
    labels = [(key, label_title(key, names or {})) for key in keys]
    size = max(2.0, min(56.0, 600 / n))
    axis = n <= MAX_AXIS_LABELS
    left, top = (170 if axis else 40), 40
    grid = size * n
    peak = float(values.max()) or 1.0
    heading = f"{MODE_TITLES[mode]}: rows true, columns predicted"
    body = [_label(4, 16, heading),
            f'<rect x="{left}" y="{top}" width="{grid:.1f}" height="{grid:.1f}" fill="{_colour(0)}" stroke="#cccccc"/>']
    dense, printed = n <= MAX_VALUES_SHOWN * 2, n <= MAX_VALUES_SHOWN
    for i, j in (np.ndindex(n, n) if dense else zip(*np.nonzero(raw))):
        body.append(_cell(left + j * size, top + i * size, size, labels[i], labels[j], raw[i, j], values[i, j],
                          mode, values[i, j] / peak, printed))
    if axis:
        body += [_label(left - 6, top + i * size + size / 2 + 4, _short(title), "end")
                 for i, (_, title) in enumerate(labels)]
        body += [_label(0, 0, _short(title), "end", f' transform="translate({left + j * size + size / 2 + 4:.1f},'
                                                    f'{top + grid + 8:.1f}) rotate(-45)"')
                 for j, (_, title) in enumerate(labels)]
    bottom = top + grid + (130 if axis else 30)
    body.append(_label(left + grid / 2, bottom - 8, "predicted", "middle"))
    body.append(_label(14, top + grid / 2, "true", "middle", f' transform="rotate(-90 14 {top + grid / 2:.1f})"'))
    return _svg(max(left + grid + 20, 12 + 6.5 * len(heading)), bottom, body, f"confusion matrix, {MODE_TITLES[mode]}")


def _points(fpr: list, tpr: list, left: float, top: float, side: float) -> str:
    """A ROC curve as polyline points: finite points clipped to [0, 1], on a half-pixel grid, without repeats and
    without the middle points of straight horizontal or vertical runs (a curve of 50k points is a few hundred)."""
    try:
        x, y = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    except (ValueError, TypeError):
        return ""
    keep = np.isfinite(x) & np.isfinite(y)
    x = np.round((left + np.clip(x[keep], 0, 1) * side) * 2) / 2
    y = np.round((top + (1 - np.clip(y[keep], 0, 1)) * side) * 2) / 2
    if len(x) == 0:
        return ""
    moved = np.ones(len(x), dtype=bool)
    moved[1:] = (np.diff(x) != 0) | (np.diff(y) != 0)
    x, y = x[moved], y[moved]
    if len(x) > 2:
        inner = ~(((x[:-2] == x[1:-1]) & (x[1:-1] == x[2:])) | ((y[:-2] == y[1:-1]) & (y[1:-1] == y[2:])))
        keep = np.concatenate(([True], inner, [True]))
        x, y = x[keep], y[keep]
    return " ".join(f"{a:g},{b:g}" for a, b in zip(x.tolist(), y.tolist()))


def _roc_axes(left: float, top: float, side: float) -> list[str]:
    body = [f'<rect x="{left}" y="{top}" width="{side}" height="{side}" fill="#ffffff" stroke="#333333"/>',
            f'<line x1="{left}" y1="{top + side}" x2="{left + side}" y2="{top}" stroke="#999999" '
            'stroke-dasharray="4 4"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x, y = left + tick * side, top + (1 - tick) * side
        body.append(f'<line x1="{x:g}" y1="{top + side}" x2="{x:g}" y2="{top + side + 4}" stroke="#333333"/>')
        body.append(f'<line x1="{left - 4}" y1="{y:g}" x2="{left}" y2="{y:g}" stroke="#333333"/>')
        body.append(_label(x, top + side + 16, f"{tick:g}", "middle"))
        body.append(_label(left - 6, y + 4, f"{tick:g}", "end"))
    body.append(_label(left + side / 2, top + side + 34, "false positive rate", "middle"))
    body.append(_label(14, top + side / 2, "true positive rate", "middle",
                       f' transform="rotate(-90 14 {top + side / 2:g})"'))
    return body


def roc_svg(metrics: dict, names: dict[str, str]) -> str:
    """One-vs-rest ROC curves of ``metrics``, one polyline per label with its AUC in the legend (at most
    :data:`MAX_CURVES`, in metrics' order), the diagonal and the axes; ``""`` when no label has a curve."""
    curves = metrics.get("roc_auc") or {}
    drawable = [(key, curve) for key, curve in curves.items() if isinstance(curve, dict)
                and isinstance(curve.get("auc"), (int, float)) and isinstance(curve.get("fpr"), list)
                and isinstance(curve.get("tpr"), list) and len(curve["fpr"]) == len(curve["tpr"]) >= 2]
    if not drawable:
        return ""
    left, top, side, legend_x = 56, 16, 360, 56 + 360 + 24
    body = _roc_axes(left, top, side)
    for n, (key, curve) in enumerate(drawable[:MAX_CURVES]):
        colour, title = PALETTE[n % len(PALETTE)], label_title(key, names or {})
        tip = f"{title}: AUC {curve['auc']:.4f}"
        points = _points(curve["fpr"], curve["tpr"], left, top, side)
        body.append(f'<polyline class="roc" data-label="{_esc(key)}" fill="none" stroke="{colour}" stroke-width="1.5" '
                    f'points="{points}"><title>{_esc(tip)}</title></polyline>')
        y = top + 8 + n * 16
        body.append(f'<rect x="{legend_x}" y="{y - 8}" width="12" height="3" fill="{colour}"/>')
        body.append(_label(legend_x + 18, y, f"{_short(title)} (AUC {curve['auc']:.3f})"))
    rows = min(len(drawable), MAX_CURVES)
    if len(drawable) > MAX_CURVES:
        body.append(_label(legend_x, top + 8 + rows * 16, f"{len(drawable) - MAX_CURVES} more labels not drawn"))
        rows += 1
    height = max(top + side + 44, top + 8 + rows * 16 + 8)
    return _svg(legend_x + 220, height, body, "ROC curves, one label against the rest")


def delta_bars_svg(rows: list[tuple[str, float | None]]) -> str:
    """Per-label deltas (b - a) as horizontal bars from a zero line, green up and red down, scaled to the largest;
    a label without a delta shows a dash. ``""`` when no row has a delta."""
    deltas = [d if isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) else None
              for _, d in rows]
    peak = max((abs(d) for d in deltas if d is not None), default=None)
    if peak is None:
        return ""
    peak = peak or 1.0
    label_w, half, row_h, top = 170, 150, 20, 10
    zero = label_w + half
    body = []
    for n, ((label, _), delta) in enumerate(zip(rows, deltas)):
        y = top + n * row_h
        body.append(_label(label_w - 6, y + 14, _short(str(label)), "end"))
        if delta is None:
            body.append(_label(zero + 4, y + 14, "\u2013", "start", ' fill="#999999"'))
            continue
        length = abs(delta) / peak * half
        x, colour = (zero, "#2ca02c" if delta else "#7f7f7f") if delta >= 0 else (zero - length, "#d62728")
        body.append(f'<rect class="delta" x="{x:.1f}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" '
                    f'fill="{colour}"><title>{_esc(f"{label}: {delta:+.4f}")}</title></rect>')
        body.append(_label(zero + half + 8, y + 14, f"{delta:+.4f}", "start", f' fill="{colour}"'))
    height = top * 2 + len(rows) * row_h
    body.append(f'<line x1="{zero}" y1="{top - 4}" x2="{zero}" y2="{height - top + 4}" stroke="#333333"/>')
    return _svg(zero + half + 80, height, body, "per-label deltas")
