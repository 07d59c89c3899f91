"""The reference training loop on leadio batches, in miniature: ``python examples/lead_reference_training.py``.

Builds a small synthetic root and its shard set, then runs the loop of kesai-labs/lead's ``train.py`` with the
changes of ``examples/lead_reference_training.md`` (``open_dataset(..., output="lead")``, ``set_epoch``, no
DistributedSampler) and a stand-in model that reads what the reference model and logger read, with the
reference's per-sample CenterNet normalisation. Pre-training, a mid-epoch resume, then post-training.
Under ``torchrun --nproc_per_node 2`` each rank gets its own half of every epoch.
"""

from __future__ import annotations

import sys
import tempfile
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F

import leadio
from leadio.shard import build_shard_set
from leadio.synth import generate_root


class StandIn(torch.nn.Module):
    """Reads the reference's inputs; predicts the CenterNet heatmap and waypoints from pooled features."""

    def __init__(self):
        super().__init__()
        self.lidar = torch.nn.Conv2d(1, 8, 4, stride=4)
        self.heat = torch.nn.Conv2d(8, 8, 1)
        self.plan = torch.nn.Linear(8 + 1 + 6 + 2, 16)

    def forward(self, data: dict) -> dict:
        feat = self.lidar(data["rasterized_lidar"].float())  # (B, 8, 80, 96): the CenterNet grid
        _ = data["rgb"].float().mean()  # the camera branch would read (B, 3, 384, 1152) here
        ctx = torch.cat([feat.mean((2, 3)), data["speed"].float()[:, None] / 25.0, data["command"].float(),
                         data["target_point"].float() / torch.tensor([200.0, 50.0])], 1)  # fmt: skip
        return {"heatmap": self.heat(feat), "waypoints": self.plan(ctx).view(-1, 8, 2)}

    def compute_loss(self, pred: dict, data: dict, planning: bool) -> dict:
        """The reference's normalisation: per-sample heatmap focal loss / center_net_avg_factor (B,)."""
        p = torch.sigmoid(pred["heatmap"]).clamp(1e-4, 1 - 1e-4)
        target = data["center_net_heatmap"].float()
        focal = (-(p.log()) * (1 - p) ** 2 * target.eq(1) - (1 - p).log() * p**2 * (1 - target) ** 4).sum((1, 2, 3))
        carla = (data["source_dataset"] == 1).float()
        losses = {"loss_center_net_heatmap": (focal / data["center_net_avg_factor"].float() * carla).sum()
                  / carla.sum().clamp(min=1)}  # fmt: skip
        if planning:
            losses["loss_spatio_temporal_waypoints"] = F.l1_loss(pred["waypoints"], data["future_waypoints"].float())
        return losses


def train(carla_root: Path, collection: str, epochs: int, *, stop_after: int | None = None, state=None):
    # the dataset root (the reference's config.carla_root): leadio opens its shard set that serves the collection
    loader = leadio.open_dataset(carla_root, collection=collection, output="lead", batch_size=4, backend="cpu",
                                 seed=0)  # rank and world size from torch.distributed / RANK, WORLD_SIZE
    if state is not None:
        loader.load_state_dict(state)
    torch.manual_seed(0)
    model = StandIn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, amsgrad=True)
    for epoch in range(loader.epoch, epochs):
        loader.set_epoch(epoch)  # replaces dataset.shuffle(epoch) + sampler.update_batch_sizes(epoch)
        steps = len(loader)
        for iteration, data in enumerate(islice(loader, steps)):
            data["iteration"] = iteration
            losses = model.compute_loss(model(data), data, loader.planning)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            print(f"{collection} epoch {epoch} step {iteration}: {loss.item():.4f} "
                  f"(avg load {float(data['loading_time'].mean()) * 1000:.1f} ms/sample)")
            if stop_after is not None and iteration + 1 == stop_after:
                return loader.state_dict()  # save this beside the checkpoint to resume mid-epoch
    return loader.state_dict()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="leadio-example-") as tmp:
        root = Path(tmp) / "data" / "carla_leaderboard2"
        generate_root(root, num_routes=2, frames_per_route=20, seed=0, workers=1, progress=False)
        build_shard_set(root, "full_pretrain", workers=1, progress=False)  # the reference's persistent_cache step
        state = train(root, "full_pretrain", epochs=2, stop_after=2)  # "crash" mid-epoch 0
        train(root, "full_pretrain", epochs=2, state=state)  # continue_failed_training
        train(root, "full_posttrain", epochs=1)  # post-training: planning keys present
    return 0


if __name__ == "__main__":
    sys.exit(main())
