"""Counting the records of a TFRecord file from its framing alone, without TensorFlow.

A TFRecord file is a sequence of records: uint64 little-endian payload length, uint32 masked CRC-32C of those 8
bytes, the payload, uint32 masked CRC-32C of the payload. `count_records` checks every length and its checksum and
skips the payloads (not checksummed here: that would mean reading the whole file), so a truncated or foreign file
is caught quickly.
"""

from __future__ import annotations

import struct
from pathlib import Path

from kfac_repro.data.locations import DataNotFoundError

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_MASK_DELTA = 0xA282EAD8


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data`."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant, mod 2^32."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def count_records(path: Path) -> int:
    """Number of records in TFRecord file `path`; DataNotFoundError at the first bad header or a truncated file."""
    try:
        size = path.stat().st_size
        count = 0
        with open(path, "rb") as handle:
            while (offset := handle.tell()) < size:
                header = handle.read(12)
                if len(header) < 12:
                    raise DataNotFoundError(f"{path}: truncated record header at byte {offset}")
                length_bytes, checksum = header[:8], struct.unpack("<I", header[8:])[0]
                if masked_crc32c(length_bytes) != checksum:
                    raise DataNotFoundError(f"{path}: record {count} at byte {offset}: bad length checksum "
                                            "(not a TFRecord file, or corrupt)")
                end = offset + 12 + struct.unpack("<Q", length_bytes)[0] + 4
                if end > size:
                    raise DataNotFoundError(f"{path}: record {count} at byte {offset} runs past the end of the "
                                            "file (truncated)")
                handle.seek(end)
                count += 1
    except DataNotFoundError:
        raise
    except OSError as error:  # DataNotFoundError is an OSError too, hence the clause above
        raise DataNotFoundError(f"{path}: cannot read ({error})") from error
    return count
