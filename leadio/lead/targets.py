"""LEAD's CenterNet targets and radar detection labels, batched on the boxes' device (`leadio.lead`'s module
docstring lists the reference's quirks they keep)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from leadio.format.config import LEADERBOARD2
from leadio.schema import BoxColumn

__all__ = ["BEV_SIZE", "GRID", "NUM_BOX_CLASSES", "NUM_RADAR_QUERIES", "centernet_targets", "radar_detections"]

_BEV = LEADERBOARD2  # LEAD's sensor setup: the BEV raster that box rows are expressed in
BEV_SIZE = (_BEV.bev_height, _BEV.bev_width)  # rows, columns (320, 384 at 4 px/m)
GRID = (80, 96)  # CenterNet grid: lidar_height_meter x lidar_width_meter (bev_down_sample_factor 4)
NUM_BOX_CLASSES = 8
NUM_RADAR_QUERIES = 20  # num_radar_queries
_PPM, _MIN_X, _MIN_Y = _BEV.pixels_per_meter, _BEV.lidar_min_x, _BEV.lidar_min_y
_X, _Y, _EX, _EY, _YAW, _SPEED, _BRAKE, _CLASS, _RADAR = BoxColumn  # box row columns
# parse_radar_detection_labels' priority: SPECIAL, VEHICLE, WALKER, OBSTACLE, PARKING, then the rest.
_RADAR_PRIORITY = (1, 2, 5, 5, 0, 3, 4, 5)  # by BoxClass value


@lru_cache(maxsize=8)
def _kernel_table_host(rmax: int) -> np.ndarray:
    """(rmax+1, 2·rmax+1, 2·rmax+1) float32: mmdet/LEAD ``gaussian2d`` of radius r (σ = (2r+1)/6, values
    below eps·max zeroed) centred in slice r, zero outside its (2r+1)² window. numpy float32, as LEAD."""
    k = 2 * rmax + 1
    table = np.zeros((rmax + 1, k, k), np.float32)
    for r in range(rmax + 1):
        sigma = (2 * r + 1) / 6
        x = np.arange(-r, r + 1, dtype=np.float32).reshape(1, -1)
        y = np.arange(-r, r + 1, dtype=np.float32).reshape(-1, 1)
        h = np.exp(-(x * x + y * y) / np.float32(2 * sigma * sigma))
        h[h < np.finfo(h.dtype).eps * h.max()] = 0
        table[r, rmax - r : rmax + r + 1, rmax - r : rmax + r + 1] = h
    return table


def _kernel_table(rmax: int, device: torch.device) -> Tensor:
    return torch.from_numpy(_kernel_table_host(rmax)).to(device)


def _gaussian_radius(height: Tensor, width: Tensor, min_overlap: float) -> Tensor:
    """CornerNet's radius (LEAD's ``gaussian_radius``), elementwise, in the dtype given (float64 here)."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - torch.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 - torch.sqrt(b2**2 - 16 * c2)) / 8
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3)
    return torch.minimum(torch.minimum(r1, r2), r3)


def _np_mod(a: Tensor, b: float) -> Tensor:
    """numpy's float ``a % b`` (fmod, moved into b's sign)."""
    m = torch.fmod(a, b)
    return torch.where((m != 0) & ((m < 0) != (b < 0)), m + b, m)


def _np_floordiv(a: Tensor, b: float) -> Tensor:
    """numpy's float ``a // b`` for b > 0 (npy_divmod: (a - fmod) / b, floored, rounded back up past .5)."""
    m = torch.fmod(a, b)
    div = (a - m) / b
    div = torch.where((m != 0) & (m < 0), div - 1, div)
    floor = torch.floor(div)
    return torch.where(div - floor > 0.5, floor + 1, floor)


