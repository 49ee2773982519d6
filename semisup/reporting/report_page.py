"""The study page, metrics/report.html: one self-contained file a person opens to see the comparison.

The table with 95% intervals and paired tests (report.md's cells, each also carrying its exact numbers in
data- attributes), the label-efficiency figure, the per-epoch curves of every run, per-class accuracy and
a confusion matrix per method at each budget, a t-SNE map per method, and the paired differences
(with the best method; each configuration with its own method). Figures are PNGs inline (data:
URIs) and the page loads nothing, so it reads the same offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from semisup.reporting.report import (
    ALPHA,
    Curve,
    difference_rows,
    metric_label,
    seeds_note,
    table_rows,
    versus_method_rows,
)

DPI = 72
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1280px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
td.best { font-weight: bold; background: #eef6ee; } td.tie { background: #f6f9f6; }
#versus-methods td:nth-child(3), #versus-methods td:nth-child(4) { text-align: left; }
img { max-width: 100%; display: block; margin: 8px 0 20px; }
.note { color: #666; font-size: 13px; }
"""


@dataclass
class RunDetails:
    """What the page shows of the runs beside the summary: method -> budget -> per seed, or absent."""

    per_class: dict[str, dict[str, list[dict[str, float | None]]]] = field(default_factory=dict)
    confusion: dict[str, dict[str, list[list[tuple[str, str]]]]] = field(default_factory=dict)
    maps: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)  # (N, 2), (N,)
    missing: list[str] = field(default_factory=list)  # files not found, with the stage that writes them
    per_class_k: int | None = None  # the k of per_class.json and confusion.csv (knn.k's smallest)


