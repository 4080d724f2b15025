"""Read PyTorch ``.pth``/``.pt`` checkpoints into numpy arrays, without torch.

``torch.save`` writes a pickle, and unpickling an untrusted pickle runs
whatever code it names.  This reader never imports torch and never lets a
file name arbitrary code: it unpickles with a restricted ``pickle.Unpickler``
whose ``find_class`` answers only the handful of globals a tensor state dict
needs (the tensor-rebuild functions, ``collections.OrderedDict`` and the
typed ``torch.*Storage`` classes), each with its own numpy stand-in.  Any
other global (``os.system``, ``builtins.eval``, an ``nn.Module`` class, ...)
is refused with a :class:`tlkit.TlkitError` before it is looked up.

Both of ``torch.save``'s formats are read:

- the zip format (torch ≥ 1.6): ``<prefix>/data.pkl`` holds the object
  pickle, whose persistent ids name storages stored as raw bytes in
  ``<prefix>/data/<key>``; ``<prefix>/byteorder`` says ``little`` or ``big``.
- the legacy format: a stream of pickles — the magic number, the protocol
  version, ``sys_info`` (endianness), the object pickle, the sorted list of
  storage keys — followed by the raw storages, each prefixed by its element
  count as an 8-byte integer.

Public entry point: :func:`load_state_dict`.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tlkit import TlkitError

#: ``torch.save``'s legacy magic number, the first pickle of a legacy file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: What a legacy file starts with: PROTO <n>, then LONG1 with the magic's 10 bytes.
_LEGACY_SIGNATURE = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")

#: Typed storage class name → numpy dtype of its elements (``"bfloat16"`` is
#: read as uint16 and widened to float32, numpy having no bfloat16).
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class: only records the element dtype."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = dtype

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Storage:
    """One storage: its type, its element count and (once read) its raw bytes."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int | None) -> None:
        self.type = storage_type
        self.key = key
        self.numel = numel
        self.raw: bytes | None = None
        self.big_endian = False

    def array(self) -> np.ndarray:
        """The storage's elements as a 1-D numpy array (a read-only view of ``raw``)."""
        if self.raw is None:
            raise _Corrupt(f"storage {self.key!r} has no data")
        dtype = self.type.dtype
        base = np.dtype("uint16" if dtype == "bfloat16" else dtype)
        if self.big_endian:
            base = base.newbyteorder(">")
        count = len(self.raw) // base.itemsize
        if self.numel is not None and count < self.numel:
            raise _Corrupt(f"storage {self.key!r} holds {count} elements, the pickle expects {self.numel}")
        return np.frombuffer(self.raw, dtype=base, count=count)


class _StorageView:
    """A legacy-format view into part of another storage (``view_metadata``)."""

    def __init__(self, root: _Storage, offset: int, size: int) -> None:
        self.root = root
        self.offset = offset
        self.size = size
        self.type = root.type

    def array(self) -> np.ndarray:
        data = self.root.array()
        if self.offset < 0 or self.size < 0 or self.offset + self.size > data.size:
            raise _Corrupt(f"a storage view runs past the end of storage {self.root.key!r}")
        return data[self.offset : self.offset + self.size]