def centernet_targets(
    boxes: Tensor, num_boxes: Tensor | None = None, grid: tuple[int, int] = GRID,
    num_classes: int = NUM_BOX_CLASSES, *, num_yaw_bins: int = 12, min_overlap: float = 0.1, min_radius: int = 2,
) -> dict[str, Tensor]:  # fmt: skip
    """CenterNet targets of LEAD's ``get_centernet_labels`` (§4.6), batched, on ``boxes.device``.

    Per row in order: centre c = (x_px, y_px)·(gw/384, gh/320) (1 m cells by default), cell = trunc(c);
    rows whose cell is outside the grid, whose class is outside [0, num_classes) or with a non-finite value
    are skipped. The class heatmap gets LEAD's Gaussian of radius max(min_radius, int(CornerNet radius of
    the (ey, ex) extents in cells)), merged by max; the other targets are written at the cell, a later row
    overwriting an earlier one. One host sync per call (the largest radius sizes the drawing window).

    Args:
        boxes: (B, N, 9) rows [x_px, y_px, ex·4, ey·4, yaw (rad), speed (m/s), brake, class, radar points].
        num_boxes: (B,) valid rows per sample; rows past it are ignored. None draws every row as LEAD does,
            the zero padding included (reference: a class-0 box at cell (0, 0)).
        grid: (gh, gw) cells.
        num_classes: heatmap channels (`leadio.targets.BoxClass`).
        num_yaw_bins, min_overlap, min_radius: LEAD's num_dir_bins and CornerNet parameters.

    Returns:
        LEAD's dtypes and shapes: ``heatmap`` (B, C, gh, gw) float32; ``wh`` (B, 2, gh, gw) extents in cells;
        ``offset`` (B, 2, gh, gw); ``yaw_class`` (B, gh, gw) int32; ``yaw_res`` (B, 1, gh, gw) rad;
        ``velocity`` (B, 1, gh, gw) m/s; ``brake`` (B, gh, gw) int32 round-half-even(brake);
        ``pixel_weight`` (B, 2, gh, gw) 1 at box cells; ``avg_factor`` (B,) int64 = max(1, heatmap cells == 1).
    """
    gh, gw = int(grid[0]), int(grid[1])
    kept = _kept_rows(boxes, num_boxes, gh, gw, num_classes)
    bsz, dev = boxes.shape[0], boxes.device
    ex = kept.rows[:, _EX].double() * (gw / BEV_SIZE[1])
    ey = kept.rows[:, _EY].double() * (gh / BEV_SIZE[0])
    centre = (kept.b * num_classes + kept.cls) * (gh * gw) + kept.iy * gw + kept.ix  # each row's heatmap cell
    heatmap, rmax = _draw_heatmap(centre, ex, ey, (bsz, num_classes, gh, gw), min_overlap, min_radius, dev)
    avg_factor = _avg_factor(heatmap, centre, rmax)
    return {"heatmap": heatmap, **_cell_targets(kept, ex, ey, num_yaw_bins, (bsz, gh, gw), dev),
            "avg_factor": avg_factor}


class _KeptRows(NamedTuple):
    """The box rows drawn, in LEAD's loop order (sample, then row), with their centres and cells."""

    b: Tensor  # (M,) sample index
    rows: Tensor  # (M, 9) float32 row values
    cx: Tensor  # (M,) float32 centre x, cells
    cy: Tensor  # (M,) float32 centre y, cells
    ix: Tensor  # (M,) int64 cell column
    iy: Tensor  # (M,) int64 cell row
    cls: Tensor  # (M,) int64 class


def _kept_rows(boxes: Tensor, num_boxes: Tensor | None, gh: int, gw: int, num_classes: int) -> _KeptRows:
    """The rows whose cell is on the grid, class in range, values finite and index below ``num_boxes``."""
    bsz, n, _ = boxes.shape
    dev, rows = boxes.device, boxes.float()
    cx, cy = rows[..., _X] * (gw / BEV_SIZE[1]), rows[..., _Y] * (gh / BEV_SIZE[0])  # float32, as LEAD
    ix, iy, cls = cx.trunc(), cy.trunc(), rows[..., _CLASS]
    valid = (ix >= 0) & (ix < gw) & (iy >= 0) & (iy < gh) & (cls >= 0) & (cls < num_classes)
    valid &= torch.isfinite(rows[..., :8]).all(dim=-1)
    if num_boxes is not None:
        valid &= torch.arange(n, device=dev)[None] < num_boxes.to(dev).reshape(bsz, 1).round()
    b_idx, n_idx = valid.nonzero(as_tuple=True)  # row-major: (sample, row) ascending = LEAD's loop order
    r = rows[b_idx, n_idx]
    cx, cy, ix, iy = cx[b_idx, n_idx], cy[b_idx, n_idx], ix[b_idx, n_idx].long(), iy[b_idx, n_idx].long()
    return _KeptRows(b_idx, r, cx, cy, ix, iy, cls[b_idx, n_idx].long())


