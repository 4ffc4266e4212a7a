"""The binary frames of the remote engine's WebSocket (`engine.remote`): one file of one job per binary message.

A binary message is a 4-byte big-endian header length H, then H bytes of UTF-8 JSON header
``{"job": ID, "role": ROLE, "size": N, "name": NAME}``, then exactly N payload bytes: 4 + H + N is the message's
length. ``name`` (a plain file name) is there on the files the server sends, which the relay writes under it.
Everything is checked before anything is stored: H in 2..`MAX_HEADER_BYTES`, the header an object of those keys only,
the job id a string of at most `MAX_JOB_ID_CHARS`, the role one the receiver takes (`upload_role_ok`,
`download_role_ok`), N an integer that fills the message exactly.

Only the standard library is imported: the relay runs in a Python that may have nothing else but ``websockets``.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Callable

from .. import protocol

HEADER_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 4096
MAX_JOB_ID_CHARS = 200
FRAGMENT_BYTES = 1 << 20
"""Files go out as fragmented messages of this many bytes a fragment: keepalive pings and pongs pass between the
fragments of a large file, and the relay sees the data flow while it arrives."""
INPUTS_ROLE = "inputs"
OUTPUTS_ROLE = "outputs"
PREVIEW_ROLE = "preview"
PARAM_ROLE_PREFIX = "param:"
FILE_ROLE_PREFIX = "file:"
UPLOAD_ROLES = frozenset(
    [INPUTS_ROLE] + [PARAM_ROLE_PREFIX + name for names in protocol.MODEL_FILE_PARAMS.values() for name in names]
)
"""What a client sends: the job's ``inputs.npz`` and a model file for each file param (`protocol.MODEL_FILE_PARAMS`)."""
_RESULT_FILE_ROLE = re.compile(r"file:[A-Za-z0-9_.-]{1,64}")
_HEADER_KEYS = {"job", "role", "size", "name"}


class FrameError(ValueError):
    """A binary message that breaks the framing: the sender does not speak this protocol, so the connection ends."""


def upload_role_ok(role: str) -> bool:
    return role in UPLOAD_ROLES


def download_role_ok(role: str) -> bool:
    """What the server sends: ``outputs`` (outputs.npz), ``preview`` (preview.npz), ``file:<role>`` for each file of
    a result (``file:model``)."""
    return role in (OUTPUTS_ROLE, PREVIEW_ROLE) or _RESULT_FILE_ROLE.fullmatch(role) is not None


def is_plain_name(name) -> bool:
    """Whether ``name`` is a plain file name: no folder, no ``..``, nothing a path could be made of."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name not in (".", "..")
        and not any(char in name for char in "/\\\0:")
    )


def header_bytes(job: str, role: str, size: int, name: str | None = None) -> bytes:
    """The 4 + H bytes that open the message of a file of ``size`` bytes."""
    header = {"job": job, "role": role, "size": size, **({"name": name} if name is not None else {})}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(encoded) > MAX_HEADER_BYTES:
        raise ValueError(f"a frame header must be at most {MAX_HEADER_BYTES} bytes, got {len(encoded)}")
    return HEADER_LENGTH.pack(len(encoded)) + encoded


def message_size(job: str, role: str, size: int, name: str | None = None) -> int:
    """The length of the whole message carrying a file of ``size`` bytes (what a receiver's size limit counts)."""
    return len(header_bytes(job, role, size, name)) + size


def fragments(job: str, role: str, payload: bytes, name: str | None = None) -> list:
    """The message of one file as fragments for ``websocket.send``: the header, then `FRAGMENT_BYTES` pieces."""
    view = memoryview(payload)
    return [header_bytes(job, role, len(view), name)] + [
        view[start : start + FRAGMENT_BYTES] for start in range(0, len(view), FRAGMENT_BYTES)
    ]


def parse(message: bytes, role_ok: Callable[[str], bool]) -> tuple[dict, memoryview]:
    """The header and payload of a whole binary message; raises `FrameError` saying what is wrong."""
    reader = FrameReader(role_ok)
    payload = reader.feed(message)
    reader.finish()
    return reader.header, payload


class FrameReader:
    """A binary message read as it arrives, fragment by fragment: `feed` returns the payload bytes of each fragment
    once the header is complete (`header`), `finish` checks that exactly the announced size came."""

    def __init__(self, role_ok: Callable[[str], bool]):
        self.role_ok = role_ok
        self.header: dict | None = None
        self.received = 0
        self._opening = bytearray()

    def feed(self, fragment: bytes) -> memoryview:
        payload = memoryview(fragment)
        if self.header is None:
            if self._opening:  # the header came split over fragments (a proxy may cut a message anywhere)
                self._opening += fragment
                payload = memoryview(self._opening)
            if len(payload) < HEADER_LENGTH.size:
                self._opening = bytearray(payload)
                return memoryview(b"")
            (length,) = HEADER_LENGTH.unpack_from(payload)
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise FrameError(f"a binary frame's header length must be 2 to {MAX_HEADER_BYTES} bytes, got {length}")
            end = HEADER_LENGTH.size + length
            if len(payload) < end:
                self._opening = bytearray(payload)
                return memoryview(b"")
            self.header = _checked_header(bytes(payload[HEADER_LENGTH.size : end]), self.role_ok)
            payload, self._opening = payload[end:], bytearray()
        self.received += len(payload)
        if self.received > self.header["size"]:
            raise FrameError(
                f"the {self.header['role']} frame of job {self.header['job']!r} announces {self.header['size']} bytes "
                "but carries more"
            )
        return payload

    def finish(self) -> None:
        if self.header is None:
            needed = (
                HEADER_LENGTH.size
                if len(self._opening) < HEADER_LENGTH.size
                else HEADER_LENGTH.size + HEADER_LENGTH.unpack_from(self._opening)[0]
            )
            raise FrameError(
                f"a binary frame of {len(self._opening)} bytes ends before its header ({needed} bytes): a file frame "
                "is a 4-byte big-endian header length, the JSON header, then the file"
            )
        if self.received != self.header["size"]:
            raise FrameError(
                f"the {self.header['role']} frame of job {self.header['job']!r} announces {self.header['size']} bytes "
                f"but carries {self.received}"
            )


def _checked_header(encoded: bytes, role_ok: Callable[[str], bool]) -> dict:
    try:
        header = json.loads(encoded.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FrameError(f"a binary frame's header is not UTF-8 JSON ({error})") from None
    if not isinstance(header, dict) or not {"job", "role", "size"} <= set(header) <= _HEADER_KEYS:
        raise FrameError(f"a binary frame's header must be an object of job, role, size (and name), got {header!r}")
    job, role, size, name = header["job"], header["role"], header["size"], header.get("name")
    if not isinstance(job, str) or not 0 < len(job) <= MAX_JOB_ID_CHARS:
        raise FrameError(f"a binary frame's job must be a string of 1 to {MAX_JOB_ID_CHARS} characters, got {job!r}")
    if not isinstance(role, str) or not role_ok(role):
        raise FrameError(f"a binary frame has the unknown role {role!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FrameError(f"a binary frame's size must be a whole number of bytes, got {size!r}")
    if name is not None and not is_plain_name(name):
        raise FrameError(f"a binary frame names its file {name!r}, which is not a plain file name")
    return header

