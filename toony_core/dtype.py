"""The dtypes toony computes with, their C names, and numpy-style type promotion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)  # one instance per dtype: identity is equality, and cheap
class DType:
    name: str
    itemsize: int
    kind: str  # "b" bool, "i" signed int, "u" unsigned int, "f" float
    cname: str  # the C type a value of this dtype is computed in
    priority: int  # ordering inside a kind for promotion

    def __repr__(self) -> str:
        return f"dtypes.{self.name}"

    def __reduce__(self) -> tuple:  # unpickling finds the one instance again
        return dtypes.from_name, (self.name,)

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind in "iu"

    @property
    def is_unsigned(self) -> bool:
        return self.kind == "u"

    @property
    def storage_cname(self) -> str:
        """The C type of one element in memory (16-bit floats are stored as raw bits)."""
        return {"float16": "half", "bfloat16": "ushort", "bool": "uchar"}.get(self.name, self.cname)

    @property
    def np(self) -> np.dtype | None:
        """The numpy dtype of one element; bfloat16 has none, it travels as uint16 bits."""
        return None if self.name == "bfloat16" else np.dtype(self.name)


class dtypes:  # noqa: N801 - a namespace that reads like `dtypes.float32`
    bool = DType("bool", 1, "b", "bool", 0)
    int8 = DType("int8", 1, "i", "char", 1)
    int16 = DType("int16", 2, "i", "short", 2)
    int32 = DType("int32", 4, "i", "int", 3)
    int64 = DType("int64", 8, "i", "long", 4)
    uint8 = DType("uint8", 1, "u", "uchar", 1)
    uint16 = DType("uint16", 2, "u", "ushort", 2)
    uint32 = DType("uint32", 4, "u", "uint", 3)
    uint64 = DType("uint64", 8, "u", "ulong", 4)
    float16 = DType("float16", 2, "f", "float", 1)
    bfloat16 = DType("bfloat16", 2, "f", "float", 1)
    float32 = DType("float32", 4, "f", "float", 2)
    float64 = DType("float64", 8, "f", "double", 3)
    index = int32  # the default dtype of index arithmetic; kernels widen to int64 when sizes need it
    default_float = float32
    default_int = int64

    ALL: tuple[DType, ...] = (bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64,
                              float16, bfloat16, float32, float64)

    @staticmethod
    def from_np(dt: np.dtype | type) -> DType:
        name = np.dtype(dt).name
        if not hasattr(dtypes, name) or not isinstance(getattr(dtypes, name), DType):
            raise TypeError(f"toony has no dtype for numpy dtype {name}")
        return getattr(dtypes, name)

    @staticmethod
    def from_name(name: str) -> DType:
        dt = getattr(dtypes, name, None)
        if not isinstance(dt, DType):
            raise TypeError(f"unknown toony dtype {name!r}")
        return dt


_KIND_ORDER = {"b": 0, "u": 1, "i": 1, "f": 2}


def promote(a: DType, b: DType) -> DType:
    """numpy's promotion of two array dtypes, except where toony follows torch: an int or bool with a float
    gives that float (numpy widens int32 + float32 to float64), and float16 with bfloat16 gives float32."""
    if a == b:
        return a
    if _KIND_ORDER[a.kind] != _KIND_ORDER[b.kind]:
        return a if _KIND_ORDER[a.kind] > _KIND_ORDER[b.kind] else b
    if a.kind == "f":
        if {a.name, b.name} == {"float16", "bfloat16"}:
            return dtypes.float32
        return a if a.priority > b.priority else b
    if a.kind == b.kind:
        return a if a.itemsize > b.itemsize else b
    signed, unsigned = (a, b) if a.kind == "i" else (b, a)
    if signed.itemsize > unsigned.itemsize:
        return signed
    # a signed type wide enough for the unsigned one; uint64 with any int goes to float64 as in numpy
    wider = {1: dtypes.int16, 2: dtypes.int32, 4: dtypes.int64}.get(unsigned.itemsize)
    return wider if wider is not None else dtypes.float64


def scalar_dtype(value: bool | int | float) -> DType:
    """The dtype a Python scalar gets on its own (weak types promote to the other operand's)."""
    if isinstance(value, bool):
        return dtypes.bool
    if isinstance(value, int):
        return dtypes.default_int
    return dtypes.default_float


def result_dtype_with_scalar(t: DType, value: bool | int | float) -> DType:
    """NEP 50: a Python scalar only changes the dtype when its kind is higher (int tensor + 1.5 is float)."""
    kind = scalar_dtype(value).kind
    if _KIND_ORDER[kind] <= _KIND_ORDER[t.kind]:
        return t
    return dtypes.default_float if kind == "f" else dtypes.default_int


def min_max(dt: DType) -> tuple[int | float, int | float]:
    if dt.kind == "b":
        return 0, 1
    if dt.is_int:
        info = np.iinfo(dt.np)
        return int(info.min), int(info.max)
    return -float("inf"), float("inf")


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even) and return the 16-bit patterns."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), out).astype(np.uint16)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