def png_uri(fig: Figure) -> str:
    """A figure as an inline PNG data: URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image(uri: str, alt: str) -> str:
    """An <img> of an inline figure."""
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def table_html(summary: Mapping[str, Any]) -> str:
    """report.md's table as HTML: the same cells, each with its mean, half-width and p in data- attributes."""
    header, *rows = table_rows(summary)
    out = ['<table id="results"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        method, budget = row[0], row[1]
        cells = [f"<td>{html.escape(method)}</td>", f"<td>{html.escape(budget)}</td>"]
        for metric, text in zip(summary["metrics"], row[2:], strict=True):
            stats = summary["results"][method][budget][metric]
            comparison = summary["comparisons"][budget][metric]
            test = comparison["vs_best"].get(method, {})
            kind = "best" if comparison["best"] == method else "tie" if text.endswith("~") else ""
            attrs = {
                "data-method": method,
                "data-budget": budget,
                "data-metric": metric,
                "data-mean": repr(stats["mean"]),
                "data-half-width": repr(stats["half_width"]),
                "data-p": repr(test.get("p_value")),
            }
            joined = " ".join(f'{k}="{html.escape(v)}"' for k, v in attrs.items())
            cells.append(f'<td class="{kind}" {joined}>{html.escape(text.strip())}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def differences_html(summary: Mapping[str, Any]) -> str:
    """Every method's paired difference with the best at each budget and metric (report.md's second table)."""
    if len(summary["seeds"]) < 2:
        return ""
    pct = round(100 * summary["confidence"])
    head = ["labels/class", "metric", "best", "method", "difference", f"{pct}% interval", "p"]
    return rows_html("differences", head, difference_rows(summary))


def versus_html(summary: Mapping[str, Any]) -> str:
    """Each configuration's paired difference with its own method (report.md's third table), or ""."""
    rows = versus_method_rows(summary) if len(summary["seeds"]) >= 2 else []
    if not rows:
        return ""
    pct = round(100 * summary["confidence"])
    head = ["labels/class", "metric", "configuration", "method", "difference", f"{pct}% interval", "p"]
    return rows_html("versus-methods", head, rows)


def rows_html(table_id: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of text cells."""
    out = [f'<table id="{table_id}"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for cells in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def curves_figure(curves: Mapping[str, Mapping[str, Mapping[str, Sequence[Curve]]]]) -> Figure:
    """Per-epoch curves of every run: a row per metric, a column per budget, a line per run (one colour a
    method, one line a seed). curves: metric -> budget -> method -> one curve per seed."""
    metrics = list(curves)
    budgets = list(next(iter(curves.values())))
    fig = Figure(figsize=(4.2 * len(budgets), 3.0 * len(metrics)))
    for i, metric in enumerate(metrics):
        for j, budget in enumerate(budgets):
            ax = fig.add_subplot(len(metrics), len(budgets), i * len(budgets) + j + 1)
            for c, (method, runs) in enumerate(curves[metric][budget].items()):
                for s, (epochs, values) in enumerate(runs):
                    ax.plot(
                        epochs, values, color=f"C{c}", lw=1.2, alpha=0.8, label=method if s == 0 else None
                    )
            ax.set_title(f"{metric_label(metric)}, {budget} labels/class", fontsize=10)
            ax.set_xlabel("epoch", fontsize=9)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def class_names(per_class: Mapping[str, Mapping[str, list[dict[str, float | None]]]]) -> list[str]:
    """Class names in class-id order, from any run's per_class.json (the knn stage writes them in order)."""
    for by_budget in per_class.values():
        for runs in by_budget.values():
            if runs:
                return list(runs[0])
    return []


def per_class_html(
    budget: str, per_class: Mapping[str, list[dict[str, float | None]]], names: list[str]
) -> str:
    """A table: per method, each class's kNN accuracy (mean over seeds) at one budget."""
    out = ['<table class="per-class"><tr><th>method</th><th>budget</th>']
    out += [f"<th>{html.escape(n)}</th>" for n in names] + ["</tr>"]
    for method, runs in per_class.items():
        cells = [f"<td>{html.escape(method)}</td><td>{html.escape(budget)}</td>"]
        for name in names:
            values = [r.get(name) for r in runs if r.get(name) is not None]
            cells.append(f"<td>{np.mean(values):.3f}</td>" if values else "<td>-</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def confusion_matrix(pairs: Sequence[tuple[str, str]], names: list[str]) -> np.ndarray:
    """Counts (C, C) of (actual, predicted) class-name pairs: rows actual, columns predicted."""
    index = {n: i for i, n in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), np.int64)
    for actual, predicted in pairs:
        matrix[index[actual], index[predicted]] += 1
    return matrix


def confusion_figure(budget: str, matrices: Mapping[str, np.ndarray], names: list[str]) -> Figure:
    """A heatmap per method of its confusion matrix (summed over seeds), each row scaled to its actual class."""
    fig = Figure(figsize=(3.4 * len(matrices), 3.6))
    for i, (method, matrix) in enumerate(matrices.items()):
        ax = fig.add_subplot(1, len(matrices), i + 1)
        rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(names))
        ax.set_xticks(ticks, names, fontsize=7, rotation=90 if max(map(len, names)) > 2 else 0)
        ax.set_yticks(ticks, names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("actual", fontsize=9)
        ax.set_title(f"{method}, {budget} labels/class", fontsize=10)
    fig.tight_layout()
    return fig


def maps_figure(budget: str, maps: Mapping[str, tuple[np.ndarray, np.ndarray]], names: list[str]) -> Figure:
    """A t-SNE scatter per method of its test embeddings (N, 2), one colour a class."""
    fig = Figure(figsize=(3.4 * len(maps), 3.6))
    for i, (method, (xy, labels)) in enumerate(maps.items()):
        ax = fig.add_subplot(1, len(maps), i + 1)
        for c in np.unique(labels):
            mine = labels == c
            name = names[c] if c < len(names) else str(c)
            ax.scatter(xy[mine, 0], xy[mine, 1], s=4, color=f"C{c % 10}", label=name, linewidths=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{method}, {budget} labels/class", fontsize=10)
        if i == len(maps) - 1 and len(np.unique(labels)) <= 20:
            ax.legend(
                fontsize=7, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False
            )
    fig.tight_layout()
    return fig


def page(
    summary: Mapping[str, Any],
    efficiency_png: bytes,
    curves: Mapping[str, Mapping[str, Mapping[str, Sequence[Curve]]]],
    details: RunDetails,
    title: str = "Study results",
) -> str:
    """The whole page as one HTML string."""
    names = class_names(details.per_class)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{html.escape(seeds_note(summary))}</p>',
        table_html(summary),
        "<h2>Label efficiency</h2>",
        image("data:image/png;base64," + base64.b64encode(efficiency_png).decode(), "label efficiency"),
        "<h2>Per-epoch curves of every run</h2>",
        '<p class="note">One colour a method, one line a seed.</p>',
        image(png_uri(curves_figure(curves)), "per-epoch curves") if curves else "<p>No curves.</p>",
    ]
    for budget in summary["budgets"]:
        parts += budget_section(summary, details, budget, names)
    if details.missing:
        items = "".join(f"<li>{html.escape(m)}</li>" for m in details.missing)
        parts.append(f'<h2>Not shown</h2><ul class="note">{items}</ul>')
    parts += differences_sections(summary)
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def budget_section(
    summary: Mapping[str, Any], details: RunDetails, budget: str, names: list[str]
) -> list[str]:
    """One budget's part of the page: per-class accuracy and confusion matrices (where every method has
    them), then the t-SNE maps of the test embeddings (of the first seed)."""
    parts = [f"<h2>{html.escape(budget)} labels per class: where each method errs</h2>"]
    per_class = {m: details.per_class.get(m, {}).get(budget, []) for m in summary["methods"]}
    if names and all(per_class.values()):
        k = f"kNN@{details.per_class_k}" if details.per_class_k else "kNN"
        confusion = {
            m: confusion_matrix([p for pairs in details.confusion[m][budget] for p in pairs], names)
            for m in summary["methods"]
        }
        parts += [
            f"<h3>Per-class accuracy ({k}, plain vote; mean over seeds)</h3>",
            per_class_html(budget, per_class, names),
            "<h3>Confusion matrices (the same votes, all seeds; rows scaled to each actual class)</h3>",
            image(png_uri(confusion_figure(budget, confusion, names)), f"confusion matrices, {budget}"),
        ]
    maps = {m: details.maps[m][budget] for m in summary["methods"] if budget in details.maps.get(m, {})}
    if maps:
        parts += [
            f"<h3>t-SNE maps of the test embeddings (seed {summary['seeds'][0]})</h3>",
            image(png_uri(maps_figure(budget, maps, names)), f"embedding maps, {budget}"),
        ]
    return parts


def differences_sections(summary: Mapping[str, Any]) -> list[str]:
    """The paired differences with the best method, and with each configuration's method (if any)."""
    parts = []
    differences = differences_html(summary)
    if differences:
        parts += ["<h2>Paired differences with the best method</h2>", differences]
    versus = versus_html(summary)
    if versus:
        parts += [
            "<h2>Paired differences with each configuration's method</h2>",
            f'<p class="note">What a configuration\'s own settings buy: configuration - method on the same label '
            f"subsets and seeds (* p &lt; {ALPHA:.2f}).</p>",
            versus,
        ]
    return parts
