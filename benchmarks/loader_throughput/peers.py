"""The peer rows (issue 25): the established loaders a user would pick instead of leadio, each storing exactly the
member bytes of the leadio shard set (`ceiling_bytes`: the JPEG strip, the lz4 arrays, the raw radar, boxes and
targets of the normal view) in its own format, or reading leadio's own shards, and decoding them with leadio's
decoders (`leadio.decode.cpu`: simplejpeg and lz4 straight into fresh batch buffers), so that the difference is
the engine, not the codec. Each runs with its own recommended reader and worker model, at the same parallelism
as the other rows (W = DataLoader worker processes; for DALI W pipeline threads, at least 1, so at 0 and 1 workers
DALI's pipeline thread decodes JPEGs while the consuming thread inflates the lz4 members: two decoding threads):

=========================  =====================================================================================
row                        what it does
=========================  =====================================================================================
mosaic streaming           ``MDSWriter`` (``bytes`` columns, no compression, ~8 shards) -> ``StreamingDataset``
                           (``local``, no shuffle) -> torch ``DataLoader`` (W workers, ``collate_fn`` decodes)
mosaic streaming remote    the same MDS shards as a ``remote`` on a loopback S3 endpoint (an http.server thread
                           on 127.0.0.1 answering S3 GET/HEAD; Streaming has no plain-http downloader), a fresh
                           ``local`` cache with ``cache_limit`` under the data's size, so every pass downloads
litdata                    ``litdata.optimize`` (``bytes`` fields, 1 MB chunks) -> ``StreamingDataset`` ->
                           ``StreamingDataLoader`` (W workers, ``collate_fn`` decodes)
energon                    leadio's own tar shards (symlinked into a scratch folder that ``energon prepare``'s
                           ``.nv-meta`` and ``.tar.idx`` go to; the shard set is never written), a
                           ``CrudeWebdataset`` with a ``part_filter`` of the normal view's members and the other
                           samples excluded in ``split.yaml``, ``get_val_dataset`` + ``get_loader`` (W workers),
                           the task encoder's ``batch`` decodes
dali webdataset            ``fn.readers.webdataset`` over leadio's tars and ``.idx`` (a copy of each index holding
                           the chosen samples' lines), CPU pipeline (``device_id=None``, W threads), JPEGs decoded
                           by DALI's ``fn.decoders.image`` (libjpeg-turbo, not simplejpeg: rgb within ±1), the lz4
                           and raw members by `decode_into` in the iterating thread (DALI's inflate is GPU-only)
=========================  =====================================================================================

The written peer datasets are cached in ``<root>/bench_peers/<row>-<digest of the samples>`` (untimed, reused).
A peer that is not installed is skipped with one line saying why (`peer_available`). FFCV is listed but never
runs here: `FFCV_WHY`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.loader_throughput.bench import Bench, ceiling_bytes
from benchmarks.loader_throughput.rows import LoaderRow
from leadio.decode.cpu import batch_views, decode_batch, decode_into
from leadio.schema import DEFAULT_KEYS, Member, member_name, members_for_keys

MDS, MDS_REMOTE, LITDATA, ENERGON, DALI_WDS, FFCV = ("mosaic streaming", "mosaic streaming remote", "litdata",
                                                     "energon", "dali webdataset", "ffcv")
#: the peer rows, opt-in (``--loaders``; ``peers`` names them all)
PEER_ROWS = (MDS, MDS_REMOTE, LITDATA, ENERGON, DALI_WDS, FFCV)
#: the module each peer needs, and its pip name (the ``peers`` extra)
PEER_MODULES = {MDS: ("streaming.base", "mosaicml-streaming"), MDS_REMOTE: ("streaming.base", "mosaicml-streaming"),
                LITDATA: ("litdata", "litdata"), ENERGON: ("megatron.energon", "megatron-energon"),
                DALI_WDS: ("nvidia.dali", "nvidia-dali-cuda120")}
#: why FFCV has no row (checked 2026-12-05, Python 3.11, numpy 2.4.6, torch 2.13.0+cpu)
FFCV_WHY = ("not installable here: PyPI's only ffcv (1.0.2, 2023) is an sdist whose build needs the system "
            "libraries opencv4 and libturbojpeg through pkg-config; pip install ffcv fails with 'RuntimeError: "
            "Could not find required package: opencv4.'")
#: leadio cpu / the best peer at the same workers, the issue-25 target
PEER_TARGET = 1.5
#: MDS and LitData shard / chunk sizes: several per worker on a benchmark-sized set
_SHARDS = 8


# ----------------------------------------------------------------------------------------------- availability
def _find(module: str) -> bool:
    """Whether ``module`` is installed, without importing it (nor its parent package's ``__init__``)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or not rest:
        return spec is not None
    base = Path(*rest)
    return any((Path(d) / base).is_dir() or (Path(d) / base).with_suffix(".py").is_file()
               for d in spec.submodule_search_locations or [])


def peer_available(name: str) -> tuple[bool, str]:
    """(True, "") when peer row ``name`` can run here, else (False, one line saying why)."""
    if name == FFCV:
        return False, FFCV_WHY
    module, pip_name = PEER_MODULES[name]
    if not _find(module):
        return False, f"{module} is not installed (pip install {pip_name}, or the 'peers' extra)"
    return True, ""


def expand_loaders(names: Sequence[str]) -> list[str]:
    """``peers`` -> every peer row; the rest unchanged."""
    out: list[str] = []
    for n in names:
        out += [p for p in PEER_ROWS if p not in out] if n == "peers" else [n] if n not in out else []
    return out


def runnable_loaders(names: Sequence[str], say: Callable[[str], Any] = print) -> list[str]:
    """``names`` without the peers that cannot run here, saying one line for each one left out."""
    keep = []
    for n in names:
        ok, why = peer_available(n) if n in PEER_ROWS else (True, "")
        if ok:
            keep.append(n)
        else:
            say(f"skip {n}: {why}")
    return keep


def best_peer_ratios(results: Sequence[Any], baseline: str) -> list[dict]:
    """leadio cpu / the fastest peer row, per worker count (issue 25's target: >= `PEER_TARGET`)."""
    out = []
    for w in sorted({r.workers for r in results}):
        peers = [r for r in results if r.workers == w and r.loader in PEER_ROWS]
        base = next((r for r in results if r.workers == w and r.loader == baseline), None)
        if not peers or base is None:
            continue
        best = max(peers, key=lambda r: r.samples_per_s)
        achieved = base.samples_per_s / best.samples_per_s
        out.append({"workers": w, "against": f"best peer ({best.loader})", "target": PEER_TARGET,
                    "achieved": round(achieved, 3), "met": achieved >= PEER_TARGET})
    return out


# ----------------------------------------------------------------------------------------------- shared
def _members(bench: Bench) -> dict[str, Member]:
    return members_for_keys(DEFAULT_KEYS, bench.shard_set.layout)


class DecodeCollate:
    """A peer's ``collate_fn`` (it runs in the peer's worker): per-sample member bytes -> leadio's batch, decoded
    by `decode_batch` (simplejpeg and lz4 straight into fresh batch buffers, no stacking copy)."""

    def __init__(self, members: dict[str, Member], row_of: Callable[[dict], int]):
        self.members, self.row_of = members, row_of

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        raw: dict[str, Any] = {n: [bytes(s[n]) if isinstance(s[n], np.ndarray) else s[n] for s in samples]
                               for n in self.members}
        raw["row"] = np.array([self.row_of(s) for s in samples], np.int64)
        raw["view"] = np.zeros(len(samples), np.uint8)
        batch, failures = decode_batch(raw, self.members, tensors=True)
        if failures:
            raise RuntimeError(f"peer samples do not decode: {failures}")
        return batch


def _row_field(sample: dict) -> int:
    return int(sample["row"])


def _digest(bench: Bench) -> str:
    h = hashlib.sha1(bench.shard_set.path.name.encode())
    h.update(np.asarray(bench.rows, np.int64).tobytes())
    return h.hexdigest()[:12]


def _cached_dir(bench: Bench, tag: str, write: Callable[[Path], None]) -> Path:
    """``<root>/bench_peers/<tag>-<digest>``, written once by ``write(tmp)`` (then renamed into place)."""
    final = bench.root / "bench_peers" / f"{tag}-{_digest(bench)}"
    if (final / ".done").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=final.parent))
    try:
        write(tmp / "data")
        (tmp / "data" / ".done").write_text("ok\n")
        os.replace(tmp / "data", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _shard_bytes(raw: list[dict[str, bytes]]) -> int:
    """A shard / chunk size giving about `_SHARDS` of them, at least two samples each."""
    sizes = [sum(map(len, s.values())) for s in raw]
    return max(2 * max(sizes) + 4096, sum(sizes) // _SHARDS)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


class PeerRow(LoaderRow):
    """A `LoaderRow` that also runs ``cleanup`` callbacks (servers, scratch caches) when it closes."""

    def __init__(self, *args: Any, cleanup: Sequence[Callable[[], Any]] = (), **kwargs: Any):
        self._cleanup = list(cleanup)
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        try:
            super().close()
        finally:
            for fn in reversed(self._cleanup):
                fn()


def _data_loader(dataset: Any, bench: Bench, workers: int, collate: Callable, cls: type = DataLoader) -> Any:
    return cls(dataset, batch_size=bench.batch_size, num_workers=workers, persistent_workers=workers > 0,
               prefetch_factor=2 if workers > 0 else None, collate_fn=collate)


# ----------------------------------------------------------------------------------------------- MosaicML
def import_streaming() -> types.ModuleType:
    """``streaming.base`` (MDSWriter, StreamingDataset). ``import streaming`` also imports its dataset zoo
    (``streaming.vision`` needs torchvision, which PyPI builds only for PyPI's torch, not for a local +cpu build);
    where that import fails, the ``streaming`` package is registered without running its ``__init__`` (which
    only re-exports), and ``streaming.base`` is imported from it: the same classes."""
    import importlib
    import sys

    try:
        import streaming  # noqa: F401
    except (ImportError, RuntimeError):  # torchvision missing, or one that does not load against this torch
        for mod in [m for m in sys.modules if m == "streaming" or m.startswith(("streaming.", "torchvision"))]:
            del sys.modules[mod]
        spec = importlib.util.find_spec("streaming")
        if spec is None or spec.submodule_search_locations is None:
            raise
        pkg = types.ModuleType("streaming")
        pkg.__path__, pkg.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["streaming"] = pkg
    return importlib.import_module("streaming.base")


def _mds_dir(bench: Bench) -> Path:
    def write(out: Path) -> None:
        sb = import_streaming()
        raw = ceiling_bytes(bench)
        columns = {n: "bytes" for n in _members(bench)} | {"row": "int64"}
        with sb.MDSWriter(out=str(out), columns=columns, compression=None, size_limit=_shard_bytes(raw)) as w:
            for row, sample in zip(bench.rows, raw, strict=True):
                w.write({**sample, "row": int(row)})

    return _cached_dir(bench, "mds", write)


class _S3Handler(BaseHTTPRequestHandler):
    """GET and HEAD of ``/<bucket>/<key>`` -> ``<served dir>/<key>``: the part of S3 that boto3's download_file
    uses (path-style addressing, as boto3 does for an IP endpoint); signatures are not checked."""

    root: Path = Path()
    served = 0

    def _file(self) -> Path | None:
        parts = self.path.split("?", 1)[0].lstrip("/").split("/", 1)
        path = (self.root / parts[1]).resolve() if len(parts) == 2 else None
        return path if path is not None and path.is_file() and self.root in path.parents else None

    def _head(self, path: Path | None, length: int | None = None, status: int = 200) -> None:
        if path is None:
            body = b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"
            self.send_response(404)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)
            return
        st = path.stat()
        self.send_response(status)
        self.send_header("Content-Length", str(st.st_size if length is None else length))
        self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
        self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_HEAD(self) -> None:  # http.server calls do_<METHOD>
        self._head(self._file())

    def do_GET(self) -> None:
        path = self._file()
        if path is None:
            return self._head(None)
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            data = data[int(a):int(b) + 1 if b else None]
            self._head(path, len(data), 206)
        else:
            self._head(path)
        self.wfile.write(data)
        type(self).served += len(data)

    def log_message(self, *args: Any) -> None:
        pass


def loopback_s3(directory: Path) -> tuple[str, Callable[[], None]]:
    """Serve ``directory`` as an S3 bucket's objects on 127.0.0.1 (a thread): (endpoint url, stop)."""
    handler = type("Handler", (_S3Handler,), {"root": directory.resolve(), "served": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="loopback-s3", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_address[1]}", stop


def _mds_row(bench: Bench, workers: int, remote: bool) -> PeerRow:
    sb = import_streaming()
    mds = _mds_dir(bench)
    size = _tree_bytes(mds)
    collate = DecodeCollate(_members(bench), _row_field)
    cleanup: list[Callable[[], Any]] = []
    if remote:
        endpoint, stop = loopback_s3(mds.parent)
        cleanup.append(stop)
        local = Path(tempfile.mkdtemp(prefix="mds-cache-"))
        cleanup.append(lambda: shutil.rmtree(local, ignore_errors=True))
        os.environ.update(S3_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_DEFAULT_REGION="us-east-1")
        shard = max(p.stat().st_size for p in mds.glob("*.mds"))
        # under the data's size: Streaming evicts the least recently used shards, so each pass downloads them again
        limit = max(size // 2, shard * (2 * max(1, workers) + 2))
        kwargs = dict(remote=f"s3://bench/{mds.name}", local=str(local), cache_limit=limit)
        storage = "MDS shards, loopback S3 (http)"
    else:
        kwargs = dict(local=str(mds))
        storage = "MDS shards"

    def start() -> DataLoader:
        ds = sb.StreamingDataset(**kwargs, shuffle=False, batch_size=bench.batch_size)
        return _data_loader(ds, bench, workers, collate)

    return PeerRow(MDS_REMOTE if remote else MDS, storage, size, start, iter, cleanup=cleanup)


# ----------------------------------------------------------------------------------------------- LitData
def _litdata_identity(sample: dict) -> dict:
    return sample


def _litdata_dir(bench: Bench) -> Path:
    def write(out: Path) -> None:
        from litdata import optimize

        raw = ceiling_bytes(bench)
        inputs = [{**s, "row": int(r)} for r, s in zip(bench.rows, raw, strict=True)]
        optimize(fn=_litdata_identity, inputs=inputs, output_dir=str(out), chunk_bytes=_shard_bytes(raw),
                 num_workers=1, verbose=False, start_method="fork")

    return _cached_dir(bench, "litdata", write)


def _litdata_row(bench: Bench, workers: int) -> PeerRow:
    from litdata import StreamingDataLoader, StreamingDataset

    path = _litdata_dir(bench)
    collate = DecodeCollate(_members(bench), _row_field)

    def start() -> Any:
        ds = StreamingDataset(input_dir=str(path), shuffle=False, drop_last=False)
        return _data_loader(ds, bench, workers, collate, cls=StreamingDataLoader)

    return PeerRow(LITDATA, "LitData chunks", _tree_bytes(path), start, iter)


# ----------------------------------------------------------------------------------------------- Energon
def _shard_index_lines(bench: Bench) -> dict[int, list[str]]:
    """Shard number -> the lines of its DALI index (one per sample, in tar order), for the shards that hold
    chosen samples."""
    ss = bench.shard_set
    shards = sorted({int(ss.catalog["shard"][r]) for r in bench.rows})
    return {k: ss.shard_path(k).with_suffix(".idx").read_text().splitlines()[1:] for k in shards}


def _key_of_index_line(line: str) -> str:
    from urllib.parse import unquote

    name = unquote(line.split()[3], errors="surrogateescape")
    return name[:name.index(".", name.rfind("/") + 1)]


def _energon_dir(bench: Bench) -> Path:
    def write(out: Path) -> None:
        import yaml
        from megatron.energon.flavors.webdataset.prepare import WebdatasetPreparator

        ss, chosen = bench.shard_set, {s.key for s in bench.samples}
        out.mkdir(parents=True)
        names, excludes = [], []
        for k, lines in _shard_index_lines(bench).items():
            name = f"{k:06d}.tar"
            os.symlink(ss.shard_path(k).resolve(), out / name)  # the shard set itself is never written
            names.append(name)
            excludes += [f"{name}/{key}" for key in map(_key_of_index_line, lines) if key not in chosen]
        WebdatasetPreparator.prepare_dataset(out, names, split_parts_ratio=[("val", 1.0)], shuffle_seed=None,
                                             workers=1)
        meta = out / ".nv-meta"
        split = yaml.safe_load((meta / "split.yaml").read_text())
        split["exclude"] = excludes
        (meta / "split.yaml").write_text(yaml.safe_dump(split))
        (meta / "dataset.yaml").write_text(yaml.safe_dump({"__module__": "megatron.energon",
                                                           "__class__": "CrudeWebdataset"}))

    return _cached_dir(bench, "energon", write)


def _energon_row(bench: Bench, workers: int) -> PeerRow:
    from megatron.energon import Cooker, DefaultTaskEncoder, WorkerConfig, get_loader, get_val_dataset, stateless

    members = _members(bench)
    suffix = {member_name(m, "normal"): n for n, m in members.items()}  # "rgb_n.jpg" -> "rgb"
    row_of_key = {s.key: s.row for s in bench.samples}
    path = _energon_dir(bench)
    collate = DecodeCollate(members, lambda s: row_of_key[s["__key__"]])

    @stateless  # energon asserts it (a cooker may not keep state between samples)
    def cook(crude: dict) -> dict:
        return {"__key__": crude["__key__"], **{suffix[k]: v for k, v in crude.items() if k in suffix}}

    class Encoder(DefaultTaskEncoder):
        decoder = None  # the crude bytes, decoded by leadio's decoders in `batch`
        cookers = [Cooker(cook)]

        def batch(self, samples: list[dict]) -> dict:
            return collate(samples)

        def encode_batch(self, batch: dict) -> dict:
            return batch

    ss = bench.shard_set
    size = int(ss.catalog["member_size"][np.ix_(bench.rows, [ss.members.index(s) for s in suffix])].sum())

    def start() -> Any:
        wc = WorkerConfig(rank=0, world_size=1, num_workers=workers)
        ds = get_val_dataset(str(path), split_part="val", worker_config=wc, batch_size=bench.batch_size,
                             task_encoder=Encoder(), part_filter=list(suffix))
        return get_loader(ds)  # a torch DataLoader with W workers, prefetch_factor 2

    return PeerRow(ENERGON, "leadio's tars (energon index)", size, start, iter)


# ----------------------------------------------------------------------------------------------- DALI
class _DaliLoader:
    """Iterates a DALI CPU pipeline over the chosen samples: one pass = the reader's epoch."""

    def __init__(self, bench: Bench, workers: int, scratch: Path):
        from nvidia.dali import fn, pipeline_def, types

        self.members = _members(bench)
        self.row_of_key = {s.key: s.row for s in bench.samples}
        self.n, self.b = len(bench.samples), bench.batch_size
        chosen = set(self.row_of_key)
        tars, idxs = [], []
        for k, lines in _shard_index_lines(bench).items():
            keep = [ln for ln in lines if _key_of_index_line(ln) in chosen]
            idx = scratch / f"{k:06d}.idx"
            idx.write_text(f"v1.2 {len(keep)}\n" + "\n".join(keep) + "\n")
            tars.append(str(bench.shard_set.shard_path(k)))
            idxs.append(str(idx))
        self.names = list(self.members)
        exts = [member_name(m, "normal") for m in self.members.values()]
        jpeg = [i for i, m in enumerate(self.members.values()) if m.encoding == "jpeg"]

        @pipeline_def(batch_size=self.b, num_threads=max(1, workers), device_id=None, prefetch_queue_depth=2)
        def pipe():
            outs = list(fn.readers.webdataset(paths=tars, index_paths=idxs, ext=exts, random_shuffle=False,
                                              pad_last_batch=True, missing_component_behavior="error", name="r"))
            info = fn.get_property(outs[0], key="source_info")
            for i in jpeg:  # libjpeg-turbo's default chroma upsampling, as simplejpeg
                outs[i] = fn.decoders.image(outs[i], device="cpu", output_type=types.RGB, jpeg_fancy_upsampling=True)
            return (*outs, info)

        self.pipe = pipe()
        self.pipe.build()
        self.lz4 = {n: m for n, m in self.members.items() if m.encoding != "jpeg"}

    def __iter__(self) -> Iterator[dict]:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        left = self.n
        while left > 0:
            outs = self.pipe.run()
            k = min(self.b, left)
            left -= k
            info = [bytes(np.asarray(outs[-1][i])).decode() for i in range(k)]
            rows = [self.row_of_key[_key_of_member(s.rsplit(":", 1)[1])] for s in info]
            bufs: dict[str, torch.Tensor] = {}
            raw: dict[str, Any] = {}
            for j, (name, m) in enumerate(self.members.items()):
                if m.encoding == "jpeg":
                    full = torch.empty((self.b, *m.shape), dtype=torch.uint8)
                    feed_ndarray(outs[j].as_tensor(), full)
                    bufs[name] = full[:k]
                else:
                    raw[name] = [np.asarray(outs[j][i]) for i in range(k)]
                    bufs[name] = torch.empty((k, *m.shape), dtype=getattr(torch, m.dtype))
            failures = decode_into(raw, self.lz4, {n: bufs[n].numpy() for n in self.lz4})
            if failures:
                raise RuntimeError(f"dali webdataset: samples do not decode: {failures}")
            yield batch_views(bufs, self.members, rows, np.zeros(k, np.uint8))
            if left == 0:
                self.pipe.reset()  # the padded last batch ends the reader's epoch; the next pass starts over


def _key_of_member(name: str) -> str:
    return name[:name.index(".", name.rfind("/") + 1)]


def _dali_row(bench: Bench, workers: int) -> PeerRow:
    scratch = Path(tempfile.mkdtemp(prefix="dali-idx-"))
    ss = bench.shard_set
    cols = [ss.members.index(member_name(m, "normal")) for m in _members(bench).values()]
    size = int(ss.catalog["member_size"][np.ix_(bench.rows, cols)].sum())

    def close_scratch() -> None:
        shutil.rmtree(scratch, ignore_errors=True)

    return PeerRow(DALI_WDS, "leadio's tars + DALI index", size, lambda: _DaliLoader(bench, workers, scratch), iter,
                   cleanup=[close_scratch])


# ----------------------------------------------------------------------------------------------- dispatch
def make_peer_row(bench: Bench, name: str, workers: int) -> LoaderRow:
    """The peer row ``name`` (one of `PEER_ROWS`) over ``bench``'s samples with ``workers`` workers.

    Raises:
        RuntimeError: the peer is not installed (or FFCV), with the one-line reason.
    """
    ok, why = peer_available(name)
    if not ok:
        raise RuntimeError(f"{name}: {why}")
    if len(bench.samples) % bench.batch_size:
        raise ValueError(f"{len(bench.samples)} samples are not whole batches of {bench.batch_size}")
    if name in (MDS, MDS_REMOTE):
        return _mds_row(bench, workers, remote=name == MDS_REMOTE)
    if name == LITDATA:
        return _litdata_row(bench, workers)
    if name == ENERGON:
        return _energon_row(bench, workers)
    if name == DALI_WDS:
        return _dali_row(bench, workers)
    raise ValueError(f"unknown peer {name!r}; known: {PEER_ROWS}")
