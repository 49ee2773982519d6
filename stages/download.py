"""Stage download: fetch or check the image source named by `data.source` into data/raw."""

from __future__ import annotations

import click

from stages.common import load, params_option, user_errors
from stages.console import done


@click.command()
@params_option
@click.option(
    "--raw-dir",
    default="data/raw",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output: the raw data (tfds data_dir).",
)
@click.option(
    "--manual-dir",
    default="data/manual",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where an offline machine puts stl10_binary.tar.gz.",
)
@click.option(
    "--download-dir",
    default="data/downloads",
    show_default=True,
    type=click.Path(file_okay=False),
    help="tfds download cache, kept outside the stage output so a rerun does not download again.",
)
@user_errors
def main(params_path: str, raw_dir: str, manual_dir: str, download_dir: str) -> None:
    """Download STL10, or check the digits / image folder, and record it under --raw-dir."""
    params = load(params_path)
    from semisup.core.io import probe_writable
    from semisup.data.sources import prepare_raw

    probe_writable(raw_dir)  # before checking every image of a folder, or a download of 2.6 GB

    summary = prepare_raw(params.data, raw_dir=raw_dir, manual_dir=manual_dir, download_dir=download_dir)
    done(summary)


if __name__ == "__main__":
    main()
