"""A static HTML gallery of a shard set's samples (index.html + one PNG each), filterable by bucket.

The page is plain HTML with a few lines of inline JavaScript for the filters (bucket buttons, "without
planning targets" checkbox; ``index.html#bucket=<name>`` opens pre-filtered); without JavaScript every sample
shows. Nothing is fetched from the network, so the folder can be copied or served anywhere.
`browser_screenshot` opens a page in headless Chromium, which is how the tests (and a person without a
display) check that the gallery really renders.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leadio.files import atomic_write_bytes
from leadio.inspect.render import render_png
from leadio.inspect.sample import InspectSample, from_shard_set
from leadio.shard.shardset import ShardSet

__all__ = ["BROWSERS", "GalleryReport", "browser_dom", "browser_screenshot", "choose_rows", "find_browser",
           "write_gallery"]

#: executables tried, in order, by `find_browser`
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass
class GalleryReport:
    """What `write_gallery` wrote."""

    index: Path
    images: list[Path]
    buckets: dict[str, int]


def choose_rows(shard_set: ShardSet, samples: int) -> np.ndarray:
    """``samples`` catalog rows spread over the buckets: taken from each bucket in turn, evenly spaced
    within a bucket (deterministic; a bucket with fewer rows gives all it has)."""
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    bucket = np.asarray(shard_set.catalog["bucket"]) if "bucket" in shard_set.catalog.columns else \
        np.zeros(len(shard_set), np.int64)
    per_bucket = [np.flatnonzero(bucket == b) for b in np.unique(bucket)]
    take = [0] * len(per_bucket)
    while sum(take) < min(samples, len(shard_set)):
        for i, rows in enumerate(per_bucket):
            if take[i] < len(rows) and sum(take) < samples:
                take[i] += 1
    chosen = [rows[np.linspace(0, len(rows) - 1, k).round().astype(int)] for rows, k in zip(per_bucket, take,
                                                                                              strict=True) if k]
    return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)


def _file_name(i: int, key: str) -> str:
    return f"{i:03d}_{key.replace('/', '+')}.png"


def _card(s: InspectSample, name: str) -> str:
    i = s.info
    text = (f"<b>{html.escape(s.key)}</b><br>bucket {html.escape(s.bucket or '-')} &middot; "
            f"{html.escape(i['scenario'])} &middot; {html.escape(i['town'])} &middot; {html.escape(i['weather'])}"
            f" &middot; {i['speed']:.1f} m/s &middot; command {s.command()}"
            + ("" if s.has_targets else " &middot; <span class=warn>no planning targets</span>"))
    return (f'<figure data-bucket="{html.escape(s.bucket or "-", quote=True)}" data-targets="{int(s.has_targets)}">'
            f'<a href="{name}"><img src="{name}" alt="{html.escape(s.key, quote=True)}" loading="lazy"></a>'
            f"<figcaption>{text}</figcaption></figure>")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>leadio gallery: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #f4f4f4; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
.bar {{ position: sticky; top: 0; background: #f4f4f4; padding: 8px 0; z-index: 1; }}
.bar button {{ margin: 2px; padding: 4px 10px; border: 1px solid #888; background: white; cursor: pointer; }}
.bar button.on {{ background: #1f6feb; color: white; border-color: #1f6feb; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }}
figure {{ margin: 0; background: white; padding: 6px; border: 1px solid #ccc; }}
figure img {{ width: 100%; display: block; }}
figcaption {{ font-size: 13px; padding-top: 4px; }}
.warn {{ color: #c00; font-weight: bold; }}
</style></head><body>
<h1>leadio gallery: {title}</h1>
<div>{summary}</div>
<div class="bar" id="bar">bucket: {buttons}
<label><input type="checkbox" id="notargets"> only samples without planning targets</label>
&nbsp;&middot;&nbsp;<span id="count"></span></div>
<div class="grid" id="grid">
{cards}
</div>
<script>
const cards = Array.from(document.querySelectorAll("#grid figure"));
const buttons = Array.from(document.querySelectorAll("#bar button"));
const noTargets = document.getElementById("notargets");
let bucket = "";
function apply() {{
  let shown = 0;
  for (const c of cards) {{
    const ok = (!bucket || c.dataset.bucket === bucket) && (!noTargets.checked || c.dataset.targets === "0");
    c.hidden = !ok; shown += ok;
  }}
  for (const b of buttons) b.classList.toggle("on", b.dataset.bucket === bucket);
  document.getElementById("count").textContent = shown + " of " + cards.length + " shown";
}}
for (const b of buttons) b.onclick = () => {{ bucket = b.dataset.bucket; location.hash = bucket ?
  "bucket=" + encodeURIComponent(bucket) : ""; apply(); }};
noTargets.onchange = apply;
const m = location.hash.match(/bucket=([^&]*)/);
if (m) bucket = decodeURIComponent(m[1]);
apply();
</script>
<script type="application/json" id="samples">{samples_json}</script>
</body></html>
"""


