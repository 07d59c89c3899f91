"""Draw an `InspectSample` as one PNG a person reads at a glance (matplotlib, Agg, fixed pixel layout).

Panels (pixel boxes in `PANELS`, so tests can check each one):

- ``camera``: the 3-camera strip with the camera semantics blended over it (class legend beside it);
- ``depth``: the depth image in metres, with a colour bar;
- ``caption``: speed, target speed, command, scenario, town, weather, view, boxes, bucket; when the frame has
  no planning targets (near a route end) it says so in red;
- ``lidar``: the LiDAR BEV (counts), forward up, with the boxes (class colour, heading tick), the ego, and
  the route, waypoints and target points;
- ``bev``: the 13-class BEV semantic target with the same route overlay and its class legend.

BEV panels are drawn in metres in the ego frame (x forward = up, y right = right), the range of the
dataset config (LEAD: x -32..64 m, y -40..40 m). The image size is fixed (`IMAGE_SIZE`), whatever the data.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from leadio.files import atomic_write_bytes
from leadio.format.config import DATASET_CONFIGS, DatasetConfig
from leadio.inspect.sample import InspectSample

__all__ = ["BEV_CLASSES", "BOX_CLASSES", "CAMERA_CLASSES", "IMAGE_SIZE", "PANELS", "caption_lines", "render_array",
           "render_png", "save_png"]

IMAGE_SIZE = (1600, 1400)  # (width, height) px
_DPI = 100
#: panel -> (x0, y0, x1, y1) in pixels from the top-left of the image
PANELS = {
    "camera": (20, 62, 1220, 462),
    "depth": (20, 512, 560, 692),
    "caption": (660, 504, 1590, 704),
    "lidar": (70, 742, 570, 1342),
    "bev": (700, 742, 1200, 1342),
}

#: (name, RGB) per class id, docs/format.md §4.3 (camera), §4.5 (BEV), §4.6 (boxes)
CAMERA_CLASSES = [("unlabeled", (0, 0, 0)), ("vehicle", (0, 90, 255)), ("road", (128, 64, 128)),
                  ("traffic light", (255, 220, 0)), ("pedestrian", (255, 30, 30)), ("road line", (120, 255, 120)),
                  ("obstacle", (255, 140, 0)), ("special vehicle", (0, 230, 230)), ("stop sign", (230, 0, 230)),
                  ("biker", (150, 90, 40))]
BEV_CLASSES = [("unlabeled", (20, 20, 20)), ("road", (95, 95, 95)), ("lane markers", (235, 235, 235)),
               ("stop signs", (230, 0, 230)), ("vehicle", (0, 110, 255)), ("walker", (255, 40, 40)),
               ("obstacle", (255, 140, 0)), ("parking vehicle", (120, 60, 255)), ("special vehicle", (0, 230, 200)),
               ("biker", (160, 100, 40)), ("green light", (0, 200, 0)), ("red light", (220, 0, 0)),
               ("red light (overhead)", (140, 0, 0))]
BOX_CLASSES = [("vehicle", (0, 140, 255)), ("walker", (255, 60, 60)), ("traffic light", (255, 220, 0)),
               ("stop sign", (230, 0, 230)), ("special", (0, 230, 200)), ("obstacle", (255, 140, 0)),
               ("parking", (170, 120, 255)), ("biker", (200, 140, 60))]
EGO_EXTENT = (2.45, 1.05)  # half length, half width (m), a Lincoln MKZ as in CARLA's leaderboard
_SEMANTIC_ALPHA = 0.45


def _rgb(c: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(v / 255 for v in c)


def _palette(classes: list) -> np.ndarray:
    return np.array([c for _, c in classes], np.uint8)


def _axes(fig, name: str):
    x0, y0, x1, y1 = PANELS[name]
    w, h = IMAGE_SIZE
    return fig.add_axes((x0 / w, 1 - y1 / h, (x1 - x0) / w, (y1 - y0) / h))


def _bev_image(grid: np.ndarray) -> np.ndarray:
    """(rows = y left->right, cols = x rear->front) -> displayed with forward up and y to the right."""
    return np.swapaxes(grid, 0, 1)[::-1]


def caption_lines(s: InspectSample) -> list[tuple[str, str]]:
    """The caption as (text, colour) lines; the same fields whatever the source."""
    i = s.info
    target = f"{s.arrays['target_speed']:.1f} m/s" if s.has_targets else f"{i['target_speed']:.1f} m/s (meta)"
    lines = [
        (f"speed {i['speed']:.1f} m/s    target speed {target}    brake {'yes' if i['brake'] else 'no'}", "black"),
        (f"command {s.command()}    next command {s.command('next_command')}", "black"),
        (f"scenario {i['scenario']} (active: {i['scenario_type']})", "black"),
        (f"town {i['town']}    weather {i['weather']}", "black"),
        (f"view {s.view}    boxes {len(s.arrays['boxes'])}    bucket {s.bucket or '-'}", "black"),
        (f"route {s.route}, frame {s.frame} of {s.num_frames} ({s.num_frames - 1 - s.frame} to the end)",
         "black"),
    ]
    if not s.has_targets:
        lines.append(("NO PLANNING TARGETS: too close to the route end (the 8 waypoints need 2 s of future "
                      "positions); route, waypoints and target points are not drawn", "red"))
    if s.dropped:
        lines.append((f"route dropped by LEAD's filter: {s.dropped}", "red"))
    lines.append((f"source: {s.source}", "dimgray"))
    return lines


def _box_corners(row: np.ndarray, config: DatasetConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CenterNet box row -> (corners (4, 2), centre (2,), heading tip (2,)) in ego metres (x, y)."""
    ppm = config.pixels_per_meter
    cx, cy = row[0] / ppm + config.lidar_min_x, row[1] / ppm + config.lidar_min_y
    ex, ey, yaw = row[2] / ppm, row[3] / ppm, row[4]
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[ex, ey], [ex, -ey], [-ex, -ey], [-ex, ey]])
    rot = np.array([[c, -s], [s, c]])
    centre = np.array([cx, cy])
    return local @ rot.T + centre, centre, centre + rot @ np.array([max(ex, 1.0) * 1.4, 0.0])


