"""What a person sees, offline: `dvc plots show` through the project's template, checked in Chromium.

The Chromium checks skip, saying why, only where Chromium is absent (CI installs Debian's `chromium`).
"""

from __future__ import annotations

import json

import pytest

from semisup.reporting import vega_page
from semisup.reporting.pagecheck import check_page, chromium, network_urls
from tests.support import ROOT, git_project, run
from tests.test_report import METHODS, SEEDS, invoke, write_inputs

needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="chromium not installed (apt-get install chromium; CI installs it)"
)


def describe(plots) -> str:
    """`N of M plots drawn (V Vega, I images)`, and the blank ones by name."""
    blank = [f"{p.kind} {p.name}" for p in plots if not p.drawn]
    kinds = f"{sum(p.kind == 'vega' for p in plots)} Vega, {sum(p.kind == 'img' for p in plots)} images"
    return f"{len(plots) - len(blank)} of {len(plots)} plots drawn ({kinds})" + (
        f"; blank: {blank}" if blank else ""
    )


def plots_repo(tmp_path):
    """A git + DVC copy of the project whose metrics/ hold a report of made-up runs (2 methods x 2 budgets)."""
    overrides = {"method_names": METHODS, "study.seeds": SEEDS, "study.labeled_per_class": [5, "all"]}
    repo = git_project(tmp_path / "repo", overrides)
    (tmp_path / "in").mkdir()
    write_inputs(tmp_path / "in")
    result = invoke(tmp_path / "in", out=repo / "metrics")
    assert result.exit_code == 0, result.output
    confusion = repo / "metrics" / "runs" / "paws-5-0" / "confusion.csv"
    confusion.parent.mkdir(parents=True)
    confusion.write_text("actual,predicted\n0,0\n0,1\n1,1\n1,1\n2,0\n")
    return repo


def test_template_is_the_pinned_package_bundle():
    # The committed template is exactly what `semisup plots-template` builds from the pinned package.
    text = (ROOT / vega_page.TEMPLATE).read_text(encoding="utf8")
    assert text == vega_page.build(), "run `semisup plots-template` after changing vl-convert-python's pin"
    assert "vl-convert-python 1.9.0.post1" in text.splitlines()[1]
    assert "{plot_divs}" in text and "{scripts}" not in text


def test_dvc_config_names_the_template():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "html_template = plots/offline.html" in config


def test_network_urls_finds_what_a_page_loads():
    page = """<script src="https://cdn.example/vega@5"></script><img src="static/a.png">
    <link href='http://x.example/s.css'><div style="background: url(https://y.example/b.png)"></div>
    <a>"$schema": "https://vega.github.io/schema/vega-lite/v5.json"</a>"""
    assert network_urls(page) == [
        "https://cdn.example/vega@5",
        "http://x.example/s.css",
        "https://y.example/b.png",
    ]


@pytest.mark.slow
def test_plain_dvc_plots_show_loads_nothing_from_the_network(tmp_path):
    repo = plots_repo(tmp_path)
    run(repo, "dvc", "plots", "show", "-o", "shown")
    html = (repo / "shown" / "index.html").read_text(encoding="utf8")
    assert "vegaEmbed(" in html and "window.vegaEmbed" in html  # DVC's plots, with the libraries inline
    assert network_urls(html) == []
    run(repo, "dvc", "plots", "diff", "HEAD", "-o", "diffed")
    assert network_urls((repo / "diffed" / "index.html").read_text(encoding="utf8")) == []


@pytest.mark.slow
@needs_chromium
def test_every_dvc_plot_is_drawn_offline_in_chromium(tmp_path):
    repo = plots_repo(tmp_path)
    run(repo, "dvc", "plots", "show", "-o", "shown")
    plots = check_page(repo / "shown" / "index.html")
    print(f"\ndvc plots show, headless Chromium offline: {describe(plots)}")
    vega = [p for p in plots if p.kind == "vega"]
    assert len(vega) == 4  # dvc.yaml's two label-efficiency plots and two per-epoch curves
    assert len([p for p in plots if p.kind == "img"]) == 3  # label_efficiency.png, knn_k20/200.png
    assert all(p.drawn for p in plots), [p for p in plots if not p.drawn]
    # A run's confusion matrix, as docs/pipeline.md shows it.
    csv = "metrics/runs/paws-5-0/confusion.csv"
    run(
        repo,
        "dvc",
        "plots",
        "show",
        csv,
        "--template",
        "confusion",
        "-x",
        "actual",
        "-y",
        "predicted",
        "-o",
        "cm",
    )
    (confusion,) = check_page(repo / "cm" / "index.html")
    print(f"dvc plots show {csv} --template confusion: {describe([confusion])}")
    assert confusion.kind == "vega" and confusion.drawn


@needs_chromium
def test_the_check_sees_a_blank_page_blank(tmp_path):
    # The same DVC page with the CDN scripts of DVC's own template: offline, its plot stays blank.
    page = tmp_path / "cdn.html"
    spec = json.dumps(
        {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "mark": "bar",
            "data": {"values": [{"a": 1}]},
            "encoding": {"y": {"field": "a", "type": "quantitative"}},
        }
    )
    cdn = '<script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script>'
    div = f'<div id="p"><script>var spec = {spec}; vegaEmbed("#p", spec);</script></div>'
    page.write_text(f"<html><head>{cdn}</head><body>{div}<img alt='missing' src='nope.png'></body></html>")
    plots = check_page(page)
    assert [(p.kind, p.drawn) for p in plots] == [("vega", False), ("img", False)]
    inline = (ROOT / vega_page.TEMPLATE).read_text(encoding="utf8").replace("{plot_divs}", div)
    page.write_text(inline.replace("{refresh_tag}", ""))
    assert [(p.kind, p.drawn) for p in check_page(page)] == [("vega", True)]
