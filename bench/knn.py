"""Benchmark: our chunked TensorFlow cosine kNN against scikit-learn's brute-force cosine kNN.

Same synthetic clustered embeddings for both (bank 50,000 x 128, 10,000 queries, 10 classes), k = 20 and
200. Each contender runs in its own subprocess so that its peak resident memory (ru_maxrss above the
baseline after the data is built) is its own. Prints one line per run and, last, one JSON object.

    .venv/bin/python bench/knn.py [--runs 3] [--chunks 256,512,1024,2048,4096]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BANK, QUERIES, DIM, CLASSES, SPREAD = 50_000, 10_000, 128, 10, 4.0
KS = (20, 200)


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clustered float32 embeddings: bank (N, D), labels (N,), queries (Q, D), labels (Q,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, DIM))
    bank_labels = rng.integers(0, CLASSES, BANK)
    query_labels = rng.integers(0, CLASSES, QUERIES)
    bank = centres[bank_labels] + SPREAD * rng.normal(size=(BANK, DIM))
    queries = centres[query_labels] + SPREAD * rng.normal(size=(QUERIES, DIM))
    return bank.astype(np.float32), bank_labels, queries.astype(np.float32), query_labels


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(bank, labels, queries, chunk: int) -> dict:
    """Predictions {k: (Q,)} of our kNN (unweighted votes)."""
    from semisup.evaluation.knn import knn_predict

    out = knn_predict(bank, labels, queries, ks=KS, num_classes=CLASSES, query_chunk=chunk)
    return {k: out[k][0] for k in KS}


def run_sklearn(bank, labels, queries, ks=KS) -> dict:
    """Predictions {k: (Q,)} of scikit-learn's brute-force cosine KNeighborsClassifier, one fit per k."""
    from sklearn.neighbors import KNeighborsClassifier

    return {
        k: KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        .fit(bank, labels)
        .predict(queries)
        for k in ks
    }


def worker(kind: str, chunk: int, runs: int, out_path: str) -> None:
    """Time `runs` repetitions of one contender; save its predictions and print a JSON line of figures."""
    bank, labels, queries, query_labels = make_data()
    if kind == "ours":
        import tensorflow as tf  # noqa: F401  (imported before the baseline: its memory is not the kNN's)

        run_ours(bank, labels, queries[:8], chunk)  # trace the tf.function once
        fn = lambda: run_ours(bank, labels, queries, chunk)  # noqa: E731
    elif kind == "sklearn":
        fn = lambda: run_sklearn(bank, labels, queries)  # noqa: E731
    else:
        fn = lambda: run_sklearn(bank, labels, queries, ks=(max(KS),))  # noqa: E731  (one search at k=200)
    baseline = peak_rss_mib()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        preds = fn()
        times.append(time.perf_counter() - start)
    np.savez(out_path, **{f"k{k}": v for k, v in preds.items()}, labels=query_labels)
    figures = {"median_s": statistics.median(times), "times_s": times, "peak_mib": peak_rss_mib() - baseline}
    print(json.dumps(figures))


def spawn(kind: str, chunk: int, runs: int, tmp: Path) -> tuple[dict, dict]:
    """Run one contender in a fresh interpreter; its figures and predictions."""
    out = tmp / f"{kind}-{chunk}.npz"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--chunk",
        str(chunk),
        "--runs",
        str(runs),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as data:
        preds = {key: data[key] for key in data.files}
    return figures, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunks", default="256,512,1024,2048,4096")
    parser.add_argument("--worker", choices=["ours", "sklearn", "sklearn_k200"])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.chunk, args.runs, args.out)
        return
    print(
        f"bank {BANK} x {DIM}, {QUERIES} queries, {CLASSES} classes, k = {KS}, {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours = {}
        for chunk in map(int, args.chunks.split(",")):
            ours[chunk] = spawn("ours", chunk, args.runs, Path(tmp))
            f = ours[chunk][0]
            print(
                f"ours query_chunk={chunk}: {f['median_s']:.2f} s (median), peak +{f['peak_mib']:.0f} MiB",
                flush=True,
            )
        best = min(ours, key=lambda c: ours[c][0]["median_s"])
        sk, sk_preds = spawn("sklearn", 0, args.runs, Path(tmp))
        print(
            f"sklearn (k=20 and k=200): {sk['median_s']:.2f} s (median), peak +{sk['peak_mib']:.0f} MiB",
            flush=True,
        )
        one, _ = spawn("sklearn_k200", 0, args.runs, Path(tmp))
        print(
            f"sklearn (k=200 only): {one['median_s']:.2f} s (median), peak +{one['peak_mib']:.0f} MiB",
            flush=True,
        )
    figures, preds = ours[best]
    labels = sk_preds["labels"]
    result = {
        "best_query_chunk": best,
        "ours_s": round(figures["median_s"], 3),
        "sklearn_s": round(sk["median_s"], 3),
        "sklearn_k200_only_s": round(one["median_s"], 3),
        "speedup": round(sk["median_s"] / figures["median_s"], 2),
        "speedup_vs_one_sklearn_search": round(one["median_s"] / figures["median_s"], 2),
        "agreement": {f"k{k}": float(np.mean(preds[f"k{k}"] == sk_preds[f"k{k}"])) for k in KS},
        "accuracy": {f"k{k}": float(np.mean(preds[f"k{k}"] == labels)) for k in KS},
        "ours_peak_mib": round(figures["peak_mib"]),
        "sklearn_peak_mib": round(sk["peak_mib"]),
        "ours_s_by_chunk": {c: round(f["median_s"], 3) for c, (f, _) in ours.items()},
        "ours_peak_mib_by_chunk": {c: round(f["peak_mib"]) for c, (f, _) in ours.items()},
        "runs": args.runs,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
