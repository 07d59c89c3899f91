"""``python -m leadio.shard verify <set> [--deep]``: check every shard against the manifest and catalog.

Per shard: present, size and xxh3-128 as recorded, the DALI index consistent with the catalog's member
offsets, every sample's bytes matching its recorded hash (which names the damaged sample), and the tar
readable by ``tarfile`` with exactly the expected members. ``--deep`` also decodes every member of every
sample. Every problem is reported with shard and sample key; the exit code is non-zero when any is found.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field

import numpy as np
import xxhash
from tqdm import tqdm

from leadio.decode.cpu import decode_member
from leadio.files import file_xxh3
from leadio.shard.shardset import ShardSet
from leadio.shard.tarwriter import parse_dali_index

__all__ = ["VerifyReport", "verify_shard_set"]


@dataclass
class VerifyReport:
    shards_checked: int = 0
    samples_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"verified {self.shards_checked} shards, {self.samples_checked} samples: "
                + ("OK" if self.ok else f"{len(self.problems)} problem(s)"))
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


def _check_shard(ss: ShardSet, shard: int, rows: np.ndarray, deep: bool) -> list[str]:
    entry = ss.manifest["shards"][shard]
    path = ss.path / entry["path"]
    if not path.exists():
        return [f"shard {entry['path']}: missing (expected {entry['samples']} samples)"]
    problems = []
    size = path.stat().st_size
    if size != entry["bytes"]:
        problems.append(f"shard {entry['path']}: {size} bytes, manifest says {entry['bytes']}"
                        + (" (truncated)" if size < entry["bytes"] else ""))
    elif file_xxh3(path) != entry["xxh3_128"]:
        problems.append(f"shard {entry['path']}: checksum mismatch (xxh3-128)")
    if len(rows) != entry["samples"]:
        problems.append(f"shard {entry['path']}: catalog has {len(rows)} samples, manifest says {entry['samples']}")
    offsets, sizes = ss.catalog["member_offset"], ss.catalog["member_size"]
    try:
        index = parse_dali_index((ss.path / entry["index"]).read_text())
    except (OSError, ValueError) as e:
        problems.append(f"shard {entry['path']}: DALI index {entry['index']} unreadable ({e})")
        index = None
    if index is not None and len(index) != len(rows):
        problems.append(f"shard {entry['path']}: DALI index lists {len(index)} samples, expected {len(rows)}")
        index = None
    members = ss.members
    layout = {f"{m.name}_{v}.{m.ext}": m for m in ss.layout.values() for v in ("n", "p")}
    with open(path, "rb") as f:
        for i, row in enumerate(rows):
            key = ss.catalog["sample_key"][row]
            if index is not None and [(e, o, s) for e, o, s, _ in index[i]] != list(
                    zip(members, offsets[row].tolist(), sizes[row].tolist(), strict=True)):
                problems.append(f"shard {entry['path']}, sample {key}: DALI index disagrees with the catalog offsets")
            h = xxhash.xxh3_64()
            blobs = {}
            for m, off, n in zip(members, offsets[row], sizes[row], strict=True):
                f.seek(int(off))
                blobs[m] = f.read(int(n))
                h.update(blobs[m])
            if any(len(blobs[m]) != n for m, n in zip(members, sizes[row], strict=True)):
                problems.append(f"shard {entry['path']}, sample {key}: data missing past the end of the file")
                continue
            if h.hexdigest() != ss.catalog["sample_xxh3_64"][row]:
                bad = [m for c, m in enumerate(members) if "member_xxh3_64" in ss.catalog.columns and
                       xxhash.xxh3_64_intdigest(blobs[m]) != int(ss.catalog["member_xxh3_64"][row, c])]
                problems.append(f"shard {entry['path']}, sample {key}: content differs from its recorded hash"
                                + (f" (member {', '.join(bad)})" if bad else ""))
                continue
            if deep:
                for m, data in blobs.items():
                    if m in layout:
                        try:
                            decode_member(layout[m], data)
                        except Exception as e:
                            problems.append(f"shard {entry['path']}, sample {key}: member {m} does not decode "
                                            f"({type(e).__name__}: {e})")
    if not any("truncated" in p for p in problems):
        try:
            with tarfile.open(path) as tar:
                names = tar.getnames()
            expected = [f"{ss.catalog['sample_key'][r]}.{m}" for r in rows for m in members]
            if names != expected:
                problems.append(f"shard {entry['path']}: tar members differ from the catalog "
                                f"({len(names)} members, expected {len(expected)})")
        except (tarfile.TarError, OSError) as e:
            problems.append(f"shard {entry['path']}: not a readable tar ({e})")
    return problems


def verify_shard_set(ss: ShardSet, deep: bool = False, progress: bool = True) -> VerifyReport:
    """Check every shard of ``ss``; see the module docstring."""
    report = VerifyReport()
    shard_col = ss.catalog["shard"]
    for shard in tqdm(range(len(ss.manifest["shards"])), desc="verify", unit="shard", disable=not progress):
        rows = np.flatnonzero(shard_col == shard)
        report.problems += _check_shard(ss, shard, rows, deep)
        report.shards_checked += 1
        report.samples_checked += len(rows)
    unlisted = len(ss.catalog) - report.samples_checked
    if unlisted or ss.manifest.get("num_samples", len(ss.catalog)) != len(ss.catalog):
        report.problems.append(f"manifest lists {len(ss.manifest['shards'])} shards holding {report.samples_checked}"
                               f" of the catalog's {len(ss.catalog)} samples (manifest num_samples "
                               f"{ss.manifest.get('num_samples')}): the manifest is damaged; rerun "
                               f"`python -m leadio.shard` for this collection (it rewrites the manifest)")
    return report