def _draw_route(ax, s: InspectSample) -> list:
    """Route, waypoints and target points in ego metres, plotted as (y, x); returns legend handles."""
    if not s.has_targets:
        return []
    a = s.arrays
    handles = []
    r, w = a["route"], a["waypoints"]
    handles += ax.plot(r[:, 1], r[:, 0], "-", color="deepskyblue", lw=2, marker=".", ms=5, label="route")
    handles += ax.plot(w[:, 1], w[:, 0], "o", color="lime", mec="black", mew=0.6, ms=6, label="waypoints")
    for name, marker, colour in (("previous_target_point", "v", "khaki"), ("target_point", "*", "yellow"),
                                 ("next_target_point", "P", "orange")):
        p = a[name]
        handles += ax.plot([p[1]], [p[0]], marker, color=colour, mec="black", mew=0.8, ms=13,
                           label=name.replace("_", " "))
    return handles


def _draw_ego(ax) -> list:
    from matplotlib.patches import Polygon

    ex, ey = EGO_EXTENT
    ax.add_patch(Polygon([[-ey, -ex], [ey, -ex], [ey, ex], [-ey, ex]], closed=True, fc="white", ec="red", lw=1.5))
    return ax.plot([0, 0], [0, ex * 2.2], color="red", lw=2, label="ego (heading)")


def _bev_axes(ax, config: DatasetConfig, image: np.ndarray, **kw) -> None:
    ax.imshow(image, extent=(config.lidar_min_y, config.lidar_max_y, config.lidar_min_x, config.lidar_max_x),
              origin="upper", interpolation="nearest", **kw)
    ax.set_xlim(config.lidar_min_y, config.lidar_max_y)
    ax.set_ylim(config.lidar_min_x, config.lidar_max_x)
    ax.set_xlabel("y (m, right)", fontsize=8)
    ax.set_ylabel("x (m, forward)", fontsize=8)
    ax.tick_params(labelsize=7)


def render_png(s: InspectSample, config: DatasetConfig | None = None) -> bytes:
    """The sample as PNG bytes (RGB, `IMAGE_SIZE`)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(render_array(s, config)).save(buf, format="PNG")
    return buf.getvalue()


def render_array(s: InspectSample, config: DatasetConfig | None = None) -> np.ndarray:
    """The sample drawn as uint8 RGB (height, width, 3) of `IMAGE_SIZE`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = config or DATASET_CONFIGS["carla_leaderboard2"]
    fig = plt.figure(figsize=(IMAGE_SIZE[0] / _DPI, IMAGE_SIZE[1] / _DPI), dpi=_DPI, facecolor="white")
    fig.text(0.5, 1 - 12 / IMAGE_SIZE[1], f"{s.key}  ({s.view} view)", ha="center", va="top",
             fontsize=13 if len(s.key) < 110 else 9, weight="bold")
    _draw_camera(fig, s.arrays)
    _draw_depth(fig, s.arrays, config)
    _draw_caption(fig, s)
    _draw_lidar(fig, s, config)
    _draw_bev(fig, s, config)
    fig.canvas.draw()
    image = np.array(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    return image


def _class_legend(fig, classes: list, present: set, first: int, anchor: tuple[int, int], title: str) -> None:
    """A figure legend of ``classes[first:]`` at pixel ``anchor``, marking the ids not in ``present`` absent."""
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(fc=_rgb(c), ec="black", label=n + ("" if i in present else " (absent)"))
                        for i, (n, c) in enumerate(classes) if i >= first],
               loc="upper left", bbox_to_anchor=(anchor[0] / IMAGE_SIZE[0], 1 - anchor[1] / IMAGE_SIZE[1]), fontsize=9,
               title=title, frameon=False)


