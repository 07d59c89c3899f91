"""Decode backends: stored member bytes -> batch tensors, behind the name -> class table `BACKENDS`.

Each backend class has ``available() -> (ok, why)``, is built with ``(batch_size, device, num_threads)``,
says which members it decodes into the host ring (``host_members``), and has one entry point, ``decode(raw,
members, arrays, tensors, failures)``, which decodes a read batch into a ring slot and returns the buffers it
put elsewhere (nvJPEG's images on the GPU). ``cpu`` (`leadio.decode.cpu`: simplejpeg, lz4) runs anywhere;
``dali`` (`leadio.decode.dali`) decodes the JPEGs with DALI, on the GPU with ``device="cuda"``. Every backend
yields the same tensors for the same sample (JPEG within the decoders' +-1 rounding, tested). A new backend is
one module and one row here.
"""

from __future__ import annotations

from leadio.decode.cpu import CpuBackend
from leadio.decode.dali import DaliBackend, gpu_available

__all__ = ["BACKENDS", "choose_backend"]

#: name -> backend class, in the order ``"auto"`` prefers them on a machine with a GPU.
BACKENDS = {"dali": DaliBackend, "cpu": CpuBackend}


def choose_backend(name: str) -> str:
    """The backend a loader runs: ``"auto"`` is ``dali`` where a GPU and DALI are there, else ``cpu``.

    Raises:
        ValueError: an unknown name.
        RuntimeError: a forced backend that cannot run here (why, and the alternative), never a silent switch.
    """
    if name == "auto":
        if gpu_available() and BACKENDS["dali"].available()[0]:
            return "dali"
        return "cpu"
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    ok, why = BACKENDS[name].available()
    if not ok:
        raise RuntimeError(f"backend {name!r} was requested but cannot run: {why}; use backend='cpu'")
    return name
