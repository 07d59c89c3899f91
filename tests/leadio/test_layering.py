"""The reading side never loads the building side: what `lint-imports` checks statically (pyproject.toml),
checked here at run time, in a fresh interpreter, through the public API a training script uses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BUILD_SIDE = ["cv2", "laspy", "lazrs", "leadio.preprocess", "leadio.catalog", "leadio.shard.build",
              "leadio.shard.jobs", "leadio.buckets.builders", "leadio.targets", "leadio.format.frame"]


def _modules_loaded(code: str) -> list[str]:
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps(sorted(m for m in {BUILD_SIDE!r} if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_loader_loads_nothing_of_the_building_side():
    assert _modules_loaded("import leadio.dataset, leadio.lead, leadio.decode") == []


def test_opening_and_reading_a_built_set_loads_nothing_of_the_building_side(tmp_path, make_built_root):
    root = tmp_path / "data" / "carla_leaderboard2"
    set_dir = make_built_root(root, 8)
    loaded = _modules_loaded(f"""
        import leadio
        loader = leadio.open_dataset({str(set_dir)!r}, batch_size=2, backend="cpu", num_workers=0)
        batch = next(iter(loader))
        assert batch["rgb"].shape[0] == 2
        loader.close()
    """)
    assert loaded == [], f"the reading side loaded {loaded}"
    # output="lead" upsamples depth with the reference's own cv2.resize: OpenCV, and nothing else of that side
    lead = _modules_loaded(f"""
        import leadio
        lead = leadio.open_dataset({str(root)!r}, collection="full_pretrain", batch_size=2, backend="cpu",
                                   num_workers=1, output="lead")
        assert "center_net_heatmap" in next(iter(lead))
    """)
    assert lead == ["cv2"]
    # the probe's names are real modules: the check can fail
    assert set(_modules_loaded("import leadio.shard.build")) >= {"leadio.shard.build", "leadio.preprocess", "cv2"}
