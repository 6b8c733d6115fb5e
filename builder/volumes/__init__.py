"""SWDS v2: the binary volume format datasets are stored in (byte layout in ``docs/volume-format.md``).

A dataset directory holds volume files ``data-00000.swds``, ``data-00001.swds``... and one index
``index.swidx``. Every record starts on a multiple of ``alignment_size`` inside its volume, behind a 32-byte
header that carries its own CRC (so a flipped length is caught before it is trusted) and the CRC of the payload.
The index maps record *i* to (volume, offset, lengths, payload crc) in fixed-size entries, so random access is
O(1) and needs no scan. Starwhale's SWDS v1 counted the header twice when padding (records drifted off
alignment) and never checked its CRC on read; both are fixed here and tested.

The byte layout is :mod:`~builder.volumes.format`, the writer :mod:`~builder.volumes.writer`, the manifest check
:mod:`~builder.volumes.manifest` and the reader :mod:`~builder.volumes.reader`; this module names what callers use.
"""

from builder.volumes.format import INDEX_ENTRY, INDEX_HEADER, INDEX_NAME, RECORD_HEADER, volume_name
from builder.volumes.manifest import MANIFEST_NAME, ManifestError, VolumeFile, manifest_layout, plain_name_problem
from builder.volumes.reader import DatasetReader, Record
from builder.volumes.writer import VolumeInfo, VolumeWriter

__all__ = ["INDEX_ENTRY", "INDEX_HEADER", "INDEX_NAME", "MANIFEST_NAME", "RECORD_HEADER", "DatasetReader",
           "ManifestError", "Record", "VolumeFile", "VolumeInfo", "VolumeWriter", "manifest_layout",
           "plain_name_problem", "volume_name"]