def write_gallery(shard_set: ShardSet, out_dir: str | Path, samples: int = 12, view: str = "normal",
                  progress: bool = True) -> GalleryReport:
    """Render ``samples`` samples of ``shard_set`` (see `choose_rows`) and write ``out_dir/index.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = choose_rows(shard_set, samples)
    cards, images, listing, counts = [], [], [], {}
    for i, row in enumerate(rows):
        s = from_shard_set(shard_set, index=int(row), view=view)
        name = _file_name(i, s.key)
        atomic_write_bytes(out_dir / name, render_png(s, shard_set.config))
        images.append(out_dir / name)
        cards.append(_card(s, name))
        counts[s.bucket or "-"] = counts.get(s.bucket or "-", 0) + 1
        listing.append({"key": s.key, "bucket": s.bucket, "png": name, "has_targets": s.has_targets})
        if progress:
            print(f"  [{i + 1}/{len(rows)}] {out_dir / name}", flush=True)
    buttons = [f'<button data-bucket="">every bucket ({len(rows)})</button>'] + [
        f'<button data-bucket="{html.escape(b, quote=True)}">{html.escape(b)} ({n})</button>'
        for b, n in counts.items()]
    summary = (f"{len(rows)} of the {len(shard_set)} samples of shard set <code>{html.escape(str(shard_set.path))}"
               f"</code>, {view} view, spread over {len(counts)} bucket(s). Click an image for full size.")
    page = _PAGE.format(title=html.escape(shard_set.path.name), summary=summary, buttons="".join(buttons),
                        cards="\n".join(cards), samples_json=json.dumps(listing).replace("</", "<\\/"))
    atomic_write_bytes(out_dir / "index.html", page.encode())
    return GalleryReport(out_dir / "index.html", images, counts)


def find_browser() -> str | None:
    """Path of a Chromium-family browser on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _headless(page: str | Path, fragment: str, args: list[str], timeout: float) -> tuple[str, str]:
    """Run headless Chromium on ``page`` with ``args``; returns (url, stdout)."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError(f"no headless browser found (tried {', '.join(BROWSERS)}); on Debian/Ubuntu: "
                           f"apt-get install chromium")
    url = Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory(prefix="leadio-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HOME": profile})
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{browser} failed on {url} (exit {proc.returncode}): {' | '.join(tail)}")
    return url, proc.stdout


def browser_screenshot(page: str | Path, png: str | Path, *, size: tuple[int, int] = (1400, 1000),
                       fragment: str = "", timeout: float = 90.0) -> Path:
    """Open ``page`` (``#fragment``) in headless Chromium and save a screenshot of the window to ``png``.

    Raises:
        RuntimeError: no browser installed (names the package to install), or the browser failed.
    """
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    url, _ = _headless(page, fragment, [f"--window-size={size[0]},{size[1]}", f"--screenshot={png}"], timeout)
    if not png.exists():
        raise RuntimeError(f"the browser wrote no screenshot of {url} to {png}")
    return png


def browser_dom(page: str | Path, *, fragment: str = "", timeout: float = 90.0) -> str:
    """The page's DOM after its scripts ran (headless Chromium ``--dump-dom``): what a visitor's browser shows."""
    return _headless(page, fragment, ["--dump-dom"], timeout)[1]
