"""The report stage on knn.json files and dvclive curves written here: summary numbers, table, valid PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from dvclive import Live
from PIL import Image

from semisup.errors import DataError
from semisup.report import format_table, read_curve, summarize
from stages import report as report_stage

METHODS = ["crossentropy", "paws"]
KS = [20, 200]


def scores(method: str, k: int) -> dict[str, float]:
    """Distinct made-up scores per (method, k), so a mix-up shows."""
    base = 0.5 + 0.1 * METHODS.index(method) + 0.001 * k
    return {"accuracy": base, "weighted_accuracy": base + 0.01}


def write_inputs(root, monitor_every: int = 1, epochs: int = 3) -> dict:
    """params.yaml, metrics/M/knn.json and dvclive curves (as pretrain logs them) for every method."""
    (root / "params.yaml").write_text(
        yaml.safe_dump({"method_names": METHODS, "knn": {"k": KS, "monitor_every": monitor_every}})
    )
    curves = {}
    for i, method in enumerate(METHODS):
        (root / "metrics" / method).mkdir(parents=True)
        knn = {f"k{k}": scores(method, k) for k in KS}
        (root / "metrics" / method / "knn.json").write_text(json.dumps(knn))
        # The same calls as the pretrain stage: step = epoch, from 1.
        live = Live(str(root / "metrics" / method / "train"), dvcyaml=False, save_dvc_exp=False)
        for epoch in range(1, epochs + 1):
            live.step = epoch
            for k in KS:
                value = 0.1 * epoch + 0.01 * i + 0.0001 * k
                curves[(method, k, epoch)] = value
                live.log_metric(f"knn_k{k}", value)
            live.log_metric("loss", 2.0 / epoch)
        live.end()
    return curves


def run(root):
    """Invoke the report stage in-process on the files under root."""
    args = [
        "--params",
        str(root / "params.yaml"),
        "--metrics",
        str(root / "metrics"),
        "--out",
        str(root / "out"),
    ]
    return CliRunner().invoke(report_stage.main, args)


def test_read_curve_of_dvclive_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    curves = write_inputs(tmp_path)
    path = tmp_path / "metrics" / "paws" / "train" / "plots" / "metrics" / "knn_k200.tsv"
    epochs, values = read_curve(path, "knn_k200")
    assert epochs == [1, 2, 3]
    assert values == pytest.approx([curves[("paws", 200, e)] for e in (1, 2, 3)])


def test_report_writes_summary_plots_and_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary) == METHODS
    for method in METHODS:
        assert list(summary[method]) == ["k20", "k200"]
        for k in KS:
            assert summary[method][f"k{k}"] == pytest.approx(scores(method, k))
    for k in KS:
        with Image.open(tmp_path / "out" / "plots" / f"knn_k{k}.png") as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 10  # something was drawn, not a blank canvas
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["method", "knn@20", "weighted@20", "knn@200", "weighted@200"]
    assert lines[2].split() == ["paws", "0.6200", "0.6300", "0.8000", "0.8100"]


def test_plots_differ_when_curves_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    assert run(tmp_path).exit_code == 0
    k20 = np.asarray(Image.open(tmp_path / "out" / "plots" / "knn_k20.png").convert("L"))
    k200 = np.asarray(Image.open(tmp_path / "out" / "plots" / "knn_k200.png").convert("L"))
    assert k20.shape == k200.shape and (k20 != k200).any()


def test_monitor_off_still_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path, monitor_every=0)
    for method in METHODS:
        for k in KS:
            (tmp_path / "metrics" / method / "train" / "plots" / "metrics" / f"knn_k{k}.tsv").unlink()
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "summary.json").exists()
    assert all((tmp_path / "out" / "plots" / f"knn_k{k}.png").exists() for k in KS)


@pytest.mark.parametrize(
    ("missing", "stage"),
    [
        ("paws/knn.json", "dvc repro knn@paws"),
        ("paws/train/plots/metrics/knn_k200.tsv", "dvc repro pretrain@paws"),
    ],
)
def test_missing_file_names_file_and_stage(tmp_path, monkeypatch, missing, stage):
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    (tmp_path / "metrics" / missing).unlink()
    result = run(tmp_path)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and missing in result.stderr and stage in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written before every input is checked


def test_summarize_missing_k_is_a_data_error():
    with pytest.raises(DataError, match=r"metrics/paws/knn.json: no scores for k200 .*knn@paws"):
        summarize({"paws": {"k20": scores("paws", 20)}}, KS, where="metrics/{method}/knn.json")


def test_read_curve_rejects_other_columns(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("step\tloss\n1\t0.5\n")
    with pytest.raises(DataError, match="'step' and 'knn_k20'"):
        read_curve(path, "knn_k20")


def test_table_columns_are_aligned():
    summary = summarize({m: {f"k{k}": scores(m, k) for k in KS} for m in METHODS}, KS)
    lines = format_table(summary, KS).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1
    assert lines[1].startswith("crossentropy ") and lines[1].endswith("0.7100")
