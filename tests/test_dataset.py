"""Reading datasets: the memmap, clear errors, the split and the window samplers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from tildekit.errors import TildekitError
from tildekit.models import synthetic
from tildekit.models.dataset import AudioDataset, RandomWindows, Segment, SequentialWindows
from tildekit.models.preprocess import DATA_FILE, FORMAT_VERSION, INDEX_FILE, preprocess

SR = 8000


def build(root: Path, seconds: list[float], channels: int = 1, name: str = "ds") -> AudioDataset:
    """A dataset of one chirp file per entry of ``seconds`` (distinct content per file)."""
    source = root / f"{name}_in"
    for i, length in enumerate(seconds):
        audio = synthetic.chirp(100.0 + 50 * i, 2000.0, length, SR, kind="exponential")
        if channels == 2:
            audio = np.stack([audio, -audio], axis=1)
        source.mkdir(parents=True, exist_ok=True)
        sf.write(source / f"f{i:02d}.wav", audio, SR, subtype="FLOAT")
    preprocess(source, root / name, SR, channels=channels, progress=False)
    return AudioDataset(root / name)


@pytest.fixture
def three_files(tmp_path: Path) -> AudioDataset:
    return build(tmp_path, [1.0, 0.5, 2.0])


def test_opens_index_and_memmap(three_files: AudioDataset) -> None:
    ds = three_files
    assert (ds.sample_rate, ds.channels, ds.total_samples) == (SR, 1, int(3.5 * SR))
    assert [f.path for f in ds.files] == ["f00.wav", "f01.wav", "f02.wav"]
    assert [(f.start, f.length) for f in ds.files] == [(0, 8000), (8000, 4000), (12000, 16000)]
    assert isinstance(ds.data, np.memmap) and ds.data.shape == (1, ds.total_samples)
    assert ds.data.dtype == np.float32 and not ds.data.flags.writeable
    source, _ = sf.read(ds.path.parent / "ds_in" / "f01.wav", dtype="float32")
    assert np.array_equal(ds.read(8000, 4000)[0], source)
    with pytest.raises(IndexError):
        ds.read(ds.total_samples - 10, 20)


def test_pickles_without_copying_the_audio(three_files: AudioDataset) -> None:
    _ = three_files.data  # opened
    blob = pickle.dumps(three_files)
    assert len(blob) < three_files.total_samples  # far less than the 4 bytes per sample
    clone = pickle.loads(blob)
    assert np.array_equal(clone.read(0, 100), three_files.read(0, 100))


def test_not_a_dataset_errors_are_clear(tmp_path: Path, three_files: AudioDataset) -> None:
    with pytest.raises(TildekitError, match="does not exist.*tildekit preprocess"):
        AudioDataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(TildekitError, match="not a tildekit dataset"):
        AudioDataset(tmp_path / "plain")

    index_file = three_files.path / INDEX_FILE
    original = index_file.read_text()
    index_file.write_text("{ not json")
    with pytest.raises(TildekitError, match="not readable JSON"):
        AudioDataset(three_files.path)

    newer = json.loads(original)
    newer["version"] = FORMAT_VERSION + 1
    index_file.write_text(json.dumps(newer))
    with pytest.raises(TildekitError, match="newer tildekit"):
        AudioDataset(three_files.path)

    index_file.write_text(original)
    data_file = three_files.path / DATA_FILE
    data_file.write_bytes(data_file.read_bytes()[:-8])
    with pytest.raises(TildekitError, match="bytes, the index expects"):
        AudioDataset(three_files.path)


def test_split_holds_out_file_tails_when_files_are_few(three_files: AudioDataset) -> None:
    train, validation = three_files.split(0.1, seed=0)
    assert [s.length for s in validation] == [800, 400, 1600]
    for t, v, f in zip(train, validation, three_files.files):
        assert t.start == f.start and t.end == v.start and v.end == f.start + f.length
    assert three_files.split(0.1, seed=0) == (train, validation)
    assert three_files.split(0.0) == (three_files.segments(), [])
    with pytest.raises(TildekitError, match="validation fraction"):
        three_files.split(1.0)


def test_split_holds_out_whole_files_when_there_are_enough(tmp_path: Path) -> None:
    ds = build(tmp_path, [0.25 + 0.05 * (i % 4) for i in range(12)])
    train, validation = ds.split(0.1, seed=3)
    held = {s.file for s in validation}
    assert held and {s.file for s in train} == set(range(12)) - held
    assert all(s.length == ds.files[s.file].length for s in validation)  # whole files
    share = sum(s.length for s in validation) / ds.total_samples
    assert 0.05 <= share <= 0.2
    assert ds.split(0.1, seed=3) == (train, validation)  # deterministic
    assert any({s.file for s in ds.split(0.1, seed=k)[1]} != held for k in range(4, 10))


def test_random_windows_are_deterministic_and_inside_segments(three_files: AudioDataset) -> None:
    train, _ = three_files.split(0.1, seed=0)
    window = 1000
    windows = RandomWindows(three_files, train, window, length=300, seed=7)
    assert len(windows) == 300
    again = RandomWindows(three_files, train, window, length=300, seed=7)
    # Item i depends on (seed, i) only: any access order gives the same tensors.
    order = list(range(300))[::-1]
    reversed_items = {i: again[i] for i in order}
    for i in range(300):
        item = windows[i]
        assert item.dtype == torch.float32 and item.shape == (1, window)
        assert torch.equal(item, reversed_items[i])
        start = windows.start_of(i)
        assert any(s.start <= start and start + window <= s.end for s in train)
        assert np.array_equal(item.numpy(), three_files.read(start, window))
    other = RandomWindows(three_files, train, window, length=300, seed=8)
    assert [other.start_of(i) for i in range(20)] != [windows.start_of(i) for i in range(20)]
    with pytest.raises(IndexError):
        windows[300]


def test_random_windows_sample_in_proportion_to_length(three_files: AudioDataset) -> None:
    segments = [Segment(0, 0, 3000), Segment(2, 12000, 9000)]  # 2001 and 8001 positions
    windows = RandomWindows(three_files, segments, 1000, length=5000, seed=0)
    in_second = np.mean([windows.start_of(i) >= 12000 for i in range(5000)])
    assert 0.75 < in_second < 0.85  # expected 8001 / 10002 = 0.80


def test_random_windows_skip_short_segments_and_refuse_when_none_fit(three_files: AudioDataset) -> None:
    segments = three_files.segments()
    windows = RandomWindows(three_files, segments, 6000, length=50, seed=1)
    assert all(windows.start_of(i) < 4000 or windows.start_of(i) >= 12000 for i in range(50))
    with pytest.raises(TildekitError, match="as long as one training window"):
        RandomWindows(three_files, segments, 20000, length=10)


def test_random_windows_batch_through_a_dataloader(tmp_path: Path) -> None:
    ds = build(tmp_path, [0.5, 0.75], channels=2)
    windows = RandomWindows(ds, ds.segments(), 512, length=12, seed=0)
    batches = list(DataLoader(windows, batch_size=4, num_workers=0))
    assert len(batches) == 3 and batches[0].shape == (4, 2, 512)
    assert torch.equal(batches[1][0], windows[4])
    assert torch.equal(batches[1][0][0], -batches[1][0][1])  # stereo layout kept


def test_sequential_windows_tile_segments_without_overlap(three_files: AudioDataset) -> None:
    _, validation = three_files.split(0.25, seed=0)  # tails of 2000, 1000, 4000 samples
    windows = SequentialWindows(three_files, validation, 900)
    assert len(windows) == 2 + 1 + 4
    assert windows.starts == [6000, 6900, 11000, 24000, 24900, 25800, 26700]
    assert all(w.shape == (1, 900) for w in windows)
    assert torch.equal(windows[3], torch.from_numpy(three_files.read(24000, 900)))
    assert SequentialWindows(three_files, validation, 900).starts == windows.starts
    assert len(SequentialWindows(three_files, validation, 5000)) == 0
    with pytest.raises(IndexError):
        windows[7]