def _draw_heatmap(
    centre: Tensor, ex: Tensor, ey: Tensor, shape: tuple[int, int, int, int], min_overlap: float, min_radius: int,
    dev: torch.device,
) -> tuple[Tensor, int | None]:  # fmt: skip
    """The (B, C, gh, gw) heatmap of LEAD's Gaussians at ``centre`` (flat cells), and the largest radius drawn."""
    bsz, num_classes, gh, gw = shape
    heatmap = torch.zeros(bsz * num_classes * gh * gw, device=dev)
    if not len(centre):
        return heatmap.view(bsz, num_classes, gh, gw), None
    radius = _gaussian_radius(ey, ex, min_overlap).trunc().clamp(min=min_radius).long()  # int(), max(2, .)
    rmax = int(radius.max())  # the host sync
    # Rows with the same centre cell and radius draw the same kernel there, and a max-merge is idempotent:
    # draw each once (LEAD's zero padding is 90 - n identical rows per sample).
    drawn = torch.unique(centre * (rmax + 1) + radius)
    d_centre, d_radius = drawn // (rmax + 1), drawn % (rmax + 1)
    d_iy, d_ix = (d_centre % (gh * gw)) // gw, d_centre % gw
    table = _kernel_table(rmax, dev)[d_radius]  # (D, K, K)
    off = torch.arange(-rmax, rmax + 1, device=dev)
    ys, xs = d_iy[:, None] + off[None], d_ix[:, None] + off[None]  # (D, K)
    inside = ((ys >= 0) & (ys < gh))[:, :, None] & ((xs >= 0) & (xs < gw))[:, None, :]
    index = (d_centre - d_iy * gw - d_ix)[:, None, None] + ys.clamp(0, gh - 1)[:, :, None] * gw
    index = index + xs.clamp(0, gw - 1)[:, None, :]
    heatmap.scatter_reduce_(0, index.reshape(-1), torch.where(inside, table, 0.0).reshape(-1), "amax")
    return heatmap.view(bsz, num_classes, gh, gw), rmax


def _avg_factor(heatmap: Tensor, centre: Tensor, rmax: int | None) -> Tensor:
    """(B,) int64 max(1, heatmap cells == 1), counted from the distinct centres when only they can be 1."""
    bsz, num_classes, gh, gw = heatmap.shape
    if rmax is not None and _ones_only_at_centres(rmax):  # the cells == 1 are the distinct centres: no map pass
        ones = torch.unique(centre) // (num_classes * gh * gw)
        return torch.bincount(ones, minlength=bsz).clamp(min=1)
    return heatmap.eq(1).flatten(1).sum(1).clamp(min=1)


def _cell_targets(
    kept: _KeptRows, ex: Tensor, ey: Tensor, num_yaw_bins: int, shape: tuple[int, int, int], dev: torch.device,
) -> dict[str, Tensor]:  # fmt: skip
    """The per-cell targets (wh, offset, yaw, velocity, brake, pixel weight): the last row at a cell wins."""
    bsz, gh, gw = shape
    cell = kept.b * (gh * gw) + kept.iy * gw + kept.ix
    win = _last_row_at_cell(cell, bsz * gh * gw, dev)
    yaw_class, yaw_res = _yaw_targets(kept.rows[:, _YAW], num_yaw_bins)
    at = (kept.b[win], kept.iy[win], kept.ix[win])

    def plane(values: Tensor, dtype: torch.dtype) -> Tensor:  # (B, C, gh, gw), (M, C) values at the winners
        out = torch.zeros(bsz, values.shape[1], gh, gw, dtype=dtype, device=dev)
        out[at[0], :, at[1], at[2]] = values[win].to(dtype)
        return out

    f32, r = torch.float32, kept.rows
    return {
        "wh": plane(torch.stack([ex, ey], 1), f32),
        "offset": plane(torch.stack([kept.cx - kept.ix, kept.cy - kept.iy], 1), f32),
        "yaw_class": plane(yaw_class[:, None], torch.int32)[:, 0],
        "yaw_res": plane(yaw_res[:, None], f32),
        "velocity": plane(r[:, _SPEED, None], f32),
        "brake": plane(torch.round(r[:, _BRAKE])[:, None], torch.int32)[:, 0],
        "pixel_weight": plane(torch.ones(len(kept.cx), 2, device=dev), f32),
    }


