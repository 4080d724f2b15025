"""Write PyTorch checkpoints without torch, for the tests (legit ones and hostile ones).

``pickle_state_dict`` emits the pickle opcodes ``torch.save`` would (protocol 2:
``collections.OrderedDict`` of ``torch._utils._rebuild_tensor_v2`` calls whose
storages are persistent ids), which the real globals are not needed for.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_TYPES = {
    "float32": "FloatStorage",
    "float64": "DoubleStorage",
    "float16": "HalfStorage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


def _frag(obj) -> bytes:
    """The opcodes that push ``obj`` (a str, int or tuple of ints), without PROTO/STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _ordered_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    out = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    if items:
        out += pickle.MARK + b"".join(k + v for k, v in items) + pickle.SETITEMS
    return out


def _tensor(key: str, dtype: str, numel: int, shape: tuple, stride: tuple, offset: int = 0) -> bytes:
    persid = (
        pickle.MARK
        + _frag("storage")
        + _global("torch", STORAGE_TYPES[dtype])
        + _frag(key)
        + _frag("cpu")
        + _frag(numel)
        + pickle.TUPLE
        + pickle.BINPERSID
    )
    args = (
        pickle.MARK
        + persid
        + _frag(offset)
        + _frag(tuple(shape))
        + _frag(tuple(stride))
        + pickle.NEWFALSE
        + _ordered_dict([])
        + pickle.TUPLE
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def pickle_state_dict(
    tensors: dict[str, np.ndarray], *, wrap: str | None = None, shapes: dict[str, tuple] | None = None
) -> tuple[bytes, dict[str, np.ndarray]]:
    """(data.pkl bytes, {storage key: contiguous array}).  ``shapes`` lies about some shapes."""
    items, storages = [], {}
    for index, (name, array) in enumerate(tensors.items()):
        array = np.ascontiguousarray(array)
        key = str(index)
        storages[key] = array
        shape = (shapes or {}).get(name, array.shape)
        stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
        items.append((_frag(name), _tensor(key, str(array.dtype), array.size, shape, stride)))
    body = _ordered_dict(items)
    if wrap:
        body = pickle.EMPTY_DICT + pickle.MARK + _frag(wrap) + body + pickle.SETITEMS
    return pickle.PROTO + b"\x02" + body + pickle.STOP, storages


def write_zip(
    path: Path,
    data_pkl: bytes,
    storages: dict[str, np.ndarray] | None = None,
    *,
    prefix: str = "archive",
    byteorder: str = "little",
) -> Path:
    """A zip-format checkpoint: ``<prefix>/data.pkl``, ``<prefix>/data/<key>``, ``byteorder``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", data_pkl)
        archive.writestr(f"{prefix}/byteorder", byteorder)
        for key, array in (storages or {}).items():
            if byteorder == "big":
                array = array.astype(array.dtype.newbyteorder(">"))
            archive.writestr(f"{prefix}/data/{key}", array.tobytes())
        archive.writestr(f"{prefix}/version", "3\n")
    return path


def save_zip(path: Path, tensors: dict[str, np.ndarray], **options) -> Path:
    """Save ``tensors`` as ``torch.save`` would (zip format), without torch."""
    byteorder = options.pop("byteorder", "little")
    prefix = options.pop("prefix", "archive")
    data_pkl, storages = pickle_state_dict(tensors, **options)
    return write_zip(path, data_pkl, storages, prefix=prefix, byteorder=byteorder)


def legacy_header() -> bytes:
    """The pickles a legacy ``torch.save`` stream starts with: magic, protocol, sys_info."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(obj, protocol=2) for obj in (LEGACY_MAGIC, 1001, sys_info))


def write_legacy(path: Path, object_pickle: bytes) -> Path:
    """A legacy-format checkpoint holding ``object_pickle`` and no storages."""
    path.write_bytes(legacy_header() + object_pickle + pickle.dumps([], protocol=2))
    return path
