"""DALI decoding: the reader's JPEG bytes go through ``fn.decoders.image`` (nvJPEG with ``device="mixed"``).

One pipeline per loader, fed through ``fn.external_source`` with a batch's JPEG bytes by the loader's decode
threads (`leadio.engine`), never by the training loop: while one thread runs the pipeline (DALI's own
``num_threads`` decode the batch, the GIL released), the others read and inflate the next batches, so DALI is
fed ahead of the consumer. Without a GPU the pipeline's CPU decoder is the limit, not the feeding: on the same
images, to the same pixels, it decodes at about 0.7x simplejpeg's rate (``python -m benchmarks.jpeg_decoders``),
and one single-threaded pipeline per decode thread, without the lock, measured the same as this design (818-845
against 789-885 samples/s, 3 alternating rounds on 2 cores).

It outputs (B, H, W, 3) uint8, copied on CPU into the batch buffer, of which the batch's ``rgb`` is the CHW
view, as with the CPU backend. Without a GPU the same pipeline runs with ``device_id=None`` and CPU operators
(how CI tests it). LZ4 members are inflated by the decode threads on the CPU (DALI 2.4's inflate operator is
GPU-only).
"""

from __future__ import annotations

import threading

import numpy as np

from leadio.decode.cpu import RawBatch, decode_into
from leadio.schema import Member

__all__ = ["DaliBackend", "DaliDecoder", "dali_available", "gpu_available"]


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
        self._lock = threading.Lock()  # one pipeline, fed by several decode threads in turn

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                      prefetch_queue_depth=1, exec_dynamic=True)
        def pipe():
            jpegs = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1, no_copy=False)
            # fancy upsampling = libjpeg-turbo's default chroma upsampling, so mixed (nvJPEG) matches the cpu path
            return fn.decoders.image(jpegs, device=self.device, output_type=types.RGB, jpeg_fancy_upsampling=True)

        p = pipe()
        p.build()
        return p

    def decode_jpegs(self, blobs: list[bytes], out=None):
        """List of JPEG bytes -> uint8 (B, H, W, 3): on CPU written into ``out`` (a contiguous torch tensor of
        that shape) or a new numpy array; with mixed, a new torch CUDA tensor."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        with self._lock:
            if self._pipe is None:
                self._pipe = self._build()
            self._pipe.feed_input("jpeg", [np.frombuffer(b, np.uint8) for b in blobs])
            (images,) = self._pipe.run()
            if self.device == "cpu":
                return images.as_array() if out is None else feed_ndarray(images.as_tensor(), out)
            import torch

            t = torch.empty(images.as_tensor().shape(), dtype=torch.uint8, device=f"cuda:{self.device_id}")
            feed_ndarray(images.as_tensor(), t, cuda_stream=torch.cuda.current_stream(t.device))
            return t

    def __getstate__(self):  # the pipeline holds threads and device state: rebuilt lazily after pickling
        state = dict(self.__dict__)
        state["_pipe"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class DaliBackend:
    """The ``dali`` backend: the decode threads read and inflate, a `DaliDecoder` decodes the JPEGs (on the GPU
    with ``device="cuda"``, where the images stay; else with DALI's CPU operators, into the host ring)."""

    name = "dali"

    def __init__(self, batch_size: int, device: str, num_threads: int):
        self.jpegs = DaliDecoder(batch_size, device="mixed" if device.startswith("cuda") else "cpu",
                                 num_threads=max(1, num_threads))

    @staticmethod
    def available() -> tuple[bool, str]:
        return dali_available()

    def host_members(self, members: dict[str, Member]) -> dict[str, Member]:
        """The members decoded into the host ring buffers: all but the JPEGs when nvJPEG writes them on the GPU."""
        if self.jpegs.device == "mixed":
            return {k: m for k, m in members.items() if m.encoding != "jpeg"}
        return members

    def decode(self, raw: RawBatch, members: dict[str, Member], arrays: dict[str, np.ndarray],
               tensors: dict, failures: dict[int, str]) -> dict:
        """Inflate the non-JPEG members into ``arrays``, decode the JPEGs with DALI (a failed sample's slot gets
        the first good sample's image; the reader substitutes it anyway). Returns the GPU images, if any."""
        jpeg = [k for k, m in members.items() if m.encoding == "jpeg"]
        decode_into(raw, {k: m for k, m in members.items() if k not in jpeg}, arrays, failures)
        good = next((i for i in range(len(raw["row"])) if i not in failures), None)
        if not jpeg or good is None:
            return {}
        out = {}
        for name in jpeg:
            blobs = [raw[name][good if i in failures else i] for i in range(len(raw["row"]))]
            images = self.jpegs.decode_jpegs(blobs, out=tensors.get(name))
            if images.device.type != "cpu":
                out[name] = images
        return out
