"""CPU decoding of raw sample bytes into a batch: simplejpeg (libjpeg-turbo), lz4, zero-copy numpy.

Runs in the loader's decode threads (`leadio.engine`): every field is decoded straight into a batch buffer
whose shape comes from the member layout, so there is no concatenation, no transpose and no copy; the engine
passes buffers it reuses, `decode_batch` allocates fresh ones (random access, benchmarks).
"""

from __future__ import annotations

import ctypes
import math
import sys

import lz4.block
import numpy as np
import simplejpeg
import torch

from leadio.schema import FIELD_MEMBER, TARGET_FIELDS, Member

__all__ = ["INFLATES_IN_PLACE", "CpuBackend", "RawBatch", "batch_views", "decode_batch", "decode_into",
           "decode_member", "split_targets", "torch_dtype"]

#: member name -> list of per-sample bytes, plus "row" and "view" int arrays
RawBatch = dict
_TORCH_DTYPE = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32, "int64": torch.int64}


def _lz4_into():
    """``LZ4_decompress_safe(src, dst, src_size, dst_capacity)`` from python-lz4's own extension, called through
    ctypes, which releases the GIL: the block is inflated straight into the batch buffer. (``lz4.block``
    inflates into a temporary and copies it into a new bytes object while holding the GIL.) None when the
    symbol is not exported; `decode_member` is used then."""
    try:
        fn = ctypes.CDLL(lz4.block._block.__file__).LZ4_decompress_safe
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int), ctypes.c_int
    return fn


_LZ4_INTO = _lz4_into()
#: Whether lz4 blocks are inflated straight into the batch buffer (python-lz4 exports the symbol), else through
#: `decode_member`.
INFLATES_IN_PLACE = _LZ4_INTO is not None
_LITTLE = sys.byteorder == "little"  # stored members are little-endian: a byte copy is exact


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a member's numpy dtype name."""
    return _TORCH_DTYPE[np.dtype(dtype).name]


def decode_member(member: Member, data: bytes | memoryview, out: np.ndarray | None = None) -> np.ndarray:
    """One stored member -> an array of its declared dtype and shape: the reference decode of every encoding
    (JPEG through simplejpeg, its header checked before anything is allocated; lz4 inflated; raw viewed).

    Args:
        out: write into this array (the member's shape) instead of returning a new one / a view of ``data``.

    Raises:
        ValueError: the bytes do not decode to the declared size.
    """
    if member.encoding == "jpeg":
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)  # refuse a hostile size before allocating
        if (height, width) != member.shape[:2]:
            raise ValueError(f"{member.name}: JPEG header declares {width}x{height}, expected "
                             f"{member.shape[1]}x{member.shape[0]}")
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
        if arr.shape != member.shape:
            raise ValueError(f"{member.name}: JPEG decodes to {arr.shape}, expected {member.shape}")
        return arr
    if member.encoding == "lz4":
        data = lz4.block.decompress(data, uncompressed_size=member.nbytes)
    if len(data) != member.nbytes:
        raise ValueError(f"member {member.name}: {len(data)} bytes, expected {member.nbytes} for "
                         f"{member.dtype}{member.shape}")
    arr = np.frombuffer(data, dtype=np.dtype(member.dtype).newbyteorder("<")).reshape(member.shape)
    if out is not None:
        out[...] = arr
        return out
    return arr


def split_targets(records: np.ndarray) -> dict[str, np.ndarray]:
    """(B, T) float32 target records (numpy or torch) -> named arrays (B, *shape), views into ``records``."""
    out, col = {}, 0
    for name, shape in TARGET_FIELDS:
        n = math.prod(shape)
        out[name] = records[:, col:col + n].reshape((len(records), *shape))
        col += n
    return out


