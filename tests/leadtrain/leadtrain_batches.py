"""Batches for leadtrain's tests, made in memory (no files): leadio's names, dtypes and shapes
(`leadio.schema`), seeded."""

from __future__ import annotations

import torch

from leadtrain.models.tfv6 import TFv6Config

#: a small camera (64 x 192, 2 x 6 anchors) for TFv6 training steps on CPU; the BEV stays LEAD's 320 x 384
SMALL = TFv6Config(final_image_height=64, final_image_width=192)


def fake_batch(batch_size: int, planning: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A leadio-shaped batch (dtypes and shapes of `leadio.decode.fields`) with a few valid boxes per sample.

    Contents are loosely realistic: sky/road camera semantics, depth growing towards the horizon, sparse LiDAR
    counts, a road band in the BEV with the boxes drawn in, straight-ish trajectories at 3-10 m/s.
    """
    g = torch.Generator().manual_seed(seed)
    b = batch_size
    semantic = torch.zeros(b, 384, 1152, dtype=torch.uint8)
    semantic[:, 192:] = 2  # road below the horizon
    noise = torch.rand(b, 384, 1152, generator=g) < 0.1
    semantic[noise] = torch.randint(0, 10, (int(noise.sum()),), generator=g, dtype=torch.uint8)
    depth = torch.linspace(255, 20, 96).to(torch.uint8)[None, :, None].expand(b, 96, 288).contiguous()
    lidar = torch.randint(1, 6, (b, 1, 320, 384), generator=g, dtype=torch.uint8)
    lidar *= (torch.rand(b, 1, 320, 384, generator=g) < 0.05).to(torch.uint8)
    bev = torch.zeros(b, 320, 384, dtype=torch.uint8)
    bev[:, 140:180] = 1  # road
    bev[:, 159:161] = 2  # lane marking

    boxes, num_boxes = torch.zeros(b, 90, 9), torch.zeros(b)
    for i in range(b):
        n = 2 + i % 3
        for k in range(n):
            x, y = 140.0 + 37.3 * k + 5.1 * i, 150.0 + (-1) ** k * 6.2 * (k + 1)
            boxes[i, k] = torch.tensor([x, y, 9.2, 4.0, 0.3 * k - 0.2 * i, 4.0 + k, float(k == 1), k % 8, -1.0])
            bev[i, int(y) - 4 : int(y) + 4, int(x) - 9 : int(x) + 9] = 4  # vehicle
        num_boxes[i] = n
    radar = torch.zeros(b, 300, 5)
    for s in range(4):
        radar[:, s * 75 : s * 75 + 20, :4] = torch.randn(b, 20, 4, generator=g) * torch.tensor([20.0, 20.0, 1.0, 5.0])
        radar[:, s * 75 : (s + 1) * 75, 4] = s
    batch = {
        "rgb": torch.randint(0, 256, (b, 3, 384, 1152), generator=g, dtype=torch.uint8),
        "semantic": semantic, "depth": depth, "lidar": lidar, "bev_semantic": bev, "radar": radar.half(),
        "boxes": boxes, "num_boxes": num_boxes,
        "row": torch.arange(b, dtype=torch.int64), "view": torch.zeros(b, dtype=torch.uint8),
    }  # fmt: skip
    if planning:
        speed = 3.0 + 7.0 * torch.rand(b, generator=g)
        curve = 0.02 * torch.randn(b, 1, generator=g)
        t = torch.arange(1, 9, dtype=torch.float32)[None] * 0.25 * speed[:, None]  # (B, 8) m along the path
        route_s = 2.5 + torch.arange(10, dtype=torch.float32)[None].expand(b, -1)
        batch.update({
            "waypoints": torch.stack([t, curve * t**2], -1), "waypoint_yaws": 2 * curve * t,
            "route": torch.stack([route_s, curve * route_s**2], -1),
            "previous_target_point": torch.zeros(b, 2),
            "target_point": torch.stack([torch.full_like(speed, 20.0), 400 * curve[:, 0]], 1),
            "next_target_point": torch.stack([torch.full_like(speed, 45.0), 2025 * curve[:, 0]], 1),
            "command": torch.eye(6)[[3] * b], "next_command": torch.eye(6)[[i % 6 for i in range(b)]],
            "target_speed": speed + 1, "target_speed_twohot": torch.eye(8)[[1 + i % 3 for i in range(b)]],
            "speed": speed, "brake": torch.zeros(b), "has_targets": torch.ones(b),
        })  # fmt: skip
    return batch


def leadio_batch(b: int, image: tuple[int, int] = (384, 1152), seed: int = 0) -> dict[str, torch.Tensor]:
    """A compact leadio batch (`leadio.decode.fields` names and dtypes) with boxes, radar and planning targets."""
    g = torch.Generator().manual_seed(seed)
    h, w = image
    boxes = torch.zeros(b, 90, 9)
    for i in range(b):
        for k in range(2 + i):
            boxes[i, k] = torch.tensor([150.0 + 40 * k, 160.0 - 20 * k + 7 * i, 9.0, 4.0, 0.4 * k, 3.0 + k, 0.0,
                                        k % 8, 2.0])
    radar = torch.zeros(b, 300, 5)
    for s in range(4):
        radar[:, s * 75 : s * 75 + 10, :4] = torch.randn(b, 10, 4, generator=g) * torch.tensor([15.0, 15.0, 1.0, 4.0])
        radar[:, s * 75 : (s + 1) * 75, 4] = s
    t = torch.arange(1, 9, dtype=torch.float32)[None, :, None]
    return {
        "row": torch.arange(b), "view": torch.zeros(b, dtype=torch.uint8),
        "rgb": torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8),
        "semantic": torch.randint(0, 10, (b, h, w), generator=g, dtype=torch.uint8),
        "depth": torch.randint(0, 256, (b, h // 4, w // 4), generator=g, dtype=torch.uint8),
        "lidar": (torch.rand(b, 1, 320, 384, generator=g) < 0.05).to(torch.uint8) * 3,
        "bev_semantic": torch.randint(0, 13, (b, 320, 384), generator=g, dtype=torch.uint8),
        "radar": radar.half(), "boxes": boxes, "num_boxes": torch.tensor([2.0 + i for i in range(b)]),
        "target_point": torch.tensor([[20.0, 1.0]]).repeat(b, 1),
        "next_target_point": torch.tensor([[60.0, 5.0]]).repeat(b, 1),
        "previous_target_point": torch.tensor([[-4.0, 0.0]]).repeat(b, 1),
        "command": torch.nn.functional.one_hot(torch.full((b,), 3), 6).float(),
        "next_command": torch.nn.functional.one_hot(torch.full((b,), 4), 6).float(),
        "speed": torch.linspace(3, 8, b), "target_speed": torch.linspace(4, 12, b), "brake": torch.zeros(b),
        "scenario_type_id": torch.zeros(b, dtype=torch.int64), "perturbation_translation": torch.zeros(b),
        "perturbation_rotation": torch.zeros(b), "has_targets": torch.ones(b),
        "waypoints": torch.cat([t * 1.5, t * 0.05], -1).expand(b, -1, -1).contiguous(),
        "waypoint_yaws": torch.zeros(b, 8),
        "route": torch.stack([2.5 + torch.arange(10.0), torch.zeros(10)], -1).expand(b, -1, -1).contiguous(),
    }
