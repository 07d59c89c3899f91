"""CPU decoding of raw sample bytes into a batch: simplejpeg (libjpeg-turbo), lz4, zero-copy numpy.

Runs inside DataLoader workers. Each field is decoded straight into a preallocated batch buffer (shapes come
from the member layout), so a batch costs one allocation per key, no concatenation, and in a worker no copy
on its way to the main process (the buffers are in shared memory).
"""

from __future__ import annotations

import lz4.block
import numpy as np
import simplejpeg
import torch

from leadio.decode.fields import FIELD_MEMBER, TARGET_FIELDS
from leadio.preprocess import Member

__all__ = ["RawBatch", "decode_batch", "inflate_member", "split_targets"]

#: member name -> list of per-sample bytes, plus "row" and "view" int arrays
RawBatch = dict
_TORCH_DTYPE = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32, "int64": torch.int64}


def inflate_member(member: Member, data: bytes | memoryview, out: np.ndarray | None = None) -> np.ndarray:
    """Non-JPEG member bytes -> array of the member's dtype/shape (lz4 inflated, raw viewed)."""
    if member.encoding == "lz4":
        data = lz4.block.decompress(data, uncompressed_size=member.nbytes)
    arr = np.frombuffer(data, dtype=np.dtype(member.dtype).newbyteorder("<"))
    if arr.size * arr.itemsize != member.nbytes:
        raise ValueError(f"member {member.name}: {len(data)} bytes, expected {member.nbytes}")
    arr = arr.reshape(member.shape)
    if out is not None:
        out[...] = arr
        return out
    return arr


def split_targets(records: np.ndarray) -> dict[str, np.ndarray]:
    """(B, T) float32 target records (numpy or torch) -> named arrays (B, *shape), views into ``records``."""
    out, col = {}, 0
    for name, shape in TARGET_FIELDS:
        n = int(np.prod(shape))
        out[name] = records[:, col:col + n].reshape((len(records), *shape))
        col += n
    return out


def decode_batch(raw: RawBatch, members: dict[str, Member], *, tensors: bool = False, shared: bool = False
                 ) -> tuple[dict, dict[int, str]]:
    """Decode a raw batch (member -> list of bytes) into arrays, the layout of `leadio.decode.fields`.

    Every field is decoded straight into one preallocated batch buffer: JPEGs by libjpeg-turbo into an
    (B, H, W, 3) buffer whose CHW view is returned (no transpose copy; ``.contiguous()`` on the device is
    cheap), lz4 members inflated into their slot. With ``shared=True`` the buffers live in shared memory, so
    a DataLoader worker hands the batch to the main process without copying it.

    Args:
        raw: member name -> list of bytes, plus ``row`` and ``view``.
        members: the members to decode.
        tensors: return torch tensors (else numpy arrays; both are views of the same buffers).
        shared: allocate the buffers in shared memory (for DataLoader workers).

    Returns:
        (batch, failures): failures maps the batch position of each sample that did not decode to the reason;
        its slots are left zero for the caller to raise or substitute.
    """
    n = len(raw["row"])

    def empty(shape: tuple, dtype: str) -> torch.Tensor:
        t = torch.empty(shape, dtype=_TORCH_DTYPE[np.dtype(dtype).name])  # every slot is written below
        return t.share_memory_() if shared else t

    out: dict[str, torch.Tensor] = {"row": torch.tensor(np.asarray(raw["row"], np.int64)),
                                    "view": torch.tensor(np.asarray(raw["view"], np.uint8))}
    failures: dict[int, str] = {}
    key_of = {m: k for k, m in FIELD_MEMBER.items()}
    for name, member in members.items():
        buf = empty((n, *member.shape), member.dtype)
        view = buf.numpy()
        for i, data in enumerate(raw[name]):
            if i in failures:
                continue
            try:
                if member.encoding == "jpeg":
                    image = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=view[i])
                    if image.shape != member.shape:
                        raise ValueError(f"JPEG decodes to {image.shape}, expected {member.shape}")
                else:
                    inflate_member(member, data, out=view[i])
            except (ValueError, RuntimeError, lz4.block.LZ4BlockError) as e:
                failures[i] = f"member {name} does not decode ({type(e).__name__}: {e})"
        for i in failures:
            view[i] = 0
        if name == "targets":
            out.update(split_targets(buf))
        elif member.encoding == "jpeg":
            out[key_of[name]] = buf.permute(0, 3, 1, 2)  # (B, 3, H, W) view of the (B, H, W, 3) buffer
        else:
            out[key_of[name]] = buf
    if not tensors:
        out = {k: v.numpy() for k, v in out.items()}
    return out, failures
