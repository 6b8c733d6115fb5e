"""`swcli eval report`: one self-contained HTML file per run (no network needed to open it).

Plots are drawn with matplotlib (Agg) and embedded as base64 PNG; the page is a Jinja template with autoescape on,
since labels, names and descriptions are user data. Numbers shown are the ones in metrics.json, formatted.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from builder import outdir
from builder.errors import SwcliError
from builder.runs.history import Run, flat, label_title
from builder.runs.schema import is_number
from builder.text import shown

TOP_WRONG = 12
CIFAR_RECORD = 3 * 32 * 32


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


NORMALIZED = {"true": "normalised by true label", "pred": "normalised by predicted label",
              "all": "normalised over all records"}  # sklearn's confusion_matrix(normalize=...) modes


def confusion_view(cm: dict) -> tuple[str, list[list[float]], int] | None:
    """The confusion matrix as the handler asked for it (``multi_classification(confusion_matrix_normalize=...)``):
    (title, matrix, decimals). metrics.json's ``confusion_matrix.normalize`` names the mode and ``binarylabel``
    holds the normalised matrix; with no mode (or one swcli does not know) the counts. A ``binarylabel`` that is
    not an NxN array of numbers (a hand-edited run) is recomputed from the counts the same way sklearn does."""
    counts = cm.get("counts")
    if not counts:
        return None
    mode = cm.get("normalize")
    if mode not in NORMALIZED:
        return "counts", counts, 0
    given = cm.get("binarylabel")
    n = len(counts)
    if isinstance(given, list) and len(given) == n and all(
            isinstance(row, list) and len(row) == n and all(is_number(x) for x in row) for row in given):
        return f"{NORMALIZED[mode]} (normalize={mode})", given, 4
    data = np.asarray(counts, dtype=float)
    total = {"true": data.sum(axis=1, keepdims=True), "pred": data.sum(axis=0, keepdims=True), "all": data.sum()}[mode]
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.nan_to_num(data / total)
    return f"{NORMALIZED[mode]} (normalize={mode})", matrix.tolist(), 4


def confusion_panels(metrics: dict) -> list[tuple[str, np.ndarray, str]]:
    """What :func:`confusion_png` draws: the counts, then the handler's normalisation when it asked for one."""
    view = confusion_view(metrics.get("confusion_matrix") or {})
    if view is None:
        return []
    counts = np.asarray(metrics["confusion_matrix"]["counts"], dtype=float)
    panels = [("counts", counts, "{:.0f}")]
    if view[0] != "counts":
        panels.append((view[0], np.asarray(view[1], dtype=float), "{:.2f}"))
    return panels


