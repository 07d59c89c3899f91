"""CPU decoding of raw sample bytes into a batch: simplejpeg (libjpeg-turbo), lz4, zero-copy numpy.

Runs inside DataLoader workers. Each field is decoded straight into a preallocated batch array (shapes come
from the member layout), so a batch costs one allocation per key and no concatenation.
"""

from __future__ import annotations

import lz4.block
import numpy as np
import simplejpeg

from leadio.decode.fields import FIELD_MEMBER, TARGET_FIELDS
from leadio.preprocess import Member

__all__ = ["RawBatch", "decode_batch", "inflate_member", "split_targets"]

#: member name -> list of per-sample bytes, plus "row" and "view" int arrays
RawBatch = dict


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
    """(B, T) float32 target records -> named arrays (B, *shape), views into ``records``."""
    out, col = {}, 0
    for name, shape in TARGET_FIELDS:
        n = int(np.prod(shape))
        out[name] = records[:, col:col + n].reshape((len(records), *shape))
        col += n
    return out


def decode_batch(raw: RawBatch, members: dict[str, Member]) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """Decode a raw batch (member -> list of bytes) into arrays, the layout of `leadio.decode.fields`.

    Returns:
        (batch, failures): failures maps the batch position of each sample that did not decode to the reason;
        its slots are left zero for the caller to raise or substitute.
    """
    n = len(raw["row"])
    out: dict[str, np.ndarray] = {"row": np.array(raw["row"], np.int64), "view": np.array(raw["view"], np.uint8)}
    failures: dict[int, str] = {}
    key_of = {m: k for k, m in FIELD_MEMBER.items()}
    for name, member in members.items():
        blobs = raw[name]
        if member.encoding == "jpeg":
            h, w, c = member.shape
            batch = np.zeros((n, c, h, w), np.uint8)
        else:
            batch = np.zeros((n, *member.shape), member.dtype)
        for i, data in enumerate(blobs):
            if i in failures:
                continue
            try:
                if member.encoding == "jpeg":
                    image = simplejpeg.decode_jpeg(data, colorspace="RGB")
                    if image.shape != member.shape:
                        raise ValueError(f"JPEG decodes to {image.shape}, expected {member.shape}")
                    batch[i] = image.transpose(2, 0, 1)
                else:
                    inflate_member(member, data, out=batch[i])
            except (ValueError, RuntimeError, lz4.block.LZ4BlockError) as e:
                failures[i] = f"member {name} does not decode ({type(e).__name__}: {e})"
        if name == "targets":
            out.update(split_targets(batch))
        else:
            out[key_of[name]] = batch
    return out, failures
