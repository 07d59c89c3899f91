"""DALI decoding: the reader's JPEG bytes go through ``fn.decoders.image`` (nvJPEG with ``device="mixed"``).

One pipeline per loader, fed through ``fn.external_source`` with the batch's JPEG bytes; it outputs CHW
uint8 so the batch matches the CPU backend. Without a GPU the same pipeline runs with ``device_id=None`` and
CPU operators (how CI tests it). LZ4 members: DALI 2.4's inflate operator is GPU-only, so on CPU the reader
inflates them (in the DataLoader workers) and they pass through unchanged; on a GPU they are inflated by
``fn.experimental.inflate`` on the device.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DaliDecoder", "dali_available", "gpu_available"]


def dali_available() -> tuple[bool, str]:
    """(True, "") when nvidia.dali imports, else (False, why)."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA install raising OSError
        return False, f"nvidia.dali cannot be imported ({type(e).__name__}: {e}); install leadio[dali]"
    return True, ""


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


class DaliDecoder:
    """Decode the JPEG member of a batch with DALI.

    Args:
        batch_size: maximum samples per batch.
        device: ``"cpu"`` (``device_id=None``, CPU operators) or ``"mixed"`` (GPU decode on ``device_id``).
        device_id: CUDA device for ``"mixed"``.
        num_threads: DALI CPU threads.
    """

    def __init__(self, batch_size: int, device: str = "cpu", device_id: int | None = None, num_threads: int = 2):
        ok, why = dali_available()
        if not ok:
            raise RuntimeError(f"backend 'dali' cannot run: {why}")
        if device not in ("cpu", "mixed"):
            raise ValueError(f"DALI decode device must be 'cpu' or 'mixed', got {device!r}")
        if device == "mixed" and not gpu_available():
            raise RuntimeError("backend 'dali' with device 'mixed' needs a CUDA GPU; none is visible "
                               "(use device='cpu' or backend='cpu')")
        self.device = device
        self.batch_size = batch_size
        self.device_id = None if device == "cpu" else (device_id or 0)
        self.num_threads = num_threads
        self._pipe = None

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                      prefetch_queue_depth=1, exec_dynamic=True)
        def pipe():
            jpegs = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1, no_copy=False)
            # fancy upsampling = libjpeg-turbo's default chroma upsampling, so mixed (nvJPEG) matches the cpu path
            images = fn.decoders.image(jpegs, device=self.device, output_type=types.RGB, jpeg_fancy_upsampling=True)
            return fn.transpose(images, perm=[2, 0, 1])

        p = pipe()
        p.build()
        return p

    def decode_jpegs(self, blobs: list[bytes]):
        """List of JPEG bytes -> uint8 (B, 3, H, W): a numpy array on CPU, a torch CUDA tensor with mixed."""
        if self._pipe is None:
            self._pipe = self._build()
        self._pipe.feed_input("jpeg", [np.frombuffer(b, np.uint8) for b in blobs])
        (out,) = self._pipe.run()
        if self.device == "cpu":
            return out.as_array()
        import torch
        from nvidia.dali.plugin.pytorch import feed_ndarray

        t = torch.empty(out.as_tensor().shape(), dtype=torch.uint8, device=f"cuda:{self.device_id}")
        feed_ndarray(out.as_tensor(), t)
        return t

    def __getstate__(self):  # the pipeline holds threads and device state: rebuilt lazily after pickling
        state = dict(self.__dict__)
        state["_pipe"] = None
        return state
