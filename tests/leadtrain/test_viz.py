"""leadtrain.viz: the training image's size and panels for both models' predictions (through each model's
``SPEC.viz`` hook; random weights, CPU, small camera), and boxes drawn where a hand-made CenterNet output peaks
(asserted on pixels)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from leadtrain_batches import SMALL, leadio_batch

from leadio.lead import to_lead_batch
from leadtrain.models import MODELS
from leadtrain.models.compact import CompactConfig, CompactModel
from leadtrain.models.tfv6 import TFv6
from leadtrain.viz import COLOURS, IMAGE_SIZE, PANELS, predicted_boxes, render_sample, save_png

CAMERA = (64, 192)
LOSSES = {"loss_semantic": 2.3, "loss_depth": 11.0, "total": 1.234}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


def _panel(image: np.ndarray, name: str) -> np.ndarray:
    x0, y0, x1, y1 = PANELS[name]
    return image[y0:y1, x0:x1]


def _colours(a: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, a.reshape(-1, 3).tolist()))


def _mask(panel: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return (panel == np.array(colour, np.uint8)).all(-1)


def _compact_outputs(b: dict) -> dict:
    torch.manual_seed(0)
    model = CompactModel(CompactConfig.preset("tiny", use_planner=True)).eval()
    with torch.no_grad():
        return model(b, planning=True)


def _tfv6_outputs(b: dict) -> dict:
    torch.manual_seed(0)
    model = TFv6(SMALL, planning=True, encoder_backend="auto").eval()
    with torch.no_grad():
        model.depth_decoder.deconv3[-1].bias.fill_(20.0)  # random depths around 20 m, inside the 0..50 m scale
        return model(to_lead_batch(b, planning=True))


def _expected_near(classes: np.ndarray, r: int, c: int, panel_hw: tuple[int, int], rot: bool) -> set:
    """Class ids of the source pixels within 1 px of what panel pixel (r, c) shows (nearest resize, BEV: rot90)."""
    if rot:  # panel (r, c) shows raster (row = c, col = W - 1 - r) at the panel's scale
        rows, cols = classes.shape
        sr, sc = c * rows / panel_hw[1], (panel_hw[0] - 1 - r) * cols / panel_hw[0]
    else:
        sr, sc = r * classes.shape[0] / panel_hw[0], c * classes.shape[1] / panel_hw[1]
    sr, sc = int(sr), int(sc)
    return set(classes[max(sr - 1, 0) : sr + 2, max(sc - 1, 0) : sc + 2].ravel().tolist())


@pytest.mark.parametrize("which", ["compact", "tfv6"])
def test_image_size_every_panel_drawn_and_predictions_shown(which, tmp_path):
    from leadio.inspect.render import BEV_CLASSES, CAMERA_CLASSES

    b = leadio_batch(2, CAMERA)
    pred = _compact_outputs(b) if which == "compact" else _tfv6_outputs(b)
    image = render_sample(b, MODELS[which].viz(pred), 1, epoch=3, step=1234, losses=LOSSES, phase="posttrain")
    assert image.shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3) and image.dtype == np.uint8

    save_png(image, tmp_path / "viz.png")
    back = cv2.imread(str(tmp_path / "viz.png"))
    assert back.shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3)
    assert np.array_equal(back[..., ::-1], image)

    background, placeholder = (30, 30, 30), (70, 70, 70)
    for name in PANELS:
        content = _panel(image, name)[0 if name == "header" else 20 :]  # below the title bar
        empty = _mask(content, background) | _mask(content, placeholder)
        assert empty.mean() < (0.97 if name in ("header", "info", "legend") else 0.05), f"panel {name} is blank"
        if not name.endswith("_pred"):  # random weights may predict one class / depth: checked pixel-wise below
            assert len(_colours(content)) >= 5, f"panel {name} is blank"

    # the header changes with epoch / step / loss
    other = render_sample(b, MODELS[which].viz(pred), 1, epoch=4, step=1234, losses=LOSSES, phase="posttrain")
    assert not np.array_equal(_panel(other, "header"), _panel(image, "header"))
    assert np.array_equal(other[PANELS["camera"][1]:], image[PANELS["camera"][1]:])

    # predictions are drawn beside their targets, with the palettes of leadio.inspect
    sem = (pred["semantic"] if which == "compact" else pred["pred_semantic"])[1].argmax(0).numpy()
    bev = (pred["bev_semantic"] if which == "compact" else pred["pred_bev_semantic"])[1].argmax(0).numpy()
    camera_palette = {c: k for k, (_, c) in enumerate(CAMERA_CLASSES)}
    bev_palette = {c: k for k, (_, c) in enumerate(BEV_CLASSES)}
    for name, classes, palette, rot in (("semantic_pred", sem, camera_palette, False),
                                        ("semantic_target", b["semantic"][1].numpy(), camera_palette, False),
                                        ("bev_pred", bev, bev_palette, True),
                                        ("bev_target", b["bev_semantic"][1].numpy(), bev_palette, True)):
        panel = _panel(image, name)
        for r, c in ((100, 150), (150, 300), (200, 40)):
            shown = palette[tuple(panel[r, c].tolist())]
            assert shown in _expected_near(classes, r, c, panel.shape[:2], rot), (name, r, c)
    depth = (pred["depth"] if which == "compact" else pred["pred_depth"])[1].numpy()
    assert 1 < depth.min() and depth.max() < 49  # inside the colour scale: a wrong scale shows as a wrong colour
    mapped = cv2.applyColorMap((depth / 50 * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)[..., ::-1].astype(int)
    panel = _panel(image, "depth_pred")
    for r, c in ((100, 150), (150, 300), (200, 40)):  # bilinear resize: within the neighbours' colours
        sr, sc = int(r * depth.shape[0] / panel.shape[0]), int(c * depth.shape[1] / panel.shape[1])
        near = mapped[max(sr - 1, 0) : sr + 2, max(sc - 1, 0) : sc + 2].reshape(-1, 3)
        assert (near.min(0) - 2 <= panel[r, c]).all() and (panel[r, c] <= near.max(0) + 2).all(), (r, c)


def _centernet(cell: tuple[int, int], cls: int, wh: tuple[float, float], offset: tuple[float, float],
               yaw_bin: int, yaw_res: float, grid=(80, 96), bins: int = 12) -> dict[str, torch.Tensor]:
    """One peak (logit 8, elsewhere -8) at ``cell`` (row, col) with the given regressions (TFv6 names)."""
    logits = torch.full((1, 8, *grid), -8.0)
    logits[0, cls, cell[0], cell[1]] = 8.0
    wh_map, off_map = torch.zeros(1, 2, *grid), torch.zeros(1, 2, *grid)
    wh_map[0, :, cell[0], cell[1]] = torch.tensor(wh)
    off_map[0, :, cell[0], cell[1]] = torch.tensor(offset)
    yaw_class = torch.zeros(1, bins, *grid)
    yaw_class[0, yaw_bin, cell[0], cell[1]] = 5.0
    res = torch.zeros(1, 1, *grid)
    res[0, 0, cell[0], cell[1]] = yaw_res
    return {"center_heatmap_logit_pred": logits, "center_heatmap_pred": logits.sigmoid(), "wh_pred": wh_map,
            "offset_pred": off_map, "yaw_class_pred": yaw_class, "yaw_res_pred": res,
            "velocity_pred": torch.zeros(1, 1, *grid)}


@pytest.mark.parametrize("which", ["compact", "tfv6"])
def test_predicted_box_is_drawn_where_the_centernet_output_peaks(which):
    # a 4 m x 2 m box (half-extents 2 m, 1 m) heading straight ahead, centred in cell (row 30, col 60) + (0.5, 0.5):
    # x = 60.5 m - 32 = 28.5 m ahead, y = 30.5 m - 40 = -9.5 m (left); BEV raster px (242, 122)
    maps = _centernet((30, 60), cls=0, wh=(2.0, 1.0), offset=(0.5, 0.5), yaw_bin=0, yaw_res=0.0)
    rows = predicted_boxes(maps)
    assert rows.shape == (1, 9)
    np.testing.assert_allclose(rows[0, :5], [242.0, 122.0, 8.0, 4.0, 0.0], atol=1e-4)
    if which == "compact":
        pred = {"center_heatmap": maps["center_heatmap_logit_pred"], "center_wh": maps["wh_pred"],
                "center_offset": maps["offset_pred"], "center_yaw_class": maps["yaw_class_pred"],
                "center_yaw_res": maps["yaw_res_pred"], "center_velocity": maps["velocity_pred"]}
    else:
        pred = {"pred_bounding_box": maps}
    b = {k: v[:1] for k, v in leadio_batch(1, CAMERA).items()}
    b["boxes"] = torch.zeros(1, 90, 9)
    b["boxes"][0, 0] = torch.tensor([200.0, 240.0, 12.0, 6.0, math.pi / 2, 0.0, 0.0, 0.0, 1.0])  # a target box
    b["num_boxes"] = torch.tensor([1.0])
    image = render_sample(b, MODELS[which].viz(pred))
    panel = _panel(image, "bev_lidar")

    # forward up: panel column = y_px, panel row = 384 - x_px (1 px per raster px)
    ys, xs = np.nonzero(_mask(panel, COLOURS["predicted box"]))
    assert len(ys) > 30
    assert abs(xs.min() - (122 - 4)) <= 1 and abs(xs.max() - (122 + 4)) <= 1  # width: 2 * ey = 8 px
    assert abs(ys.min() - (142 - 10.4)) <= 1 and abs(ys.max() - (142 + 8)) <= 1  # length 16 px + heading tick ahead
    # the target box: centre (x 200, y 240) px, heading +y (to the right on screen), half-extents 12 x 6 px
    ys, xs = np.nonzero(_mask(panel, COLOURS["target box"]))
    assert abs(xs.min() - (240 - 12)) <= 1 and abs(xs.max() - (240 + 15.6)) <= 1
    assert abs(ys.min() - (184 - 6)) <= 1 and abs(ys.max() - (184 + 6)) <= 1

    # below the confidence threshold nothing is drawn
    maps["center_heatmap_pred"] = maps["center_heatmap_pred"] * 0.25
    quiet = MODELS["tfv6"].viz({"pred_bounding_box": maps})
    assert not _mask(_panel(render_sample(b, quiet), "bev_lidar"), COLOURS["predicted box"]).any()
