"""What the runner's speed-ups must not change: record order, errors naming their record, Ctrl-C, bounded memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from builder import volumes
from builder.api.metric import multi_classification
from builder.api.model import PipelineHandler
from builder.errors import ShardCorruptError
from builder.evaluate.runner.run import EvalInterrupted, run_evaluation
from builder.runs.folder import RESULTS
from builder.evaluate.runner.prefetch import read_ahead
from builder.volumes import DatasetReader, Record, VolumeWriter


def make_dataset(folder: Path, count: int, size: int = 100, volume_size: int = 16 << 10) -> Path:
    folder.mkdir()
    writer = VolumeWriter(folder, 512, volume_size)
    for i in range(count):
        writer.add(bytes([i % 251]) * size, bytes([i % 10]))
    writer.close()
    return folder


class Echo(PipelineHandler):
    """Predicts the record's first byte mod 10; optionally stops with Ctrl-C at one record."""

    def __init__(self, interrupt_at: int | None = None, batch_size: int = 1):
        super().__init__(batch_size=batch_size)
        self.interrupt_at = interrupt_at

    def ppl(self, data, **kw):
        if self.batching:
            return [d[0] % 10 for d in data]
        if kw["index"] == self.interrupt_at:
            raise KeyboardInterrupt
        return data[0] % 10

    def handle_label(self, label, **kw):
        return label[0]

    @multi_classification(all_labels=list(range(10)), show_roc_auc=False)
    def cmp(self, _data_loader):
        rows = list(_data_loader)
        return [r["label"] for r in rows], [r["result"] for r in rows]


def test_read_ahead_keeps_order_and_every_record():
    recs = [Record(i, bytes([i % 256]) * (i % 7), b"") for i in range(1000)]
    assert list(read_ahead(iter(recs), chunk_records=7, depth=2)) == recs
    assert list(read_ahead([])) == []


def test_read_ahead_stays_bounded_while_the_consumer_waits():
    pulled = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield Record(i, b"x", b"")

    ahead = read_ahead(source(), chunk_records=10, depth=2)
    assert next(ahead).index == 0
    time.sleep(0.3)
    # the chunk being consumed, `depth` chunks queued and one chunk the reader holds while it waits to queue it
    assert len(pulled) <= 10 * 4, len(pulled)
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "swcli-read-ahead"]


def test_a_reading_error_is_raised_after_the_records_before_it():
    def source():
        for i in range(150):
            yield Record(i, b"x", b"")
        raise ShardCorruptError(Path("data-00000.swds"), 4096, "payload checksum mismatch", record=150)

    got = []
    with pytest.raises(ShardCorruptError, match="150"):
        for rec in read_ahead(source(), chunk_records=64):
            got.append(rec.index)
    assert got == list(range(150))


def test_a_corrupt_record_under_read_ahead_is_named_and_the_records_before_it_kept(tmp_path):
    data = make_dataset(tmp_path / "ds", 300)
    reader = DatasetReader(data)
    volume, offset = volumes.INDEX_ENTRY.unpack_from(reader._index, volumes.INDEX_HEADER.size + 200 * volumes.INDEX_ENTRY.size)[:2]
    reader.close()
    path = data / volumes.volume_name(volume)
    raw = bytearray(path.read_bytes())
    raw[offset + volumes.RECORD_HEADER.size + 3] ^= 0xFF  # flip a payload byte of record 200
    path.write_bytes(bytes(raw))
    out = tmp_path / "out"
    with DatasetReader(data) as reader, pytest.raises(ShardCorruptError) as err:
        run_evaluation(Echo(), reader, out)
    assert "record 200" in str(err.value) and path.name in str(err.value)
    kept = (out / f"{RESULTS}.partial").read_text().splitlines()
    assert len(kept) == 200 and kept[-1].startswith('{"index":199,')


def test_ctrl_c_is_130_with_the_records_predicted_kept_and_the_reader_stopped(tmp_path):
    out = tmp_path / "out"
    with DatasetReader(make_dataset(tmp_path / "ds", 500)) as reader, pytest.raises(EvalInterrupted) as err:
        run_evaluation(Echo(interrupt_at=321), reader, out)
    assert err.value.exit_code == 130
    assert "interrupted after 321 records" in str(err.value)
    assert len((out / f"{RESULTS}.partial").read_text().splitlines()) == 321
    assert not [t for t in threading.enumerate() if t.name == "swcli-read-ahead"]


@pytest.mark.parametrize("batch_size", [1, 32])
def test_results_equal_a_plain_loop_over_the_reader(tmp_path, batch_size):
    with DatasetReader(make_dataset(tmp_path / "ds", 700)) as reader:
        result = run_evaluation(Echo(batch_size=batch_size), reader, tmp_path / "out")
        expected = [f'{{"index":{r.index},"label":{r.label[0]},"result":{r.data[0] % 10},"pr":null,"error":null}}'
                    for r in reader]
    assert (tmp_path / "out" / RESULTS).read_text().splitlines() == expected
    assert result.metrics["record_count"] == 700


def test_a_sequential_walk_hands_back_what_it_read(tmp_path, monkeypatch):
    monkeypatch.setattr(volumes.reader, "RELEASE_EVERY", 4096)  # release pages often, inside every volume
    data = make_dataset(tmp_path / "ds", 400, size=2000, volume_size=64 << 10)
    with DatasetReader(data) as reader:
        assert reader._volume_count > 5
        walked = []
        for rec in reader.iter_records():
            walked.append(rec)
            assert len(reader._volumes) == 1  # only the volume being read stays mapped
        assert [r.index for r in walked] == list(range(400))
        assert all(r.data == bytes([r.index % 251]) * 2000 for r in walked)  # pages read again after a release
        assert reader[3].data == walked[3].data and reader[399].label == bytes([9])


def test_cmp_names_the_libraries_the_runner_loads_early():
    assert Echo().cmp.imports == ("sklearn.metrics",)
