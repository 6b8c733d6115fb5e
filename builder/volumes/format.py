"""The SWDS v2 byte layout (``docs/volume-format.md``): file names, the record header and the index's structs.

Every record starts on a multiple of the alignment inside its volume, behind a 32-byte header that carries its own
CRC (so a flipped length is caught before it is trusted) and the CRC of the payload. The index is a header, one
fixed-size entry per record (volume, offset, lengths, payload crc) and a CRC trailer. The writer and the reader
both take their constants from here; nothing in this module touches a file.
"""

from __future__ import annotations

import struct
import zlib

RECORD_MAGIC = b"SWR2"
INDEX_MAGIC = b"SWIX"
FORMAT_VERSION = 2
INDEX_NAME = "index.swidx"
MAX_PART = 0xFFFFFFFF  # data and label lengths are u32

# magic, header crc, record index, data length, label length, payload crc, reserved
RECORD_HEADER = struct.Struct("<4sIQIIII")
# magic, format version, flags, record count, entry size, volume count, alignment, reserved
INDEX_HEADER = struct.Struct("<4sHHQIIQQ")
# volume, offset, data length, label length, payload crc
INDEX_ENTRY = struct.Struct("<IQIII")
INDEX_TRAILER = struct.Struct("<I")  # crc32 of header + entries


def volume_name(number: int) -> str:
    return f"data-{number:05d}.swds"


def align_up(size: int, alignment: int) -> int:
    """Round ``size`` up to a multiple of ``alignment`` (a power of two)."""
    return (size + alignment - 1) & ~(alignment - 1)


def record_header(index: int, data_len: int, label_len: int, payload_crc: int) -> bytes:
    """The 32-byte header; its CRC covers every other header field, so no field is trusted unchecked."""
    body = struct.pack("<QIII I", index, data_len, label_len, payload_crc, 0)
    return RECORD_HEADER.pack(RECORD_MAGIC, zlib.crc32(body), index, data_len, label_len, payload_crc, 0)
