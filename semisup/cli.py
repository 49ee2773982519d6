"""The `semisup` command: what a person runs outside the DVC pipeline.

`semisup predict RUN FOLDER` classifies new images with a trained run; `semisup plots-template` writes the
offline page template of `dvc plots`; `semisup check-page PAGE` renders a page offline in headless
Chromium and says which plots it drew. Like a stage (stages/), this is where argv and params.yaml are read;
it shares the stages' handling of user errors (one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from stages.common import user_errors


@click.group()
def main() -> None:
    """semisup: use and inspect the pipeline's results."""


@main.command("plots-template")
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Default: .dvc/plots/offline.html."
)
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from a fresh build; write nothing.")
@user_errors
def plots_template(out: str | None, check: bool) -> None:
    """Write the page template of `dvc plots show` with the Vega libraries inline (offline)."""
    from semisup.io import write_text
    from semisup.vega_page import TEMPLATE, build, versions

    path = Path(out) if out else TEMPLATE
    text = build()
    if check:
        same = path.exists() and path.read_text(encoding="utf8") == text
        click.echo(f"{path}: {'up to date' if same else 'differs from a fresh build'}")
        raise SystemExit(0 if same else 1)
    write_text(path, text)
    origin = ", ".join(f"{k} {v}" for k, v in versions().items())
    click.echo(f"{path}: {len(text.encode()) / 2**20:.2f} MiB, from {origin}")


@main.command("check-page")
@click.argument("pages", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@user_errors
def check_page(pages: tuple[str, ...]) -> None:
    """Render PAGES offline in headless Chromium; print every plot and whether it was drawn."""
    from semisup.pagecheck import check_page as render
    from semisup.pagecheck import network_urls

    failed = False
    for page in pages:
        urls = network_urls(Path(page).read_text(encoding="utf8"))
        plots = render(page)
        blank = [p for p in plots if not p.drawn]
        failed |= bool(urls or blank or not plots)
        click.echo(
            f"{page}: {len(plots) - len(blank)} of {len(plots)} plots drawn offline "
            f"({sum(p.kind == 'vega' for p in plots)} Vega, {sum(p.kind == 'img' for p in plots)} images), "
            f"{len(urls)} network URLs"
        )
        for p in blank:
            click.echo(f"  blank: {p.kind} {p.name}")
        for url in urls:
            click.echo(f"  network: {url}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
