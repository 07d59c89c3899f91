"""Names the shard format has to hold (issue 22, item 8): any legal route or scenario folder name builds a set
that verifies and reads, and names that worked before keep their bytes (no format change).

DALI's index separates its fields by whitespace, so a member name with a space is percent-encoded there (and
decoded back); a name ustar cannot hold gets a pax header for its members only; two routes whose keys would
collide (a dot becomes an underscore in keys) are refused naming both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from faultlib import REPO, build

from leadio.format.routes import discover_routes
from leadio.shard.shardset import open_shard_set
from leadio.shard.tarwriter import dali_index_text, index_name, parse_dali_index


def _set_dir(root: Path) -> Path:
    return next((root / "shards").glob("*/manifest.json")).parent


def _rename_kept_route(root: Path, scenario: str, name: str) -> str:
    """Move the first route LEAD's filter keeps to ``data/<scenario>/<name>``; its new rel path."""
    src = root / next(r.rel_path for r in discover_routes(root) if r.trainable)
    dst = root / "data" / scenario / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)
    return dst.relative_to(root).as_posix()


def _headers(tar: Path) -> list[tuple[bytes, bytes]]:
    """(typeflag, magic) of every header block of a tar (walking the archive by its sizes)."""
    data, out, at = tar.read_bytes(), [], 0
    while at + 512 <= len(data) and data[at:at + 512].strip(b"\0"):
        block = data[at:at + 512]
        size = int(block[124:136].strip(b"\0 ") or b"0", 8)
        out.append((block[156:157], block[257:265]))
        at += 512 + -(-size // 512) * 512
    return out


def _check_set(root: Path, route: str) -> None:
    """The set verifies, its DALI indexes name the tar members, and every sample reads back."""
    set_dir = _set_dir(root)
    out = subprocess.run([sys.executable, "-m", "leadio.shard", "verify", str(set_dir)], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr
    ss = open_shard_set(set_dir, check_routes="full")
    assert route in {str(r) for r in ss.catalog["route"]}
    for entry in ss.manifest["shards"]:
        with tarfile.open(set_dir / entry["path"]) as tar:
            names = tar.getnames()
        index = parse_dali_index((set_dir / entry["index"]).read_text())
        assert [name for sample in index for _, _, _, name in sample] == names
    rows = [i for i, r in enumerate(ss.catalog["route"]) if r == route]
    assert rows and all(len(ss.read_member_bytes(i, "targets_p.f32")) > 0 for i in rows)
    from leadio.dataset import open_dataset

    loader = open_dataset(set_dir, batch_size=1, backend="cpu", keys=["targets"], num_workers=0)
    assert sum(len(b["row"]) for b in loader) == len(ss)


def test_spaces_in_scenario_and_route_names_build_a_set_that_verifies_and_reads(tiny_root):
    route = _rename_kept_route(tiny_root, "Signalized Junction", "Town03 Rep0 1 route with spaces")
    build(tiny_root)
    _check_set(tiny_root, route)
    set_dir = _set_dir(tiny_root)
    index = next(p for p in set_dir.rglob("*.idx") if "%20" in p.read_text())
    assert "Signalized%20Junction/Town03%20Rep0%201%20route%20with%20spaces/" in index.read_text()


def test_a_route_name_too_long_for_ustar_builds_with_pax_headers_for_its_members_only(tiny_root):
    name = "Town03_Rep0_1_0_route0_" + "x" * 227  # 250 bytes: legal (NAME_MAX 255), over ustar's 155 + 100
    route = _rename_kept_route(tiny_root, "noScenarios", name)
    report = build(tiny_root)
    assert report.shards_written == report.shards_total
    _check_set(tiny_root, route)
    ss = open_shard_set(_set_dir(tiny_root))
    pax, plain = set(), set()
    for shard, entry in enumerate(ss.manifest["shards"]):
        routes = {str(r) for r, s in zip(ss.catalog["route"], ss.catalog["shard"], strict=True) if s == shard}
        flags = {flag for flag, _ in _headers(_set_dir(tiny_root) / entry["path"])}
        (pax if route in routes else plain).update(flags)
        if route not in routes:  # a shard of ordinary names: plain ustar headers, the bytes it always had
            assert {magic for _, magic in _headers(_set_dir(tiny_root) / entry["path"])} == {b"ustar\x0000"}
    assert b"x" in pax and plain == {b"0"}
    stamps = list((tiny_root / ".leadio" / "stamps" / "data" / "noScenarios").glob("Town03_Rep0_1_0_route0_x*.json"))
    assert len(stamps) == 1 and len(stamps[0].name) < 200  # the route's stamp cache has a name the FS holds


def test_names_with_percent_signs_and_unicode_round_trip_through_the_index(tiny_root):
    route = _rename_kept_route(tiny_root, "noScenarios", "Town03_Rep0_%20_Ümlaut\u00a0nbsp_route")
    build(tiny_root)
    _check_set(tiny_root, route)


def test_routes_whose_sample_keys_collide_are_refused_naming_both(tiny_root):
    src = tiny_root / next(r.rel_path for r in discover_routes(tiny_root) if r.trainable)
    shutil.copytree(src, src.with_name("Town99_Rep0.5"))
    shutil.copytree(src, src.with_name("Town99_Rep0_5"))
    with pytest.raises(ValueError, match=r"routes data/\w+/Town99_Rep0\.5 and data/\w+/Town99_Rep0_5 give the same "
                                         r"sample keys .*rename one"):
        build(tiny_root)


@pytest.mark.parametrize("name", ["Accident/Town10HD_Rep0_6_0_route0_12_21_17_32_34/0020.rgb_n.jpg",
                                  "a/b-c=d+e/0001.json", "Ünïcödé/ルート/0001.json"])
def test_names_without_whitespace_or_percent_are_indexed_unchanged(name):
    assert index_name(name) == name  # so every index written before reads and compares the same


@pytest.mark.parametrize("name", ["Scen A/route\tB/0001.rgb_n.jpg", "x/100%/y\n/0001.json", "a\u00a0b/\u2003/0.json",
                                  "%41/%%/0001.json"])
def test_index_names_are_one_whitespace_free_field_and_decode_back(name):
    encoded = index_name(name)
    assert len(encoded.split()) == 1 and "%" in encoded
    text = dali_index_text([("k", [("json", 512, 3)], "")]).replace("k.json", encoded)
    assert parse_dali_index(text)[0][0][3] == name