def decode_into(raw: RawBatch, members: dict[str, Member], buffers: dict[str, np.ndarray],
                failures: dict[int, str] | None = None, *, in_place: bool = True) -> dict[int, str]:
    """Decode a raw batch into caller-owned buffers: ``buffers[name]`` is (>= B, *member.shape) of its dtype.

    JPEGs are decoded by libjpeg-turbo straight into their (H, W, 3) slot, lz4 members inflated into theirs;
    every call into simplejpeg, lz4 and numpy's copy releases the GIL, so threads decode in parallel. Samples
    already in ``failures`` (e.g. unreadable) are skipped; the slots of every failed sample are zeroed.
    ``in_place=False`` takes the portable path (`decode_member`, then a copy), which the fast one must equal.
    Returns the failures (``failures`` updated): batch position -> reason.
    """
    failures = {} if failures is None else failures
    for name, member in members.items():
        view = buffers[name]
        nbytes = math.prod(member.shape) * view.itemsize  # not Member.nbytes: np.prod holds the GIL for ~µs
        native = in_place and _LZ4_INTO is not None and view.flags.c_contiguous and _LITTLE
        flat = view.reshape(len(view), -1).view(np.uint8) if native else None  # (B, nbytes) bytes of each slot
        address, stride = (flat.ctypes.data, flat.strides[0]) if native else (0, 0)
        for i, data in enumerate(raw[name]):
            if i in failures:
                continue
            try:
                if member.encoding == "jpeg":
                    image = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=view[i])
                    if image.shape != member.shape:
                        raise ValueError(f"JPEG decodes to {image.shape}, expected {member.shape}")
                elif not native:
                    decode_member(member, data, out=view[i])
                elif member.encoding == "lz4":  # straight into the slot, the GIL released, no temporary
                    src = np.frombuffer(data, np.uint8)  # bytes or a memoryview of the read: no copy
                    got = _LZ4_INTO(src.ctypes.data, address + i * stride, len(src), nbytes)
                    if got != nbytes:
                        raise ValueError(f"lz4 block inflates to {got if got >= 0 else 'an error'}, expected "
                                         f"{nbytes} bytes")
                elif len(data) != nbytes:
                    raise ValueError(f"member {member.name}: {len(data)} bytes, expected {nbytes}")
                else:
                    flat[i] = np.frombuffer(data, np.uint8)
            except (ValueError, RuntimeError, lz4.block.LZ4BlockError) as e:
                failures[i] = f"member {name} does not decode ({type(e).__name__}: {e})"
    for i in failures:
        for name in members:
            buffers[name][i] = 0
    return failures


def batch_views(buffers: dict[str, torch.Tensor], members: dict[str, Member], rows, views) -> dict[str, torch.Tensor]:
    """The user-facing batch (see `leadio.schema`) as views of per-member buffers (B, *member.shape)."""
    key_of = {m: k for k, m in FIELD_MEMBER.items()}
    out: dict[str, torch.Tensor] = {"row": torch.tensor(np.asarray(rows, np.int64)),
                                    "view": torch.tensor(np.asarray(views, np.uint8))}
    for name, member in members.items():
        buf = buffers[name]
        if name == "targets":
            out.update(split_targets(buf))
        elif member.encoding == "jpeg":
            out[key_of[name]] = buf.permute(0, 3, 1, 2)  # (B, 3, H, W) view of the (B, H, W, 3) buffer
        else:
            out[key_of[name]] = buf
    return out


def decode_batch(raw: RawBatch, members: dict[str, Member], *, tensors: bool = False, in_place: bool = True
                 ) -> tuple[dict, dict[int, str]]:
    """Decode a raw batch (member -> list of bytes) into fresh arrays, the layout of `leadio.schema`.

    One buffer per member, decoded in place by `decode_into`; JPEG fields are CHW views of (B, H, W, 3)
    buffers (no transpose copy; ``.contiguous()`` on the device is cheap). The loader's engine decodes into
    reused buffers instead (`leadio.engine`).

    Args:
        raw: member name -> list of bytes, plus ``row`` and ``view``.
        members: the members to decode.
        tensors: return torch tensors (else numpy arrays; both are views of the same buffers).
        in_place: as `decode_into`'s.

    Returns:
        (batch, failures): failures maps the batch position of each sample that did not decode to the reason;
        its slots are left zero for the caller to raise or substitute.
    """
    n = len(raw["row"])
    bufs = {name: torch.empty((n, *m.shape), dtype=_TORCH_DTYPE[np.dtype(m.dtype).name])
            for name, m in members.items()}
    failures = decode_into(raw, members, {name: b.numpy() for name, b in bufs.items()}, in_place=in_place)
    out = batch_views(bufs, members, raw["row"], raw["view"])
    if not tensors:
        out = {k: v.numpy() for k, v in out.items()}
    return out, failures


class CpuBackend:
    """The ``cpu`` backend: every member decoded in the loader's decode threads (`decode_into`)."""

    name = "cpu"

    def __init__(self, batch_size: int, device: str, num_threads: int):
        del batch_size, device, num_threads  # nothing to set up: the decode threads are the engine's

    @staticmethod
    def available() -> tuple[bool, str]:
        return True, ""

    def host_members(self, members: dict[str, Member]) -> dict[str, Member]:
        """The members decoded into the host ring buffers: all of them."""
        return members

    def decode(self, raw: RawBatch, members: dict[str, Member], arrays: dict[str, np.ndarray],
               tensors: dict[str, torch.Tensor], failures: dict[int, str]) -> dict[str, torch.Tensor]:
        """Decode ``raw`` into the slot's ``arrays``; returns the buffers that live elsewhere (none here)."""
        decode_into(raw, members, arrays, failures)
        return {}
