"""Look at one sample: from a shard set or a raw route, rendered to a PNG; a static HTML gallery of many.

``python -m leadio.inspect`` is the command line (see ``__main__``); `from_shard_set` / `from_raw` load a
sample (`sample`), `render_png` / `save_png` draw it (`render`), `write_gallery` writes a gallery (`gallery`).
"""

from leadio.inspect.gallery import browser_screenshot, write_gallery
from leadio.inspect.render import IMAGE_SIZE, PANELS, caption_lines, render_array, render_png, save_png
from leadio.inspect.sample import InspectError, InspectSample, from_raw, from_shard_set, resolve_route

__all__ = ["IMAGE_SIZE", "PANELS", "InspectError", "InspectSample", "browser_screenshot", "caption_lines", "from_raw",
           "from_shard_set", "render_array", "render_png", "resolve_route", "save_png", "write_gallery"]
