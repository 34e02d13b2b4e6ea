"""preprocess: real files of every format written to tmp_path, decoded, checked and stored."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.models import synthetic
from tildekit.models.preprocess import DATA_FILE, INDEX_FILE, preprocess

SR = 8000


def tone(seconds: float, sample_rate: int = SR, frequency: float = 220.0, seed: int = 0) -> np.ndarray:
    return synthetic.harmonic_tone(frequency, seconds, sample_rate, harmonics=4,
                                   vibrato_depth=0.01, seed=seed)


def write(path: Path, audio: np.ndarray, sample_rate: int = SR, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, **kwargs)
    return path


def stored(dataset_dir: Path) -> tuple[dict, np.ndarray]:
    index = json.loads((dataset_dir / INDEX_FILE).read_text())
    data = np.fromfile(dataset_dir / DATA_FILE, dtype=np.float32)
    return index, data.reshape(index["channels"], index["total_samples"])


def entry(index: dict, path: str) -> dict:
    return next(f for f in index["files"] if f["path"] == path)


def siblings(dataset_dir: Path) -> list[str]:
    """Everything next to the dataset except the input folder and the dataset itself."""
    return sorted(p.name for p in dataset_dir.parent.iterdir() if p.name not in ("in", dataset_dir.name))


# ----------------------------------------------------------------------------- synthetic audio


def test_synthetic_generators_are_deterministic_float32_in_range() -> None:
    sounds = [
        synthetic.harmonic_tone(440.0, 0.5, SR, vibrato_depth=0.02, seed=3),
        synthetic.chirp(100.0, 3000.0, 0.5, SR, kind="linear"),
        synthetic.chirp(100.0, 3000.0, 0.5, SR, kind="exponential"),
        synthetic.noise_burst(0.5, SR, seed=3, low_hz=200.0, high_hz=1000.0),
    ]
    for sound in sounds:
        assert sound.dtype == np.float32 and sound.shape == (SR // 2,)
        assert np.all(np.abs(sound) <= 1.0) and np.max(np.abs(sound)) > 0.05
    assert np.array_equal(sounds[0], synthetic.harmonic_tone(440.0, 0.5, SR, vibrato_depth=0.02, seed=3))
    assert np.array_equal(sounds[3], synthetic.noise_burst(0.5, SR, seed=3, low_hz=200.0, high_hz=1000.0))
    assert not np.array_equal(sounds[3], synthetic.noise_burst(0.5, SR, seed=4, low_hz=200.0, high_hz=1000.0))
    # The filtered burst keeps its energy inside the band.
    spectrum = np.abs(np.fft.rfft(sounds[3])) ** 2
    freqs = np.fft.rfftfreq(len(sounds[3]), 1 / SR)
    assert spectrum[(freqs >= 200) & (freqs <= 1000)].sum() > 0.99 * spectrum.sum()


def test_example_folder_preprocesses(tmp_path: Path) -> None:
    paths = synthetic.write_example_folder(tmp_path / "in", seconds=14.0, sample_rate=SR, seed=1)
    assert any(p.parent.name == "more" for p in paths) and len(paths) >= 4
    again = synthetic.write_example_folder(tmp_path / "again", seconds=14.0, sample_rate=SR, seed=1)
    assert all(np.array_equal(sf.read(a)[0], sf.read(b)[0]) for a, b in zip(paths, again))

    report = preprocess(tmp_path / "in", tmp_path / "ds", SR, min_samples=SR, progress=False)
    assert len(report.kept) == len(paths) and not report.skipped
    assert report.total_samples == len(paths) * round(14.0 / len(paths) * SR)
    assert "more/" in " ".join(k.path for k in report.kept)


# ----------------------------------------------------------------------------- reading


def test_reads_every_format_recursively(tmp_path: Path) -> None:
    source = tmp_path / "in"
    audio = tone(0.5)
    write(source / "a.wav", audio)
    write(source / "b.flac", audio)
    write(source / "c.ogg", audio)
    write(source / "sub" / "d.aiff", audio)
    write(source / "sub" / "deeper" / "e.aif", audio, format="AIFF")
    (source / "notes.txt").write_text("not audio")
    write(source / ".hidden.wav", audio)  # e.g. a macOS resource fork: ignored
    expected = {"a.wav", "b.flac", "c.ogg", "sub/d.aiff", "sub/deeper/e.aif"}
    try:
        write(source / "f.mp3", audio, format="MP3")
        expected.add("f.mp3")
    except (sf.LibsndfileError, TypeError, ValueError):
        pass  # this libsndfile cannot encode mp3; reading it is covered by the other formats

    report = preprocess(source, tmp_path / "ds", SR, min_samples=SR // 4, progress=False)
    assert {k.path for k in report.kept} == expected and not report.skipped
    index, data = stored(tmp_path / "ds")
    for lossless in ("a.wav", "b.flac", "sub/d.aiff", "sub/deeper/e.aif"):
        item = entry(index, lossless)
        assert item["length"] == len(audio)
        # 16-bit storage: equal to the input up to quantisation.
        assert np.max(np.abs(data[0, item["start"]:item["start"] + item["length"]] - audio)) < 1e-3
    for lossy in {"c.ogg", "f.mp3"} & expected:
        assert abs(entry(index, lossy)["length"] - len(audio)) < 0.1 * SR


def test_stereo_is_mixed_to_mono_and_mono_duplicated_for_stereo(tmp_path: Path) -> None:
    source = tmp_path / "in"
    left, right = tone(0.5, frequency=200.0), tone(0.5, frequency=330.0, seed=1)
    write(source / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    write(source / "mono.wav", left, subtype="FLOAT")

    report = preprocess(source, tmp_path / "mono", SR, channels=1, progress=False)
    index, data = stored(tmp_path / "mono")
    assert data.shape[0] == 1 and {k.source_channels for k in report.kept} == {1, 2}
    item = entry(index, "stereo.wav")
    assert np.allclose(data[0, item["start"]:item["start"] + item["length"]], (left + right) / 2, atol=1e-7)

    preprocess(source, tmp_path / "stereo", SR, channels=2, progress=False)
    index, data = stored(tmp_path / "stereo")
    assert data.shape == (2, 2 * len(left))
    pair = entry(index, "stereo.wav")
    assert np.array_equal(data[:, pair["start"]:pair["start"] + pair["length"]], np.stack([left, right]))
    single = entry(index, "mono.wav")
    assert np.array_equal(data[0, single["start"]:single["start"] + single["length"]], left)
    assert np.array_equal(data[1, single["start"]:single["start"] + single["length"]], left)


def test_resampling_gives_the_right_length_and_the_decoded_samples(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "at22k.wav", tone(1.0, sample_rate=22050), 22050, subtype="FLOAT")
    write(source / "at8k.wav", tone(0.75), SR, subtype="FLOAT")
    write(source / "at12k.flac", tone(0.5, sample_rate=12000), 12000)

    report = preprocess(source, tmp_path / "ds", 16000, progress=False)
    index, data = stored(tmp_path / "ds")
    assert {k.path: k.source_sample_rate for k in report.kept} == {
        "at12k.flac": 12000, "at22k.wav": 22050, "at8k.wav": SR}
    lengths = {f["path"]: f["length"] for f in index["files"]}
    assert lengths == {"at12k.flac": 8000, "at22k.wav": 16000, "at8k.wav": 12000}
    assert index["total_samples"] == sum(lengths.values()) and index["sample_rate"] == 16000
    for name, rate in (("at22k.wav", 22050), ("at8k.wav", SR), ("at12k.flac", 12000)):
        decoded, file_rate = sf.read(source / name, dtype="float32")
        assert file_rate == rate
        expected = librosa.resample(decoded, orig_sr=rate, target_sr=16000, res_type="soxr_hq")
        item = entry(index, name)
        assert np.allclose(data[0, item["start"]:item["start"] + item["length"]], expected, atol=1e-6)


def test_same_rate_samples_are_stored_bit_exactly(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "one.wav", tone(0.5), subtype="FLOAT")
    write(source / "two.flac", synthetic.chirp(100.0, 3000.0, 0.6, SR))
    preprocess(source, tmp_path / "ds", SR, progress=False)
    index, data = stored(tmp_path / "ds")
    assert index["files"][0]["start"] == 0
    for name in ("one.wav", "two.flac"):
        item = entry(index, name)
        decoded, _ = sf.read(source / name, dtype="float32")
        assert np.array_equal(data[0, item["start"]:item["start"] + item["length"]], decoded)


# ----------------------------------------------------------------------------- skipping


def test_corrupt_silent_and_short_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "good.wav", tone(1.0))
    (source / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    write(source / "silent.wav", np.zeros(SR, dtype=np.float32))
    write(source / "quiet.wav", 1e-5 * tone(1.0), subtype="FLOAT")  # -100 dBFS
    write(source / "short.wav", tone(0.25))
    write(source / "nan.wav", np.full(SR, np.nan, dtype=np.float32), subtype="FLOAT")
    (source / "gone.wav").symlink_to(source / "deleted.wav")  # a dangling link

    report = preprocess(source, tmp_path / "ds", SR, min_samples=SR // 2, progress=False)
    assert [k.path for k in report.kept] == ["good.wav"]
    kinds = {s.path: s.kind for s in report.skipped}
    assert kinds == {"corrupt.wav": "undecodable", "silent.wav": "silent", "quiet.wav": "silent",
                     "short.wav": "too_short", "nan.wav": "not_finite", "gone.wav": "undecodable"}
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons["corrupt.wav"].startswith("cannot decode")
    assert "0.25 s" in reasons["short.wav"] and "0.50 s" in reasons["short.wav"]
    summary = report.summary()
    assert "kept    1 file(s)" in summary and "skipped 6 file(s)" in summary
    assert "corrupt.wav: cannot decode" in summary
    index, _ = stored(tmp_path / "ds")
    assert {s["path"]: s["kind"] for s in index["skipped"]} == kinds


def test_too_short_is_judged_after_resampling(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "edge.wav", tone(0.5, sample_rate=16000), 16000)  # 8000 samples at 16 kHz
    write(source / "long.wav", tone(1.0))
    # At 8 kHz the file holds 4000 samples: shorter than the 6000 asked for.
    report = preprocess(source, tmp_path / "ds", SR, min_samples=6000, progress=False)
    assert [s.path for s in report.skipped] == ["edge.wav"]


def test_empty_or_missing_folder_raises_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("no audio here")
    with pytest.raises(TildekitError, match="no audio files in .*in"):
        preprocess(tmp_path / "in", tmp_path / "ds", SR, progress=False)
    with pytest.raises(TildekitError, match="does not exist"):
        preprocess(tmp_path / "nowhere", tmp_path / "ds", SR, progress=False)
    assert siblings(tmp_path / "ds") == []


def test_all_files_skipped_raises_listing_reasons(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "silent.wav", np.zeros(SR, dtype=np.float32))
    (source / "broken.flac").write_bytes(b"fLaC not really")
    with pytest.raises(TildekitError) as caught:
        preprocess(source, tmp_path / "ds", SR, progress=False)
    message = str(caught.value)
    assert str(source) in message and "broken.flac: cannot decode" in message
    assert "silent.wav: silent" in message and "\n" not in message
    assert siblings(tmp_path / "ds") == []


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.wav", tone(0.5))
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(TildekitError, match="not a tildekit dataset"):
        preprocess(tmp_path / "in", precious, SR, progress=False)
    assert (precious / "thesis.txt").read_text() == "do not delete"
    with pytest.raises(TildekitError, match="would replace the input"):
        preprocess(tmp_path / "in", tmp_path, SR, progress=False)


# ----------------------------------------------------------------------------- idempotence


def test_rerun_is_idempotent_and_changes_rebuild(tmp_path: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "ds"
    write(source / "a.wav", tone(0.5))
    write(source / "sub" / "b.wav", tone(0.5, frequency=330.0))
    first = preprocess(source, target, SR, progress=False)
    assert not first.up_to_date
    data_file = target / DATA_FILE
    before = data_file.stat()

    second = preprocess(source, target, SR, progress=False)
    assert second.up_to_date and "up to date" in second.summary()
    assert second.total_samples == first.total_samples and second.kept == first.kept
    after = data_file.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)

    write(source / "c.wav", tone(0.25, frequency=440.0))  # new input
    third = preprocess(source, target, SR, progress=False)
    assert not third.up_to_date and len(third.kept) == 3
    assert stored(target)[0]["total_samples"] == first.total_samples + SR // 4

    fourth = preprocess(source, target, 16000, progress=False)  # new parameters
    assert not fourth.up_to_date and fourth.total_samples == 2 * third.total_samples
    assert siblings(target) == []

    # A file rewritten in place (new size) is noticed too.
    write(source / "a.wav", tone(1.0))
    assert not preprocess(source, target, 16000, progress=False).up_to_date
    assert preprocess(source, target, 16000, progress=False).up_to_date


def test_failed_rebuild_keeps_the_old_dataset(tmp_path: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "ds"
    write(source / "a.wav", tone(0.5))
    preprocess(source, target, SR, progress=False)
    index_before = (target / INDEX_FILE).read_text()
    data_before = (target / DATA_FILE).read_bytes()

    (source / "a.wav").write_bytes(b"RIFF garbage")  # the only file is now unusable
    with pytest.raises(TildekitError, match="no usable audio"):
        preprocess(source, target, SR, progress=False)
    assert (target / INDEX_FILE).read_text() == index_before
    assert (target / DATA_FILE).read_bytes() == data_before
    assert siblings(target) == []


# The child announces, just before it opens the FIFO (inside preprocess's cleanup scope), that it
# is about to block: the test waits for that line instead of polling the file system on a timer.
BLOCKED_LINE = "blocked on zz_stalled.wav"
_BLOCKED_RUN = f"""
import signal
import sys
from tildekit.models import preprocess as module