def _last_row_at_cell(cell: Tensor, num_cells: int, dev: torch.device) -> Tensor:
    """(M,) bool: whether each row is the last one written to its cell (``cell``: flat (B, gh, gw) index)."""
    order = torch.arange(cell.numel(), device=dev)
    last = torch.full((num_cells,), -1, dtype=torch.long, device=dev).scatter_reduce(0, cell, order, "amax")
    return last[cell] == order


def _yaw_targets(yaw: Tensor, num_yaw_bins: int) -> tuple[Tensor, Tensor]:
    """LEAD's ``angle2class`` in float64: (yaw bin as float, residual from the bin centre in rad)."""
    bin_width = 2 * math.pi / float(num_yaw_bins)
    angle = _np_mod(yaw.double(), 2 * math.pi)  # reference: angle2class in float64
    shifted = _np_mod(angle + bin_width / 2, 2 * math.pi)
    yaw_class = _np_floordiv(shifted, bin_width)
    return yaw_class, shifted - (yaw_class * bin_width + bin_width / 2)


@lru_cache(maxsize=8)
def _ones_only_at_centres(rmax: int) -> bool:
    """Whether each kernel of radius <= rmax is 1 at its centre only (float32 exp(-d²/2σ²) rounds to 1 off the
    centre only for σ in the thousands of cells)."""
    return int((_kernel_table_host(rmax) == 1).sum()) == rmax + 1


def radar_detections(boxes: Tensor, num_queries: int = NUM_RADAR_QUERIES) -> Tensor:
    """LEAD's ``parse_radar_detection_labels``: (B, num_queries, 4) float32 [x, y, v, valid] in metres.

    Box rows go back to the ego frame (x = x_px/4 − 32, y = y_px/4 − 40); rows at exactly (0, 0) there
    (reference: LEAD's padding test) or without radar points are dropped; the rest are ordered by speed
    (descending), class priority (special, vehicle, walker, obstacle, parking, others), radar points
    (descending), then row order, and the first ``num_queries`` fill the output.
    """
    rows = boxes.float()
    xy = (rows[..., :2] / _PPM).double() + rows.new_tensor([_MIN_X, _MIN_Y], dtype=torch.float64)
    xy = xy.float()  # LEAD writes the float64 sum back into its float32 array
    prio = rows.new_tensor(_RADAR_PRIORITY)[rows[..., _CLASS].long().clamp(0, len(_RADAR_PRIORITY) - 1)]
    cls_ok = (rows[..., _CLASS] >= 0) & (rows[..., _CLASS] < len(_RADAR_PRIORITY))
    prio = torch.where(cls_ok, prio, float(max(_RADAR_PRIORITY)))
    keep = ((xy[..., 0] != 0) | (xy[..., 1] != 0)) & (rows[..., _RADAR] > 0)
    order = torch.arange(rows.shape[1], device=rows.device).expand(rows.shape[:2])
    for key in (-rows[..., _RADAR], prio, -rows[..., _SPEED], (~keep).float()):  # least significant first
        idx = torch.sort(torch.gather(key, 1, order), dim=1, stable=True).indices
        order = torch.gather(order, 1, idx)
    order = order[:, :num_queries]
    picked = torch.gather(keep, 1, order)
    out = torch.stack([torch.gather(xy[..., 0], 1, order), torch.gather(xy[..., 1], 1, order),
                       torch.gather(rows[..., _SPEED], 1, order), torch.ones_like(order, dtype=torch.float32)], -1)
    out = torch.where(picked[..., None], out, 0.0)
    if out.shape[1] < num_queries:
        out = F.pad(out, (0, 0, 0, num_queries - out.shape[1]))
    return out
