"""A small, real MP4 for the fake video model, built box by box (no video library needed).

The frames are JPEG stills of the prompt (Pillow), carried as MPEG-4 Part 2 visual with the
JPEG object type (0x6C), which ffmpeg and VLC play as Motion JPEG; the container (ftyp, mdat,
moov with one video track and its sample tables) is what a real video model returns. `size`
pads it with a `free` box, which players skip, so a test can make a video too large for a
platform without making a longer one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from bot.sandbox.render import render_image

WIDTH, HEIGHT = 160, 90  # small on purpose: the sandbox stays fast
FPS = 2
SECONDS = 6  # as minimax/video-01 makes
TIMESCALE = 1000
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
CONTENT_TYPE = "video/mp4"


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _descriptor(tag: int, body: bytes) -> bytes:
    return bytes([tag, len(body)]) + body  # every body here is under 128 bytes


def _esds() -> bytes:
    decoder = _descriptor(0x04, bytes([0x6C, 0x11]) + b"\x00\x00\x00" + b"\x00" * 8)
    es = _descriptor(0x03, b"\x00\x00\x00" + decoder + _descriptor(0x06, b"\x02"))
    return _full(b"esds", 0, 0, es)


def _sample_entry() -> bytes:
    return _box(
        b"mp4v",
        b"\x00" * 6 + struct.pack(">H", 1),  # reserved, data_reference_index
        b"\x00" * 16,  # pre_defined, reserved
        struct.pack(">HHII", WIDTH, HEIGHT, 0x480000, 0x480000),
        b"\x00" * 4 + struct.pack(">H", 1) + b"\x00" * 32,  # reserved, frame_count, name
        struct.pack(">Hh", 0x18, -1),
        _esds(),
    )


def _stbl(sizes: Sequence[int], first_offset: int) -> bytes:
    delta = TIMESCALE // FPS
    return _box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry()),
        _full(b"stts", 0, 0, struct.pack(">III", 1, len(sizes), delta)),
        _full(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(sizes), 1)),
        _full(
            b"stsz", 0, 0, struct.pack(">II", 0, len(sizes)), *(struct.pack(">I", s) for s in sizes)
        ),
        _full(b"stco", 0, 0, struct.pack(">II", 1, first_offset)),
    )


def _moov(sizes: Sequence[int], first_offset: int) -> bytes:
    duration = SECONDS * TIMESCALE
    mvhd = _full(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, TIMESCALE, duration),
        struct.pack(">IH", 0x10000, 0x100) + b"\x00" * 10,
        _MATRIX,
        b"\x00" * 24,
        struct.pack(">I", 2),
    )
    tkhd = _full(
        b"tkhd",
        0,
        3,  # enabled, in the movie
        struct.pack(">IIII", 0, 0, 1, 0),
        struct.pack(">I", duration) + b"\x00" * 8,
        struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX,
        struct.pack(">II", WIDTH << 16, HEIGHT << 16),
    )
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, duration, 0x55C4, 0))
    hdlr = _full(b"hdlr", 0, 0, b"\x00" * 4, b"vide", b"\x00" * 12, b"VideoHandler\x00")
    dinf = _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1)))
    vmhd = _full(b"vmhd", 0, 1, b"\x00" * 8)
    minf = _box(b"minf", vmhd, dinf, _stbl(sizes, first_offset))
    return _box(b"moov", mvhd, _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)))


def render_video(prompt: str, seed: int = 0, size: int = 0) -> bytes:
    """An MP4 of SECONDS seconds showing `prompt`, padded to at least `size` bytes."""
    frames = [
        render_image(
            prompt,
            seed=seed,
            index=index,
            total=SECONDS * FPS,
            size=(WIDTH, HEIGHT),
            fmt="jpg",
            quality=60,
        )
        for index in range(SECONDS * FPS)
    ]
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2mp41")
    mdat = _box(b"mdat", *frames)
    first = len(ftyp) + 8  # the first frame, just past mdat's header
    video = ftyp + mdat + _moov([len(f) for f in frames], first)
    if size > len(video):
        padding = max(size - len(video) - 8, 0)
        video += struct.pack(">I", 8 + padding) + b"free" + bytes(padding)
    return video
