"""Disk size of leadio's core install and of each extra, measured in the current environment.

    python scripts/extra_sizes.py

For each extra: the installed distributions its requirements pull in (transitively) that the core install does
not, and the bytes of their files (as recorded by pip). Run it in a venv that has every extra installed.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.markers import default_environment
from packaging.requirements import Requirement


def _closure(requirements: list[str], extras_env: set[str] = frozenset()) -> set[str]:
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            continue
        seen.add(name)
        for text in dist.requires or []:
            sub = Requirement(text)
            env = default_environment()
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in (req.extras or {""})):
                todo.append(sub)
    return seen


def _bytes(names: set[str]) -> int:
    total = 0
    for name in names:
        dist = distribution(name)
        for f in dist.files or []:
            path = dist.locate_file(f)
            if path.is_file():
                total += path.stat().st_size
    return total


def main() -> int:
    leadio = distribution("leadio")
    reqs = leadio.requires or []
    core = _closure([r for r in reqs if "extra ==" not in r])
    print(f"core: {len(core)} distributions, {_bytes(core) / 1e6:.0f} MB")
    extras = sorted({m for r in reqs for m in re.findall(r'extra == "([^"]+)"', r)})
    for extra in extras:
        mine = [r.split(";")[0] for r in reqs if f'extra == "{extra}"' in r]
        extra_only = _closure(mine) - core
        print(f"[{extra}]: +{len(extra_only)} distributions, +{_bytes(extra_only) / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