def confusion_png(metrics: dict, names: dict[str, str] | None = None) -> str | None:
    panels = confusion_panels(metrics)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [shown(label_title(label, names or {})) for label in metrics.get("all_labels") or range(len(panels[0][1]))]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.2), squeeze=False)
    for ax, (title, data, fmt) in zip(axes[0], panels):
        im = ax.imshow(data, cmap="Blues")
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        threshold = data.max() / 2 if data.size else 0
        if len(labels) <= 20:
            for i in range(data.shape[0]):
                for j in range(data.shape[1]):
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > threshold else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def roc_png(metrics: dict, names: dict[str, str] | None = None) -> str | None:
    curves = metrics.get("roc_auc") or {}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    for label, curve in curves.items():
        if curve.get("auc") is not None:
            ax.plot(curve["fpr"], curve["tpr"], lw=1.4, label=f"{shown(label_title(label, names or {}))} (AUC {curve['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, one label vs rest")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _thumbnail(data: bytes, shape: tuple[int, int, int] | None) -> str | None:
    if shape is None or len(data) != int(np.prod(shape)):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.frombuffer(data, dtype=np.uint8).reshape(shape).transpose(1, 2, 0)
    buf = io.BytesIO()
    plt.imsave(buf, np.kron(image, np.ones((3, 3, 1), dtype=np.uint8)), format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def confidently_wrong(run: Run, top: int = TOP_WRONG) -> list[dict]:
    """The wrong predictions with the highest share of score on the predicted label."""
    wrong = []
    for r in run.results():
        if r.get("error") is not None:
            continue
        pred, label, scores = flat(r["result"]), flat(r["label"]), flat(r.get("pr"))
        if pred == label:
            continue
        confidence = None
        if isinstance(scores, list) and scores and all(isinstance(s, (int, float)) for s in scores):
            total = float(sum(scores))
            labels = run.metrics.get("all_labels") or list(range(len(scores)))
            if total > 0 and pred in labels:
                confidence = scores[labels.index(pred)] / total
        wrong.append({"index": r["index"], "label": run.label_title(label), "pred": run.label_title(pred),
                      "confidence": confidence})
    wrong.sort(key=lambda w: (w["confidence"] is None, -(w["confidence"] or 0), w["index"]))
    return wrong[:top]


def _attach_thumbnails(run: Run, rows: list[dict], shape: tuple[int, int, int] | None) -> None:
    from builder.volumes import DatasetReader
    from builder.store import Store

    ds = run.dataset
    try:
        entry = Store().resolve("dataset", f"{ds.get('name')}:{ds.get('version')}")
    except SwcliError:
        return  # the dataset is not in this store: the table still lists the records
    with DatasetReader(entry.path, entry.manifest) as reader:
        for row in rows:
            try:
                data = reader[row["index"]].data
            except (IndexError, SwcliError):
                continue  # results.jsonl names a record this dataset does not have (or cannot read): no picture
            row["thumbnail"] = _thumbnail(data, shape or ((3, 32, 32) if len(data) == CIFAR_RECORD else None))


def _meta(run: Run) -> dict:
    """The header line's fields, each a string ("" when run.json does not say), so a sparse run.json renders."""
    model, records = run.run.get("model") or {}, run.run.get("records") or {}
    text = lambda v: "" if v is None else str(v)  # noqa: E731
    return {"model": text(model.get("name")), "model_version": text(model.get("version") or model.get("source"))[:12],
            "dataset": text(run.dataset.get("name")), "dataset_version": text(run.dataset.get("version"))[:12],
            "handler": text(run.run.get("handler")), "ok": text(records.get("ok")), "failed": text(records.get("failed")),
            "status": text(run.run.get("status")), "started": text(run.run.get("started"))}


def _finalize(value):
    """Every ``{{ }}`` of the page (a name, a label, a run id from a pulled run, a path) as text with its control
    characters neutralised (:func:`builder.text.shown`), before autoescape makes it HTML; markup we marked safe
    stays as it is."""
    return value if hasattr(value, "__html__") else shown(value)


def report_environment(jinja2, folder: Path):
    """The report's one Jinja environment: autoescape on (labels, names and descriptions are data from the run),
    every output through :func:`_finalize`, a missing variable an error."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True,
                             undefined=jinja2.StrictUndefined, finalize=_finalize)
    env.filters["num"] = lambda v, digits=4: "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))
    return env


def render_report(run: Run, output: Path, *, image_shape: tuple[int, int, int] | None = None) -> Path:
    """Write the report for ``run`` to ``output`` (written to a temp name, then renamed)."""
    import jinja2

    from builder.images.render import templates_dir

    wrong = confidently_wrong(run)
    _attach_thumbnails(run, wrong, image_shape)
    env = report_environment(jinja2, templates_dir())
    summary = run.summary
    names = run.label_names
    html = env.get_template("report.html.j2").render(
        run=run, meta=_meta(run), summary=summary,
        scalars=[(k, v) for k, v in summary.items() if not isinstance(v, dict)],
        averages=[(k, v) for k, v in summary.items() if isinstance(v, dict)],
        labels=[(k, run.label_title(k), v) for k, v in (run.metrics.get("labels") or {}).items()],
        confusion=confusion_png(run.metrics, names),
        confusion_panels=[title for title, _, _ in confusion_panels(run.metrics)], roc=roc_png(run.metrics, names), wrong=wrong,
    )
    output = Path(output)
    try:  # a new random temp name renamed over the report: no link at either name is followed (builder.outdir)
        outdir.write_file(output, html.encode("utf-8"), follow_folder=True)  # -o names a file: its folder is the user's
    except OSError as err:
        raise SwcliError(f"{output}: cannot write the report: {err.strerror or err}") from None
    return output