class _LazyTensor:
    """A tensor waiting for its storage's bytes (legacy files store them after the pickle)."""

    def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple) -> None:
        if not isinstance(storage, (_Storage, _StorageView)):
            raise _Corrupt("a tensor is rebuilt from something that is not a storage")
        self.storage = storage
        self.offset = _as_int(offset, "storage offset")
        self.size = tuple(_as_int(s, "size") for s in size)
        self.stride = tuple(_as_int(s, "stride") for s in stride)
        if len(self.size) != len(self.stride):
            raise _Corrupt(f"tensor size {self.size} and stride {self.stride} differ in length")

    def materialize(self) -> np.ndarray:
        data = self.storage.array()
        shape, stride, offset = self.size, self.stride, self.offset
        if any(s < 0 for s in shape) or any(s < 0 for s in stride) or offset < 0:
            raise _Corrupt(f"negative size, stride or offset in tensor {shape}/{stride}/{offset}")
        if 0 in shape:
            out = np.empty(shape, dtype=data.dtype)
        else:
            # Bounds check before as_strided, which would otherwise read past the buffer.
            last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
            if last >= data.size:
                raise _Corrupt(
                    f"tensor of shape {shape} (stride {stride}, offset {offset}) runs past "
                    f"the end of its storage ({data.size} elements)"
                )
            view = np.lib.stride_tricks.as_strided(
                data[offset:],
                shape=shape,
                strides=tuple(s * data.dtype.itemsize for s in stride),
                writeable=False,
            )
            out = np.array(view, copy=True, order="C")
        if out.dtype.byteorder == ">":
            out = out.astype(out.dtype.newbyteorder("="))
        if self.storage.type.dtype == "bfloat16":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


class _Corrupt(Exception):
    """Internal: the file is damaged or not what it claims; becomes a TlkitError."""


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Corrupt(f"tensor {what} {value!r} is not an integer")
    return value


