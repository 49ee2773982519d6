"""Check what a person sees on an HTML page: headless Chromium, offline, finds every plot drawn.

A copy of the page gets one more script at its end that waits for the page to settle and then writes,
for every plot element (a canvas, an SVG, an image) and every Vega container, whether it holds a drawing,
into the DOM; Chromium's `--dump-dom` prints that DOM. The network is shut off for the browser (a proxy
that does not exist, every host name unresolvable), so what the page fetches from the internet fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from semisup.core.errors import UserError

# Runs after the page's own scripts, and reports once every plot is drawn or after 15 s (virtual time). A canvas counts as drawn when some pixel is neither transparent nor
# white; an SVG when it holds a path, line, rect, circle or text; an image when it decoded. A Vega
# container (the element of each `vegaEmbed('#id', ...)` call, VEGA_IDS) counts as drawn when it holds a
# drawn canvas or SVG.
CHECK_SCRIPT = """
<script type="text/javascript">
var VEGA_IDS = %s;
window.addEventListener("load", function () {
  var tries = 0;
  function canvasDrawn(c) {
    if (!c.width || !c.height) return false;
    var d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    for (var i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 0 && (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250)) return true;
    }
    return false;
  }
  function svgDrawn(s) { return s.querySelectorAll("path,line,rect,circle,text").length > 0; }
  function drawn(el) {
    if (el.tagName === "CANVAS") return canvasDrawn(el);
    if (el.tagName.toLowerCase() === "svg") return svgDrawn(el);
    return el.complete && el.naturalWidth > 0;
  }
  function report() {
  var found = [];
  VEGA_IDS.forEach(function (id) {
    var box = document.getElementById(id);
    var marks = box ? Array.prototype.slice.call(box.querySelectorAll("canvas,svg")) : [];
    found.push({kind: "vega", name: id, drawn: marks.some(drawn)});
  });
  document.querySelectorAll("img").forEach(function (im) {
    found.push({kind: "img", name: (im.alt || im.getAttribute("src") || "").slice(0, 120), drawn: drawn(im)});
  });
  // Vega draws asynchronously: look again every 250 ms until every plot is drawn, for 60 tries at most.
  if (found.some(function (f) { return !f.drawn; }) && ++tries < 60) { setTimeout(report, 250); return; }
  var pre = document.createElement("pre");
  pre.id = "semisup-page-check";
  pre.textContent = JSON.stringify(found);
  document.body.appendChild(pre);
  }
  setTimeout(report, 250);
});
</script>
"""
EMBEDS = re.compile(r"""vegaEmbed\(\s*['"]#([^'"]+)['"]""")
RESULT = re.compile(r'<pre id="semisup-page-check">(.*?)</pre>', re.S)
NETWORK_SCHEMES = ("http", "https", "ws", "wss", "ftp")
# Where an HTML page names something the browser fetches: src, href, srcset, poster, CSS url(...).
LOADS = re.compile(r"""(?:\b(?:src|href|srcset|poster|data)\s*=\s*["']?|url\(\s*["']?)([^"'\s)>]+)""", re.I)


@dataclass(frozen=True)
class Plot:
    """One plot element of a page: what it is (vega, img), its name, whether it was drawn."""

    kind: str
    name: str
    drawn: bool


def chromium() -> str | None:
    """The Chromium binary on PATH (Debian's `chromium`), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def network_urls(html: str) -> list[str]:
    """Every URL that an HTML page fetches from the network (its src/href/url() targets)."""
    return [url for url in LOADS.findall(html) if urlparse(url).scheme.lower() in NETWORK_SCHEMES]


def check_page(page: str | Path, budget_ms: int = 20000) -> list[Plot]:
    """Render `page` offline in headless Chromium; -> every plot element on it and whether it was drawn."""
    browser = chromium()
    if browser is None:
        raise UserError("chromium: not found; install it (apt-get install chromium)")
    page = Path(page).resolve()
    # The copy sits beside the page, so that relative links (DVC's static/ images) still resolve.
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=page.parent, delete=False) as copy:
        copy.write(with_check(page.read_text(encoding="utf8")))
    try:
        with tempfile.TemporaryDirectory() as profile:
            dom = _dump_dom(browser, Path(copy.name), profile, budget_ms)
    finally:
        Path(copy.name).unlink()
    match = RESULT.search(dom)
    if match is None:
        raise RuntimeError(f"{page}: the page check did not run (the page did not finish loading)")
    return [Plot(**entry) for entry in json.loads(_unescape(match.group(1)))]


def with_check(html: str) -> str:
    """The page with CHECK_SCRIPT before its last </body> (a bundled library may hold the string too)."""
    script = CHECK_SCRIPT.replace("%s", json.dumps(vega_ids(html)), 1)
    head, tag, tail = html.rpartition("</body>")
    return head + script + tag + tail if tag else html + script


def vega_ids(html: str) -> list[str]:
    """The element ids of a page's Vega plots: the targets of its vegaEmbed('#id', ...) calls."""
    return EMBEDS.findall(html)


def _dump_dom(browser: str, page: Path, profile: str, budget_ms: int) -> str:
    """Chromium's DOM of `page` after `budget_ms` of virtual time, with the network shut off."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",  # nothing listens there: every http(s) fetch fails
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--allow-file-access-from-files",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1400,1000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def _unescape(text: str) -> str:
    """The text of an element as --dump-dom escapes it (&amp; &lt; &gt; &quot;)."""
    for escaped, plain in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&")):
        text = text.replace(escaped, plain)
    return text
