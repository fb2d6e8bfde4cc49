"""The wire between a learner's kernel and the grading referee: length-prefixed frames.

Each frame is an 8-byte big-endian length followed by the bytes of ``torch.save(obj)``.
Frames are read back with ``torch.load(..., weights_only=True)`` only, so a frame can carry
tensors, numbers, strings, bytes, None and lists/tuples/dicts/sets of these, but never an
object whose unpickling would run code: the referee never unpickles a learner's class.
"""

from __future__ import annotations

import io
import struct
from typing import IO, Any

import torch

# Reserved keys of the protocol's plain-data dicts.
# A returned object that is not plain data travels as {UNSUPPORTED: type name}.
UNSUPPORTED = "__course_unsupported__"
SPECIAL = "__course__"  # an argument the kernel must build: a Generator, parameters with .grad

_HEADER = struct.Struct(">Q")
MAX_FRAME_BYTES = 1 << 30  # 1 GiB: far above any grading case, low enough to catch garbage


def write_frame(stream: IO[bytes], obj: Any) -> None:
    """Serialise ``obj`` with ``torch.save`` and write it as one frame, then flush."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError(f"stream closed after {n - left} of {n} bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> Any:
    """Read one frame and load it with ``weights_only=True``; EOFError when the peer is gone."""
    (n,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    if n > MAX_FRAME_BYTES:
        raise EOFError(
            f"frame of {n} bytes is larger than {MAX_FRAME_BYTES}: the stream is corrupt"
        )
    return torch.load(io.BytesIO(_read_exact(stream, n)), weights_only=True)