def _draw_camera(fig, a: dict) -> None:
    """The ``camera`` panel: the camera strip with its semantics blended over it, and their class legend."""
    ax = _axes(fig, "camera")
    sem = a["semantic"].astype(int)
    overlay = _palette(CAMERA_CLASSES)[np.clip(sem, 0, len(CAMERA_CLASSES) - 1)].astype(np.float32)
    blend = np.where((sem > 0)[..., None], (1 - _SEMANTIC_ALPHA) * a["rgb"] + _SEMANTIC_ALPHA * overlay, a["rgb"])
    ax.imshow(blend.astype(np.uint8), interpolation="bilinear")
    ax.set_axis_off()
    ax.set_title(f"camera strip with semantic overlay (alpha {_SEMANTIC_ALPHA})", fontsize=10)
    _class_legend(fig, CAMERA_CLASSES, set(np.unique(sem).tolist()), 1, (1240, 70), "camera semantics")


def _draw_depth(fig, a: dict, config: DatasetConfig) -> None:
    """The ``depth`` panel: the depth image in metres with a colour bar."""
    ax = _axes(fig, "depth")
    im = ax.imshow(a["depth"].astype(np.float32) / 255 * config.depth_max_m, cmap="magma_r", vmin=0,
                   vmax=config.depth_max_m, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("depth", fontsize=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("m", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _draw_caption(fig, s: InspectSample) -> None:
    """The ``caption`` panel: `caption_lines`, wrapped at 100 characters, 21 px per line."""
    ax = _axes(fig, "caption")
    ax.set_axis_off()
    step = 21 / (PANELS["caption"][3] - PANELS["caption"][1])  # 21 px per line
    y = 1.0
    for text, colour in caption_lines(s):
        for part in textwrap.wrap(text, 100, subsequent_indent="  "):
            ax.text(0.0, y, part, fontsize=10.5, color=colour, va="top", ha="left",
                    weight="bold" if colour == "red" else "normal")
            y -= step


def _draw_lidar(fig, s: InspectSample, config: DatasetConfig) -> None:
    """The ``lidar`` panel: the LiDAR BEV with the boxes, the ego and the route overlay, and their legend."""
    a = s.arrays
    ax = _axes(fig, "lidar")
    counts = a["lidar"].astype(np.float32) / max(config.lidar_hist_max_per_pixel, 1)
    _bev_axes(ax, config, _bev_image(counts), cmap="gray", vmin=0, vmax=1)
    ax.set_title("LiDAR BEV, boxes, ego, route / waypoints / target points", fontsize=10)
    handles = _draw_ego(ax)
    handles += _draw_boxes(ax, a["boxes"], config)
    handles += _draw_route(ax, s)
    ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.85)


def _draw_boxes(ax, boxes: np.ndarray, config: DatasetConfig) -> list:
    """Each box row as its outline and heading tick in its class colour; returns one legend handle per class."""
    from matplotlib.patches import Patch, Polygon

    classes_seen = set()
    for row in boxes:
        cls = int(row[7]) if 0 <= int(row[7]) < len(BOX_CLASSES) else 0
        corners, centre, tip = _box_corners(row, config)
        colour = _rgb(BOX_CLASSES[cls][1])
        ax.add_patch(Polygon(corners[:, ::-1], closed=True, fill=False, ec=colour, lw=1.6))
        ax.plot([centre[1], tip[1]], [centre[0], tip[0]], color=colour, lw=1.6)
        classes_seen.add(cls)
    return [Patch(fc="none", ec=_rgb(BOX_CLASSES[c][1]), lw=1.6, label=f"box: {BOX_CLASSES[c][0]}")
            for c in sorted(classes_seen)]


def _draw_bev(fig, s: InspectSample, config: DatasetConfig) -> None:
    """The ``bev`` panel: the BEV semantic target with the ego and the route overlay, and its class legend."""
    a = s.arrays
    ax = _axes(fig, "bev")
    bev = _palette(BEV_CLASSES)[np.clip(a["bev_semantic"].astype(int), 0, len(BEV_CLASSES) - 1)]
    _bev_axes(ax, config, _bev_image(bev))
    ax.set_title("BEV semantic target", fontsize=10)
    _draw_ego(ax)
    _draw_route(ax, s)
    _class_legend(fig, BEV_CLASSES, set(np.unique(a["bev_semantic"]).tolist()), 0, (1230, 750), "BEV classes")


def save_png(s: InspectSample, path: str | Path, config: DatasetConfig | None = None) -> Path:
    """Render ``s`` and write it atomically to ``path``."""
    path = Path(path)
    atomic_write_bytes(path, render_png(s, config))
    return path