# Ctrl-C as in a terminal, whatever this process inherited: a shell that starts a job in the
# background sets SIGINT to "ignore", and the child would then never see the test's SIGINT.
signal.signal(signal.SIGINT, signal.default_int_handler)

decode = module.decode

def announcing_decode(path):
    if path.name == "zz_stalled.wav":
        print({BLOCKED_LINE!r}, flush=True)
    return decode(path)

module.decode = announcing_decode
module.preprocess(sys.argv[1], sys.argv[2], 8000, progress=False)
"""
GUARD_SECONDS = 300  # only stops a broken run from hanging the suite; no assertion depends on it


def _start_blocked_run(tmp_path: Path) -> subprocess.Popen:
    """A preprocess subprocess stuck opening a FIFO named like a wav (a stalled network file)."""
    fifo = tmp_path / "in" / "zz_stalled.wav"
    if not fifo.exists():
        os.mkfifo(fifo)
    log = open(tmp_path / "child.log", "wb")  # a file, not a pipe: the child can never block on it
    process = subprocess.Popen([sys.executable, "-c", _BLOCKED_RUN, str(tmp_path / "in"), str(tmp_path / "ds")],
                               stdout=subprocess.PIPE, stderr=log)
    log.close()
    try:
        ready, _, _ = select.select([process.stdout], [], [], GUARD_SECONDS)
        line = process.stdout.readline().decode().strip() if ready else ""
        assert line == BLOCKED_LINE, (line, (tmp_path / "child.log").read_text())
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def _finish(process: subprocess.Popen) -> int:
    """Wait for the child; kill it if it outlives the guard (a failure, not a timing assumption)."""
    try:
        return process.wait(timeout=GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("the preprocess subprocess did not stop") from None
    finally:
        process.stdout.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_interrupted_run_leaves_old_dataset_and_no_temp(tmp_path: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "ds"
    write(source / "a.wav", tone(0.5))
    preprocess(source, target, SR, progress=False)
    data_before = (target / DATA_FILE).read_bytes()
    index_before = (target / INDEX_FILE).read_text()

    def others() -> list[str]:
        return [name for name in siblings(target) if name != "child.log"]

    # Ctrl-C while the child is blocked in open(): the run cleans up after itself.
    process = _start_blocked_run(tmp_path)
    assert len(others()) == 1  # its temporary build, marked as tildekit's
    process.send_signal(signal.SIGINT)
    assert _finish(process) != 0
    assert "KeyboardInterrupt" in (tmp_path / "child.log").read_text()
    assert (target / DATA_FILE).read_bytes() == data_before
    assert (target / INDEX_FILE).read_text() == index_before
    assert others() == []

    # Killed outright: the temporary build stays until the next run removes it.
    process = _start_blocked_run(tmp_path)
    process.kill()
    _finish(process)
    assert (target / INDEX_FILE).read_text() == index_before
    assert len(others()) == 1
    (source / "zz_stalled.wav").unlink()
    assert preprocess(source, target, SR, progress=False).up_to_date  # the input is as before
    assert others() == []


# ----------------------------------------------------------------------------- command line


def test_cli_preprocesses_a_folder(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "long.wav", tone(1.5, sample_rate=16000), 16000)
    write(source / "sub" / "short.wav", tone(0.3, sample_rate=16000), 16000)
    runner = CliRunner()
    # Profile 'small': 16 kHz mono, one window = 8192 samples, so short.wav (4800) is skipped.
    result = runner.invoke(main, ["preprocess", str(source), str(tmp_path / "ds"), "--profile", "small"])
    assert result.exit_code == 0, result.output
    assert "kept    1 file(s)" in result.stdout and "sub/short.wav: too short" in result.stdout
    index, data = stored(tmp_path / "ds")
    assert (index["sample_rate"], index["channels"], data.shape) == (16000, 1, (1, 24000))

    result = runner.invoke(main, ["preprocess", str(source), str(tmp_path / "ds8"), "--profile",
                                  "small", "--sample-rate", "8000", "--channels", "2",
                                  "--min-seconds", "0.1"])
    assert result.exit_code == 0, result.output
    index, data = stored(tmp_path / "ds8")
    assert (index["sample_rate"], index["channels"], data.shape) == (8000, 2, (2, 12000 + 2400))

    result = runner.invoke(main, ["preprocess", str(source), str(tmp_path / "ds8"), "--profile",
                                  "small", "--sample-rate", "8000", "--channels", "2",
                                  "--min-seconds", "0.1"])
    assert result.exit_code == 0 and "up to date" in result.stdout


def test_cli_empty_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(main, ["preprocess", str(tmp_path / "in"), str(tmp_path / "ds")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no audio files in")
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["preprocess", str(tmp_path / "in"), str(tmp_path / "ds"),
                                       "--profile", "no-such-profile"])
    assert result.exit_code == 2 and "unknown profile" in result.stderr


def test_cli_help_explains_every_option() -> None:
    result = CliRunner().invoke(main, ["preprocess", "--help"])
    assert result.exit_code == 0
    for option in ("--profile", "--sample-rate", "--channels", "--min-seconds"):
        assert option in result.output
