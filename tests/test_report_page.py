"""The study page (metrics/report.html) and the maps stage on per-run files written here."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from semisup.reporting.pagecheck import check_page, network_urls
from stages import maps as maps_stage
from tests.support import ROOT
from tests.test_pages import describe, needs_chromium
from tests.test_report import BUDGETS, METHODS, SEEDS, write_inputs

CLASSES = ["zero", "one", "two"]


class Cells(HTMLParser):
    """The <td> cells of the page's results table: their data- attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict] = []
        self._in = False
        self._table = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id") == "results"
        if tag == "td" and self._table and "data-mean" in attrs:
            self.cells.append(attrs | {"text": ""})
            self._in = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._in = False
        if tag == "table":
            self._table = False

    def handle_data(self, data):
        if self._in:
            self.cells[-1]["text"] += data


def clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, 16) in three tight clusters, one per class, and their labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = 5.0 * np.eye(16)[:3]
    return (centres[labels] + rng.normal(size=(n, 16))).astype(np.float32), labels.astype(np.int64)


def write_details(root) -> None:
    """per_class.json and confusion.csv for every run, and test embeddings for the maps stage."""
    for method in METHODS:
        for budget in BUDGETS:
            for seed in SEEDS:
                name = f"{method}-{budget}-{seed}"
                run = root / "metrics" / "runs" / name
                accuracy = {c: 0.5 + 0.1 * i + 0.01 * seed for i, c in enumerate(CLASSES)}
                (run / "per_class.json").write_text(json.dumps({"k": 20, "per_class_accuracy": accuracy}))
                pairs = [
                    (a, a if (i + seed) % 4 else CLASSES[(CLASSES.index(a) + 1) % 3])
                    for i, a in enumerate(CLASSES * 8)
                ]
                (run / "confusion.csv").write_text(
                    "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in pairs)
                )
                features, labels = clusters(90, seed)
                (root / "data" / "embeddings" / name).mkdir(parents=True)
                np.savez(root / "data" / "embeddings" / name / "test.npz", features=features, labels=labels)


def run_maps(root, out):
    args = ["--params", str(root / "params.yaml"), "--embeddings", str(root / "data" / "embeddings")]
    result = CliRunner().invoke(maps_stage.main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_inputs(root)
    write_details(root)
    run_maps(root, root / "maps")
    args = ["--params", str(root / "params.yaml"), "--runs", str(root / "metrics" / "runs")]
    args += [
        "--splits",
        str(root / "data" / "splits"),
        "--maps",
        str(root / "maps"),
        "--out",
        str(root / "out"),
    ]
    from stages import report as report_stage

    result = CliRunner().invoke(report_stage.main, args)
    assert result.exit_code == 0, result.output
    return root


def test_page_numbers_equal_the_summary(study):
    summary = json.loads((study / "out" / "summary.json").read_text())
    page = (study / "out" / "report.html").read_text()
    parser = Cells()
    parser.feed(page)
    assert len(parser.cells) == len(METHODS) * len(BUDGETS) * len(summary["metrics"])
    for cell in parser.cells:
        stats = summary["results"][cell["data-method"]][cell["data-budget"]][cell["data-metric"]]
        assert float(cell["data-mean"]) == stats["mean"]
        assert float(cell["data-half-width"]) == stats["half_width"]
        test = summary["comparisons"][cell["data-budget"]][cell["data-metric"]]["vs_best"][
            cell["data-method"]
        ]
        assert cell["data-p"] == repr(test.get("p_value"))
        assert cell["text"].startswith(f"{stats['mean']:.3f} ± {stats['half_width']:.3f}")
    # The same cells as report.md's table, row for row.
    markdown = (study / "out" / "report.md").read_text()
    md_cells = [
        c.strip()
        for line in markdown.splitlines()
        if line.startswith("| ") and " ± " in line
        for c in line.split("|")[3:-1]
    ]
    assert [c["text"] for c in parser.cells] == md_cells


def test_page_is_self_contained_with_every_section(study):
    page = (study / "out" / "report.html").read_text()
    assert network_urls(page) == []
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # label efficiency, curves, and per budget: confusion matrices and maps
    assert len(sources) == 2 + 2 * len(BUDGETS)
    assert page.count('class="per-class"') == len(BUDGETS)
    assert "Not shown" not in page
    assert "Per-class accuracy (kNN@20, plain vote; mean over seeds)" in page
    assert "differences" in page and "paws" in page


def test_a_missing_map_is_named_on_the_page(study, tmp_path):
    args = ["--params", str(study / "params.yaml"), "--runs", str(study / "metrics" / "runs")]
    args += [
        "--splits",
        str(study / "data" / "splits"),
        "--maps",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path),
    ]
    from stages import report as report_stage

    assert CliRunner().invoke(report_stage.main, args).exit_code == 0
    page = (tmp_path / "report.html").read_text()
    assert "Not shown" in page and "crossentropy-5-0.csv (dvc repro maps)" in page


def test_maps_are_deterministic_and_keep_the_classes_apart(study, tmp_path):
    again = run_maps(study, tmp_path / "again")
    files = sorted(p.name for p in (study / "maps").iterdir())
    assert files == sorted(f"{m}-{b}-0.csv" for m in METHODS for b in BUDGETS)
    for name in files:
        assert (again / name).read_bytes() == (study / "maps" / name).read_bytes()
    table = np.loadtxt(study / "maps" / "paws-5-0.csv", delimiter=",", skiprows=1)
    xy, labels = table[:, :2], table[:, 2].astype(int)
    assert len(xy) == 90 and np.ptp(xy[:, 0]) > 0
    # Each point's nearest other point on the map is of its own class: the clusters stay apart in 2-D.
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 1e9
    assert np.mean(labels[dist.argmin(1)] == labels) > 0.95


@needs_chromium
def test_page_is_drawn_offline_in_chromium(study):
    plots = check_page(study / "out" / "report.html")
    size = (study / "out" / "report.html").stat().st_size
    print(f"\nreport.html ({size / 1024:.0f} KiB), headless Chromium offline: {describe(plots)}")
    assert len(plots) == 2 + 2 * len(BUDGETS) and all(p.drawn for p in plots), plots


def test_report_params_and_maps_stage_in_dvc_yaml():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "metrics/maps" in stages["report"]["deps"] and "metrics/maps" in stages["maps"]["outs"]
    # Each depends on the digest of the code it runs (semisup.pipeline.codedeps), which holds the module named
    # here.
    from semisup.pipeline import codedeps

    assert (
        "data/code/maps.json" in stages["maps"]["deps"]
        and "data/code/report.json" in stages["report"]["deps"]
    )
    assert "semisup/evaluation/maps.py" in codedeps.closure("stages.maps")
    assert "semisup/reporting/report_page.py" in codedeps.closure("stages.report")
    assert any("metrics/report.html" in out for out in stages["report"]["outs"] if isinstance(out, dict))
