"""Errors raised while reading raw LEAD routes: each names the route, frame and file, and what was expected."""

from __future__ import annotations

from pathlib import Path

__all__ = ["FrameReadError", "RouteError", "UnsafePickleError"]


class RouteError(ValueError):
    """A route folder is not a usable LEAD route (missing folder, mismatched frame sets, bad results.json)."""

    def __init__(self, route: str | Path, problem: str):
        self.route = str(route)
        self.problem = problem
        super().__init__(f"route {self.route}: {problem}")

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.route, self.problem))


class FrameReadError(ValueError):
    """One file of one frame could not be read or does not have the expected content."""

    def __init__(self, route: str | Path, frame: int, file: str | Path, problem: str):
        self.route = str(route)
        self.frame = int(frame)
        self.file = str(file)
        self.problem = problem
        super().__init__(f"route {self.route}, frame {self.frame:04d}, file {self.file}: {problem}")

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.route, self.frame, self.file, self.problem))


class UnsafePickleError(ValueError):
    """A pickle asked for a global that the restricted loader does not admit; nothing was executed."""
