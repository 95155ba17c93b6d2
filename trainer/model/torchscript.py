"""Read the tensors of a TorchScript archive (e.g. OpenAI's `ViT-B-32.pt`) without running its code.

`torch.jit.load` compiles the archive's code and runs a C++ unpickler whose safety PyTorch does not
promise for untrusted files (CVE-2025-32434 was `torch.load(weights_only=True)` delegating to it), so we
avoid it. A TorchScript archive is a zip holding `<name>/data.pkl` (the module object tree) and
`<name>/data/<key>` (raw storages). We unpickle `data.pkl` with a restricted unpickler whose `find_class`
allows only: tensor rebuilding, `OrderedDict`, the legacy `torch.*Storage` dtype markers and TorchScript
module classes (`__torch__.*`), which become inert attribute holders. Nothing in the archive is executed.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Inert stand-in for a TorchScript module: keeps its pickled attributes, nothing else."""

    def __init__(self, *args: Any) -> None:
        self.attrs: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.attrs = dict(state) if isinstance(state, dict) else {"__state__": state}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _restore_type_tag(value: Any, _type: str) -> Any:
    return value


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}:
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return _restore_type_tag
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_ScriptObject,), {})
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        dtype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected storage type {dtype!r}")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) < numel * itemsize:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        return torch.frombuffer(bytearray(raw[: numel * itemsize]), dtype=dtype)


def is_torchscript_archive(path: str | Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensor attributes of the archived module tree, named like a state dict (`visual.conv1.weight`)."""
    with zipfile.ZipFile(path) as z:
        data_pkls = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(data_pkls) != 1:
            raise ValueError(f"{path}: not a TorchScript archive (data.pkl entries: {data_pkls})")
        prefix = data_pkls[0].split("/")[0]
        root = _RestrictedUnpickler(z.read(data_pkls[0]), z, prefix).load()
    out: dict[str, torch.Tensor] = {}
    _collect(root, "", out)
    if not out:
        raise ValueError(f"{path}: no tensors found in the TorchScript archive")
    return out


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, _ScriptObject):
        for k, v in getattr(obj, "attrs", {}).items():
            _collect(v, f"{prefix}{k}.", out)
