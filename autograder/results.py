"""Load a result file from a kernel so that no result can stall or balloon the grader.

A student controls every byte of their result file, and a few bytes can describe gigabytes: a
deflate-compressed record, a pickle that rebuilds a tensor through a conversion, an ``expand()``
view or a list that holds itself a thousand times. So a student's result is loaded only if

* it is a torch zip archive whose records are stored as they are (never compressed, never
  overlapping), so loading allocates no more than the file holds;
* its pickle names only the classes and functions that rebuild tensors and plain data as views of
  those records (:data:`_GLOBALS`);
* walked once, stopping at the first byte over its :class:`Allowance` (tensors at their logical
  size, ``numel() * element_size()``, whatever their storage), it holds dense cpu or cuda tensors
  and plain data, nested at most :data:`MAX_DEPTH` deep.

Everything the grader does next (comparing, formatting, hints) is then bounded by a small multiple
of what the reference returns. The reference's results are trusted and only checked for the first
point.
"""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

FLOOR = 4 * 2**20  # bytes any result may hold, however small the reference's
FACTOR = 32  # how many times the reference's size a result may hold (a wrong shape still gets hints)
SLOT = 64  # bytes counted for each item of a list, tuple, set or dict: what a Python object costs
MAX_DEPTH = 32  # lists, tuples and dicts nested deeper are refused (the grader's recursion)
TRUSTED = object()  # ``expected`` of a reference's call: no allowance

# What the pickle of a result may name: torch.save's own rebuilders of tensors (views of stored
# records, no conversion) and plain containers. Not, for example, torch's rebuilders that convert a
# tensor to another dtype or allocate a tensor of any size the pickle asks for.
_GLOBALS = {
    "collections OrderedDict", "collections Counter", "_codecs encode",
    *(f"{module} {name}" for module in ("builtins", "__builtin__") for name in ("set", "complex", "bytearray")),
    "torch Size", "torch device", "torch Tensor", "torch.nn.parameter Parameter", "torch.storage UntypedStorage",
    "torch.serialization _get_layout", "torch._tensor _rebuild_from_type_v2",
    *(f"torch._utils {name}" for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                                          "_rebuild_parameter", "_rebuild_parameter_with_state",
                                          "_rebuild_sparse_tensor")),  # refused after loading, with a reason
}


class Refused(ValueError):
    """A result the grader will not judge; the message says why, in words for the student."""


def _amount(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


@dataclass(frozen=True)
class Allowance:
    """How much data a student's result may hold: :data:`FACTOR` times the reference's, at least
    :data:`FLOOR` bytes."""

    reference: int  # bytes the reference's result holds, measured as a student's is

    @classmethod
    def of(cls, expected: Any) -> Allowance:
        walk = _Walk(None)
        walk.admit(expected)
        return cls(walk.spent)

    @property
    def bytes(self) -> int:
        return max(FLOOR, FACTOR * self.reference)

    def exceeded(self, found: int) -> Refused:
        return Refused(f"returned far more data than expected: at least {_amount(found)} where the "
                       f"reference returns {_amount(self.reference)} (return just what the exercise asks for)")


def load(data: bytes, allowance: Allowance | None = None) -> Any:
    """The value in a result file; with an ``allowance`` (a student's result), only one within it,
    its tensors made contiguous. Raises :class:`Refused`."""
    pickle = _stored_archive(data)
    if allowance is not None:
        _check_globals(pickle)
    value = torch.load(io.BytesIO(data), weights_only=True)
    return value if allowance is None else _Walk(allowance).admit(value)


def _stored_archive(data: bytes) -> bytes:
    """The pickle of a torch zip archive whose records load without growing: stored as they are
    (in the central directory, which torch reads, and in each local header) and not overlapping."""
    unreadable = Refused("returned a result file the grader cannot read (not written by torch.save)")
    if not data.startswith(b"PK\x03\x04"):  # else torch.load falls back to its legacy formats
        raise unreadable
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        records = archive.infolist()
        if not all(_stored(data, record) for record in records):
            raise Refused("returned a compressed result file; the grader reads only what torch.save writes")
        if sum(record.file_size for record in records) > len(data):
            raise Refused("returned a result file whose records overlap; the grader reads only what torch.save writes")
        pickles = [record for record in records if record.filename.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise unreadable
        return archive.read(pickles[0])
    except (zipfile.BadZipFile, struct.error, EOFError):
        raise unreadable from None


def _stored(data: bytes, record: zipfile.ZipInfo) -> bool:
    signature, _, _, method = struct.unpack_from("<4sHHH", data, record.header_offset)
    return (record.compress_type == method == zipfile.ZIP_STORED and signature == b"PK\x03\x04"
            and record.compress_size == record.file_size)


def _check_globals(pickle: bytes) -> None:
    try:
        named = [(op.name, arg) for op, arg, _ in pickletools.genops(pickle) if "GLOBAL" in op.name or op.name == "INST"]
    except ValueError:  # not a pickle
        raise Refused("returned a result file the grader cannot read (not written by torch.save)") from None
    for op, arg in named:
        if op == "STACK_GLOBAL" or not (arg in _GLOBALS or _torch_type(arg)):
            raise Refused(f"returned something the grader does not load ({arg or op}); "
                          "return tensors and plain Python data")


def _torch_type(name: str) -> bool:
    """``torch <dtype>`` or ``torch <Name>Storage``: how a pickle names a tensor's element type."""
    module, _, attr = name.partition(" ")
    return module == "torch" and (attr.endswith("Storage") or isinstance(getattr(torch, attr, None), torch.dtype))


class _Walk:
    """One pass over a loaded value that counts its bytes and stops as soon as they exceed the
    allowance, so a list that holds itself a million times costs microseconds."""

    def __init__(self, allowance: Allowance | None):
        self.allowance = allowance
        self.spent = 0

    def spend(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.allowance is not None and self.spent > self.allowance.bytes:
            raise self.allowance.exceeded(self.spent)

    def admit(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise Refused(f"returned lists, tuples or dicts nested more than {MAX_DEPTH} deep")
        if isinstance(value, torch.Tensor):
            _check_dense(value)
            self.spend(value.numel() * value.element_size())  # an expand() view at its full size
            return value.contiguous()
        if isinstance(value, (str, bytes, bytearray)):
            self.spend(len(value))
            return value
        if isinstance(value, dict):
            self.spend(2 * SLOT * len(value))
            return type(value)({self.admit(k, depth + 1): self.admit(v, depth + 1) for k, v in value.items()})
        if isinstance(value, (list, tuple, set, frozenset)):
            self.spend(SLOT * len(value))
            return type(value)([self.admit(v, depth + 1) for v in value])
        return value  # a number, None, a dtype or a device


def _check_dense(tensor: torch.Tensor) -> None:
    """Refuse a tensor the grader cannot compare: sparse, nested, quantized, meta …"""
    if tensor.layout != torch.strided:
        raise Refused(f"returned a sparse tensor ({tensor.layout}); return a dense one (.to_dense())")
    odd = "nested" if tensor.is_nested else "quantized" if tensor.is_quantized else tensor.device.type
    if odd not in ("cpu", "cuda"):
        raise Refused(f"returned a {odd} tensor, which the grader does not compare; "
                      "return a plain tensor on the input's device")
