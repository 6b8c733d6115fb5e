"""SWDS v2: round trip, alignment of every record, volume roll-over, corruption names shard and offset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import ShardCorruptError
from builder.volumes import INDEX_NAME, RECORD_HEADER, DatasetReader, VolumeWriter, volume_name


def write(tmp_path, records, alignment=64, volume=1024):
    writer = VolumeWriter(tmp_path, alignment, volume)
    for data, label in records:
        writer.add(data, label)
    return writer.close()


def sample(n=40, seed=0, max_len=300):
    rng = random.Random(seed)
    return [(rng.randbytes(rng.randint(0, max_len)), rng.randbytes(rng.randint(0, 4))) for _ in range(n)]


def test_round_trip_random_and_sequential(tmp_path):
    records = sample()
    write(tmp_path, records)
    with DatasetReader(tmp_path) as reader:
        assert len(reader) == len(records)
        assert [(r.data, r.label) for r in reader] == records
        for i in (0, 17, len(records) - 1, -1):
            assert (reader[i].data, reader[i].label) == records[i]
        assert [r.index for r in reader.iter_records(5, 9)] == [5, 6, 7, 8]
        with pytest.raises(IndexError):
            reader[len(records)]


@pytest.mark.parametrize("alignment", [16, 64, 512, 4096])
def test_every_record_starts_on_an_alignment_boundary(tmp_path, alignment):
    records = sample(60, seed=alignment, max_len=5000)
    write(tmp_path, records, alignment=alignment, volume=64 * 1024)
    from builder.volumes import INDEX_ENTRY, INDEX_HEADER

    raw = (tmp_path / INDEX_NAME).read_bytes()
    offsets = []
    for i in range(len(records)):
        volume, offset, data_len, label_len, _ = INDEX_ENTRY.unpack_from(raw, INDEX_HEADER.size + i * INDEX_ENTRY.size)
        offsets.append((volume, offset, data_len + label_len))
        assert offset % alignment == 0, f"record {i} at {offset} is off a {alignment}-byte boundary"
    # records are packed: each starts where the previous one's aligned size ends (no double-counted header)
    for (v1, o1, n1), (v2, o2, _) in zip(offsets, offsets[1:]):
        if v1 == v2:
            expected = o1 + -(-(RECORD_HEADER.size + n1) // alignment) * alignment
            assert o2 == expected
    for volume in {v for v, _, _ in offsets}:
        assert (tmp_path / volume_name(volume)).stat().st_size % alignment == 0


def test_volumes_roll_over_at_volume_size(tmp_path):
    records = [(b"x" * 100, b"l")] * 30  # 32 + 101 -> 192 bytes aligned to 64
    volumes = write(tmp_path, records, alignment=64, volume=1024)
    assert [v.records for v in volumes] == [5] * 6
    assert all(v.size <= 1024 for v in volumes)
    assert sorted(p.name for p in tmp_path.glob("*.swds")) == [volume_name(i) for i in range(6)]


def test_record_bigger_than_a_volume_gets_a_volume_of_its_own(tmp_path):
    records = [(b"a" * 10, b""), (b"b" * 5000, b"big"), (b"c" * 10, b"")]
    volumes = write(tmp_path, records, alignment=64, volume=1024)
    assert [v.records for v in volumes] == [1, 1, 1]
    assert volumes[1].size > 1024
    with DatasetReader(tmp_path) as reader:
        assert reader[1].data == b"b" * 5000 and reader[1].label == b"big"


def test_empty_payloads_round_trip(tmp_path):
    write(tmp_path, [(b"", b""), (b"", b"x")])
    with DatasetReader(tmp_path) as reader:
        assert [(r.data, r.label) for r in reader] == [(b"", b""), (b"", b"x")]


def flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_payload_byte_names_shard_offset_and_record(tmp_path):
    write(tmp_path, [(b"a" * 40, b"1"), (b"b" * 40, b"2")], alignment=128)
    flip(tmp_path / volume_name(0), 128 + RECORD_HEADER.size + 3)
    with DatasetReader(tmp_path) as reader:
        assert reader[0].data == b"a" * 40
        with pytest.raises(ShardCorruptError) as info:
            reader[1]
    err = info.value
    assert err.shard.endswith(volume_name(0)) and err.record == 1 and err.offset == 128 + RECORD_HEADER.size
    assert "payload checksum" in str(err)


@pytest.mark.parametrize(("offset", "words"), [(0, "bad record magic"), (16, "header does not match"), (6, "header does not match")])
def test_flipped_header_byte_is_caught_before_lengths_are_trusted(tmp_path, offset, words):
    write(tmp_path, [(b"a" * 40, b"1")])
    flip(tmp_path / volume_name(0), offset)
    with DatasetReader(tmp_path) as reader, pytest.raises(ShardCorruptError, match=words) as info:
        reader[0]
    assert info.value.offset == 0 and info.value.record == 0


def test_flipped_index_byte_fails_the_index_checksum(tmp_path):
    write(tmp_path, sample(5))
    flip(tmp_path / INDEX_NAME, 50)
    with pytest.raises(ShardCorruptError, match="index checksum mismatch"):
        DatasetReader(tmp_path)


def test_truncated_volume_is_reported(tmp_path):
    write(tmp_path, [(b"a" * 40, b"1"), (b"b" * 40, b"2")], alignment=16, volume=4096)
    path = tmp_path / volume_name(0)
    path.write_bytes(path.read_bytes()[:100])
    with DatasetReader(tmp_path) as reader, pytest.raises(ShardCorruptError, match="truncated") as info:
        reader[1]
    assert info.value.record == 1


def test_truncated_index_and_missing_files(tmp_path):
    write(tmp_path, sample(5))
    index = tmp_path / INDEX_NAME
    raw = index.read_bytes()
    index.write_bytes(raw[:-7])
    with pytest.raises(ShardCorruptError, match="expected"):
        DatasetReader(tmp_path)
    index.write_bytes(raw)
    (tmp_path / volume_name(0)).unlink()
    with DatasetReader(tmp_path) as reader, pytest.raises(ShardCorruptError, match="volume file is missing"):
        reader[0]
    index.unlink()
    with pytest.raises(ShardCorruptError, match="index file is missing"):
        DatasetReader(tmp_path)


def test_writing_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write(a, sample(30))
    write(b, sample(30))
    for f in sorted(p.name for p in a.iterdir()):
        assert (a / f).read_bytes() == (b / f).read_bytes()


@settings(max_examples=40, deadline=None)
@given(
    records=st.lists(st.tuples(st.binary(max_size=700), st.binary(max_size=20)), min_size=1, max_size=30),
    alignment_exp=st.integers(min_value=0, max_value=10),
    volume=st.integers(min_value=1, max_value=4096),
)
def test_property_round_trip(tmp_path_factory, records, alignment_exp, volume):
    directory = tmp_path_factory.mktemp("prop")
    alignment = 1 << alignment_exp
    volumes = write(directory, records, alignment=alignment, volume=max(volume, alignment))
    assert sum(v.records for v in volumes) == len(records)
    with DatasetReader(directory) as reader:
        assert [(r.data, r.label) for r in reader] == records