# -- the numpy stand-ins for the allowed globals ---------------------------


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals a tensor state dict needs."""

    def __init__(self, file, path: Path, storage_for) -> None:
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storage_for = storage_for

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TlkitError(
                f"refusing to load {self._path}: its pickle asks for {module}.{name}, which a "
                f"weights file never needs (possibly malicious); only load checkpoints from "
                f"sources you trust, or re-save it as a plain state dict"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_for is None:
            raise _Corrupt(f"unexpected persistent id {pid!r}")
        return self._storage_for(pid)


def _decode(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _storage_type(value: Any) -> _StorageType:
    if not isinstance(value, _StorageType):
        raise _Corrupt(f"storage of unknown type {value!r}")
    return value


# -- the two file formats ---------------------------------------------------


def _load_zip(path: Path, archive: zipfile.ZipFile) -> Any:
    names = archive.namelist()
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise _NotCheckpoint(
            "a zip archive without a data.pkl" if not pickles else "a zip archive with several data.pkl"
        )
    prefix = pickles[0][: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
        order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise _Corrupt(f"unknown byteorder {order!r}")
        big_endian = order == "big"
    storages: dict[str, _Storage] = {}

    def storage_for(pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) < 5 or _decode(pid[0]) != "storage":
            raise _Corrupt(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = _storage_type(pid[1]), str(_decode(pid[2])), pid[4]
        if key not in storages:
            member = f"{prefix}data/{key}"
            try:
                raw = archive.read(member)
            except KeyError:
                raise _Corrupt(f"storage {member} is missing from the archive") from None
            storage = _Storage(storage_type, key, None)
            # numel is in elements for typed storages, in bytes for untyped ones.
            if isinstance(numel, int) and len(raw) < numel * storage_type.itemsize:
                raise _Corrupt(f"storage {member} is truncated")
            storage.raw = raw
            storage.big_endian = big_endian
            storages[key] = storage
        return storages[key]

    with archive.open(pickles[0]) as handle:
        data = io.BytesIO(handle.read())
    return _RestrictedUnpickler(data, path, storage_for).load()


def _load_legacy(path: Path, handle) -> Any:
    def plain_load() -> Any:
        return _RestrictedUnpickler(handle, path, None).load()

    if plain_load() != LEGACY_MAGIC:
        raise _NotCheckpoint("bad magic number")
    protocol = plain_load()
    if protocol != 1001:
        raise _Corrupt(f"unsupported legacy protocol version {protocol!r}")
    sys_info = plain_load()
    little = not (isinstance(sys_info, dict) and sys_info.get("little_endian") is False)
    roots: dict[str, _Storage] = {}

    def storage_for(pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise _Corrupt(f"unexpected persistent id {pid!r}")
        if _decode(pid[0]) != "storage" or len(pid) != 6:
            raise _Corrupt(f"unsupported persistent id {pid[:1]!r} (not a tensor storage)")
        storage_type, root_key, _location, numel, view = pid[1:]
        storage_type = _storage_type(storage_type)
        root_key = str(_decode(root_key))
        if root_key not in roots:
            roots[root_key] = _Storage(storage_type, root_key, numel if isinstance(numel, int) else None)
        root = roots[root_key]
        if view is None:
            return root
        _view_key, offset, size = view
        return _StorageView(root, _as_int(offset, "view offset"), _as_int(size, "view size"))

    obj = _RestrictedUnpickler(handle, path, storage_for).load()
    keys = plain_load()
    if not isinstance(keys, list):
        raise _Corrupt("the storage key list is missing")
    order = "<" if little else ">"
    for key in keys:
        key = str(_decode(key))
        if key not in roots:
            raise _Corrupt(f"storage {key!r} is listed but no tensor uses it")
        storage = roots[key]
        head = handle.read(8)
        if len(head) != 8:
            raise _Corrupt(f"the file ends before storage {key!r}")
        (count,) = struct.unpack(order + "q", head)
        if count < 0 or (storage.numel is not None and count != storage.numel):
            raise _Corrupt(f"storage {key!r} has {count} elements, the pickle says {storage.numel}")
        nbytes = count * storage.type.itemsize
        raw = handle.read(nbytes)
        if len(raw) != nbytes:
            raise _Corrupt(f"storage {key!r} is truncated ({len(raw)} of {nbytes} bytes)")
        storage.raw = raw
        storage.numel = count
        storage.big_endian = not little
    return obj


class _NotCheckpoint(Exception):
    """Internal: the file is not a PyTorch checkpoint at all."""


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def load_checkpoint(path: str | Path) -> Any:
    """Unpickle a ``torch.save`` file safely; tensors come back as numpy arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            handle.seek(0)
            try:
                if head.startswith(b"PK"):
                    try:
                        archive = zipfile.ZipFile(handle)
                    except zipfile.BadZipFile as exc:
                        raise _NotCheckpoint(f"a truncated or corrupt zip archive: {exc}") from None
                    with archive:
                        obj = _load_zip(path, archive)
                elif head[:1] == b"\x80" and head[2:14] == _LEGACY_SIGNATURE:
                    obj = _load_legacy(path, handle)
                else:
                    raise _NotCheckpoint(
                        f"neither a zip archive nor a legacy torch.save stream; it starts with {head[:8]!r}"
                    )
                return _materialize(obj)
            except (TlkitError, _NotCheckpoint, _Corrupt):
                raise
            except (
                pickle.UnpicklingError,
                EOFError,
                zipfile.BadZipFile,
                ValueError,
                TypeError,
                KeyError,
                IndexError,
                AttributeError,
                struct.error,
                UnicodeDecodeError,
                OverflowError,
                MemoryError,
                RecursionError,
            ) as exc:
                raise _Corrupt(f"{type(exc).__name__}: {exc}") from None
    except _NotCheckpoint as exc:
        raise TlkitError(f"{path} is not a PyTorch checkpoint ({exc})") from None
    except _Corrupt as exc:
        raise TlkitError(f"{path} is not a PyTorch checkpoint (it is damaged or truncated: {exc})") from None
    except OSError as exc:
        raise TlkitError(f"cannot read weights file {path}: {exc.strerror or exc}") from None


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint's state dict as ``{name: numpy array}``, without torch.

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}`` or
    ``{"model": ...}``; a ``module.`` prefix on every key (``DataParallel``)
    is stripped.  Non-tensor entries are dropped.  Raises
    :class:`tlkit.TlkitError` if the file is not a checkpoint, is damaged,
    or asks for any global beyond the tensor-rebuild set.
    """
    obj = load_checkpoint(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise TlkitError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise TlkitError(f"{path} holds no tensors; expected a model's state dict")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


__all__ = ["load_checkpoint", "load_state_dict", "LEGACY_MAGIC", "STORAGE_DTYPES"]
