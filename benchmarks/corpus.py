"""A real-audio corpus for the quality benchmarks, rebuilt offline from Debian packages.

Sampled instruments from the General MIDI soundfont ``fluid-soundfont-gm`` (FluidR3), rendered
by the ``fluidsynth`` command line from MIDI files written here, and speech from ``espeak-ng``::

    sudo apt-get install fluidsynth fluid-soundfont-gm espeak-ng
    python benchmarks/corpus.py OUT_DIR [--quick] [--seed 0]

Everything is generated from the seed: melodies (scale, contour, rhythm, tempo), dynamics
(velocity levels, crescendi, CC11 expression swells), articulations (legato, detached,
staccato, accents; pizzicato and tremolo strings as instruments), delayed CC1 vibrato on long
notes, a bass line under the piano and dyads on the guitar; speech in several espeak-ng voices,
speeds and pitches. The same seed and the same package versions give the same samples (their
SHA-256 are in the manifest; fluidsynth renders in float, without dither).

Split (fixed, in ``manifest.json``): the instruments are in both halves, the *melodies* of the
test half are never heard in training; for speech both the *voices* and the *texts* of the test
half are held out. Files: ``OUT/train/*.wav``, ``OUT/test/*.wav`` (48 kHz mono float, each
peak-normalised to -1 dBFS: the dynamics inside a file are kept; files run to the end of their
last phrase, so a little longer than the target length),
``OUT/midi/*.mid``, ``OUT/manifest.json``. The folder is built beside ``OUT`` and renamed into
place; an existing ``OUT`` is replaced only when it holds an earlier corpus.

The listening proxy printed per file (RMS, duration, pyin-voiced share of the active frames,
as ``tildekit eval`` measures it) catches a silent render, a cut file or a wrong pitch range.
Not run in CI (it needs the Debian packages and a few minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RATE = 48000
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FORMAT = "tildekit-corpus"
VERSION = 1
TICKS = 480  # per quarter note
RENDER_GAIN = 0.5  # fluidsynth's master gain: ff chords stay below full scale in the float render
PEAK = 10 ** (-1 / 20)  # every file is peak-normalised to -1 dBFS, as sample libraries are delivered
TAIL_BEATS = 2.0  # silence after the last note, so releases are not cut


@dataclass(frozen=True)
class Instrument:
    name: str
    program: int  # General MIDI, 0-based
    low: int  # comfortable range, MIDI note numbers
    high: int
    sustained: bool  # bowed / blown: expression swells and vibrato
    texture: str = "melody"  # melody | bass (a left hand under it) | dyads


INSTRUMENTS = (
    Instrument("piano", 0, 43, 88, False, "bass"),
    Instrument("guitar", 24, 40, 76, False, "dyads"),
    Instrument("violin", 40, 55, 93, True),
    Instrument("viola", 41, 48, 81, True),
    Instrument("cello", 42, 36, 72, True),
    Instrument("tremolo-strings", 44, 43, 84, True),
    Instrument("pizzicato", 45, 36, 79, False),
    Instrument("trumpet", 56, 55, 82, True),
    Instrument("trombone", 57, 40, 70, True),
    Instrument("horn", 60, 41, 77, True),
    Instrument("alto-sax", 65, 49, 80, True),
    Instrument("oboe", 68, 58, 89, True),
    Instrument("clarinet", 71, 50, 89, True),
    Instrument("flute", 73, 60, 96, True),
)
QUICK_INSTRUMENTS = ("violin", "flute", "piano", "trumpet")

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "harmonic-minor": (0, 2, 3, 5, 7, 8, 11),
    "pentatonic": (0, 2, 4, 7, 9),
}
DYNAMICS = {"pp": 34, "p": 50, "mf": 72, "f": 94, "ff": 114}
ARTICULATIONS = {"legato": 0.97, "detached": 0.8, "staccato": 0.38}

TEXTS = (
    "The quick brown fox jumps over the lazy dog, and the dog does not mind at all.",
    "Seven silver swans were swimming slowly past the old stone bridge at dawn.",
    "Would you like a cup of tea, or shall we go for a walk before it rains?",
    "Numbers are easy: one, two, three, four, five, six, seven, eight, nine, ten.",
    "A violin sings, a cello hums, and the drums keep the time for everyone.",
    "Please remember to close the window when you leave the studio tonight.",
    "How many hours does it take to learn a song by heart? Nobody really knows.",
    "Bright yellow leaves were falling on the quiet street below my window.",
    "The engineer turned the knob slowly, listening for the hum to disappear.",
    "On Thursday morning the market was full of apples, pears and fresh bread.",
    "Is this the right train for the city centre, or do I need to change?",
    "Music moves through the air as pressure waves, and our ears do the rest.",
)
TEST_TEXTS = frozenset({10, 11})
VOICES = ("en-us+m3", "en-gb+f2", "en-gb-scotland+m1", "en-029+f4", "en-gb-x-gbclan+m5", "en-us+f1",
          "en-gb-x-rp+m7", "en-us+f3")
TEST_VOICES = frozenset({"en-gb-x-rp+m7", "en-us+f3"})


@dataclass
class Item:
    path: str  # relative to the corpus folder
    split: str  # train | test
    kind: str  # instrument | speech
    source: str  # instrument name or espeak-ng voice
    detail: dict
    seconds: float = 0.0
    rms_dbfs: float = 0.0
    voiced_fraction: float = 0.0
    sha256: str = ""  # of the float32 little-endian samples


# ----------------------------------------------------------------------------- MIDI


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file(events: list[tuple[int, int, bytes]], tempo_bpm: float) -> bytes:
    """A format-0 MIDI file from ``(tick, order, message)``; at one tick, lower order goes first."""
    track = bytearray(b"\x00\xff\x51\x03" + int(round(60e6 / tempo_bpm)).to_bytes(3, "big"))
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track += _vlq(tick - now) + message
        now = tick
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS) + b"MTrk" + struct.pack(">I", len(track)) + track


def _cc(number: int, value: int) -> bytes:
    return bytes([0xB0, number, int(np.clip(value, 0, 127))])


@dataclass(frozen=True)
class Note:
    start: float  # beats
    length: float  # beats, sounding
    pitch: int
    velocity: int


def melody(seed: int, low: int, high: int, seconds: float) -> tuple[list[list[Note]], float, str]:
    """Phrases of notes inside [low, high] from ``seed``: (phrases, tempo, scale name).

    The seed fixes the scale, the contour and the rhythm; the register only places them, so one
    melody id is the same tune on every instrument.
    """
    rng = np.random.default_rng([seed, 7])
    scale_name = list(SCALES)[int(rng.integers(len(SCALES)))]
    scale = SCALES[scale_name]
    tempo = float(rng.uniform(72, 132))
    target_beats = seconds * tempo / 60
    steps = rng.choice([-4, -3, -2, -1, 1, 2, 3, 5], size=4096, p=[.04, .06, .17, .25, .25, .15, .05, .03])
    rhythm = rng.choice([0.25, 0.5, 0.75, 1.0, 1.5, 2.0], size=4096, p=[.1, .35, .1, .25, .1, .1])
    rests = rng.random(4096) < 0.08
    dynamics = rng.choice(list(DYNAMICS), size=64)
    shapes = rng.choice(["flat", "crescendo", "diminuendo", "swell"], size=64)
    articulations = rng.choice(list(ARTICULATIONS) + ["mixed"], size=64)
    jitter = rng.normal(0, 4, size=4096)
    # degrees -> MIDI notes: the tonic lands in the lower third of the range
    span = high - low
    tonic = low + int(rng.integers(0, max(1, span // 3)))
    degree, beat, index, phrases = 0, 0.0, 0, []
    for phrase_index in range(64):
        if beat >= target_beats:
            break
        notes: list[Note] = []
        phrase_beats = float(rng.choice([4.0, 8.0]))
        start = beat
        level = DYNAMICS[dynamics[phrase_index]]
        shape, articulation = shapes[phrase_index], articulations[phrase_index]
        while beat - start < phrase_beats:
            length = float(rhythm[index])
            if not rests[index]:
                candidate = degree + int(steps[index])
                pitch = _degree_pitch(tonic, scale, candidate)
                if not low <= pitch <= high:  # turn back at the edges of the range
                    candidate = degree - int(steps[index])
                degree = candidate
                pitch = int(np.clip(_degree_pitch(tonic, scale, degree), low, high))
                where = (beat - start) / phrase_beats
                offset = {"flat": 0.0, "crescendo": -18 + 36 * where, "diminuendo": 18 - 36 * where,
                          "swell": 18 * np.sin(np.pi * where)}[shape]
                accent = 14 if (beat % 1.0 == 0 and rng.random() < 0.3) else 0
                gate = (ARTICULATIONS[rng.choice(list(ARTICULATIONS))] if articulation == "mixed"
                        else ARTICULATIONS[articulation])
                notes.append(Note(beat, length * gate, pitch,
                                  int(np.clip(level + offset + accent + jitter[index], 12, 127))))
            beat += length
            index += 1
        beat += float(rng.choice([0.5, 1.0]))  # breath between phrases
        phrases.append(notes)
    return phrases, tempo, scale_name


def _degree_pitch(tonic: int, scale: tuple[int, ...], degree: int) -> int:
    octave, step = divmod(degree, len(scale))
    return tonic + 12 * octave + scale[step]


def instrument_events(instrument: Instrument, phrases: list[list[Note]], seed: int) -> tuple[list, float]:
    """MIDI events of one instrument playing ``phrases``; returns (events, last beat)."""
    rng = np.random.default_rng([seed, instrument.program, 11])
    events: list[tuple[int, int, bytes]] = [(0, 0, bytes([0xC0, instrument.program])), (0, 0, _cc(7, 100)),
                                            (0, 0, _cc(11, 110)), (0, 0, _cc(1, 0))]
    end = 0.0

    def tick(beat: float) -> int:
        return int(round(beat * TICKS))

    def note(start: float, length: float, pitch: int, velocity: int) -> None:
        events.append((tick(start), 2, bytes([0x90, pitch, velocity])))
        events.append((tick(start + length), 1, bytes([0x80, pitch, 0])))

    for notes in phrases:
        for n in notes:
            note(n.start, n.length, n.pitch, n.velocity)
            end = max(end, n.start + n.length)
            if instrument.texture == "dyads" and rng.random() < 0.35 and n.pitch - 4 >= instrument.low:
                note(n.start, n.length, n.pitch - int(rng.choice([3, 4, 5])), max(12, n.velocity - 12))
            if instrument.sustained and n.length >= 1.0:
                # an expression swell over the note, vibrato arriving after its attack
                for k in range(int(n.length * 8)):
                    where = k / (n.length * 8)
                    events.append((tick(n.start + k / 8), 0, _cc(11, 88 + 30 * np.sin(np.pi * where))))
                    events.append((tick(n.start + k / 8), 0, _cc(1, 70 * min(1.0, max(0.0, 2 * where - 0.3)))))
                events.append((tick(n.start + n.length), 0, _cc(1, 0)))
                events.append((tick(n.start + n.length), 0, _cc(11, 110)))
        if instrument.texture == "bass" and notes:
            first, last = notes[0].start, notes[-1].start + notes[-1].length
            for bar in np.arange(first - first % 4, last, 4.0):
                bass = max(instrument.low - 12, min(n.pitch for n in notes) - 12 - int(rng.choice([0, 5, 7])))
                note(float(bar), 3.6, int(bass), 45)
    events.append((tick(end + TAIL_BEATS), 3, _cc(123, 0)))  # all notes off, at the end of the tail
    return events, end + TAIL_BEATS


# ----------------------------------------------------------------------------- rendering


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed ({' '.join(command[:3])} ...): {result.stderr.strip()[:300]}")


def render_midi(midi: Path, wav: Path) -> np.ndarray:
    """fluidsynth -> float stereo wav -> mono float32 at RATE (reverb and chorus off: dry)."""
    import soundfile as sf

    raw = wav.with_suffix(".raw.wav")
    _run(["fluidsynth", "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", str(RENDER_GAIN), "-r", str(RATE),
          "-T", "wav", "-O", "float", "-F", str(raw), str(SOUNDFONT), str(midi)], f"rendering {midi.name}")
    audio, rate = sf.read(raw, dtype="float32", always_2d=True)
    raw.unlink()
    if rate != RATE:
        raise SystemExit(f"fluidsynth wrote {rate} Hz instead of {RATE}: check its version")
    return audio.mean(axis=1)


def speak(text: str, voice: str, speed: int, pitch: int, wav: Path) -> np.ndarray:
    """espeak-ng (22.05 kHz) resampled to RATE with the resampler the datasets use."""
    import soundfile as sf

    from tildekit.models.contract.audio import resample

    raw = wav.with_suffix(".raw.wav")
    _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
         f"speaking with {voice}")
    audio, rate = sf.read(raw, dtype="float32", always_2d=True)
    raw.unlink()
    return resample(audio.mean(axis=1)[None], int(rate), RATE)[0]


def _finish(audio: np.ndarray, path: Path, item: Item) -> None:
    import soundfile as sf

    peak = float(np.abs(audio).max())
    if peak <= 0:
        raise SystemExit(f"{item.path}: the render is silent (check {SOUNDFONT} and the tools' versions)")
    audio = audio * (PEAK / peak)  # the dynamics inside a file are kept
    item.detail["gain_db"] = round(20 * np.log10(PEAK / peak), 2)
    audio = audio.astype(np.float32)
    sf.write(path, audio, RATE, subtype="FLOAT")
    item.seconds = round(len(audio) / RATE, 3)
    # of the samples, not the file: libsndfile stamps float WAVs with the time of writing
    item.sha256 = hashlib.sha256(audio.astype("<f4").tobytes()).hexdigest()


# ----------------------------------------------------------------------------- the corpus


def plan(quick: bool, seed: int) -> list[Item]:
    """Which files to make, and their split (no audio yet)."""
    items: list[Item] = []
    instruments = [i for i in INSTRUMENTS if not quick or i.name in QUICK_INSTRUMENTS]
    train_melodies, test_melodies = (1, 1) if quick else (3, 1)
    seconds = 6.0 if quick else 16.0
    registers = ("mid",) if quick else ("low", "high")
    melody_id = 0
    for instrument in instruments:
        for register in registers:
            for split, count in (("train", train_melodies), ("test", test_melodies)):
                for _ in range(count):
                    # train and test melodies come from disjoint id ranges
                    mid = seed * 100_000 + (melody_id if split == "train" else 50_000 + melody_id)
                    melody_id += 1
                    name = f"{instrument.name}-{register}-m{mid % 100_000:05d}"
                    items.append(Item(f"{split}/{name}.wav", split, "instrument", instrument.name,
                                      {"program": instrument.program, "register": register, "melody": mid,
                                       "target_seconds": seconds}))
    voices = VOICES[:1] + VOICES[-1:] if quick else VOICES
    rng = np.random.default_rng([seed, 3])
    for number, voice in enumerate(voices):
        split = "test" if voice in TEST_VOICES else "train"
        texts = [t for t in range(len(TEXTS)) if (t in TEST_TEXTS) == (split == "test")]
        if split == "train":  # each training voice reads 4 texts, in turn
            texts = [texts[(4 * number + k) % len(texts)] for k in range(4)]
        for text in texts[:1] if quick else texts:
            speed, pitch = int(rng.integers(125, 175)), int(rng.integers(30, 70))
            name = f"speech-{voice.replace('+', '-')}-t{text:02d}"
            items.append(Item(f"{split}/{name}.wav", split, "speech", voice,
                              {"text": TEXTS[text], "text_id": text, "speed": speed, "pitch": pitch}))
    return items


def _register_range(instrument: Instrument, register: str) -> tuple[int, int]:
    middle = (instrument.low + instrument.high) // 2
    return {"low": (instrument.low, middle + 4), "high": (middle - 4, instrument.high),
            "mid": (instrument.low + 5, instrument.high - 5)}[register]


def make(item: Item, work: Path) -> None:
    path = work / item.path
    if item.kind == "speech":
        audio = speak(item.detail["text"], item.source, item.detail["speed"], item.detail["pitch"], path)
    else:
        instrument = next(i for i in INSTRUMENTS if i.name == item.source)
        low, high = _register_range(instrument, item.detail["register"])
        phrases, tempo, scale = melody(item.detail["melody"], low, high, item.detail["target_seconds"])
        events, _ = instrument_events(instrument, phrases, item.detail["melody"])
        midi = work / "midi" / (Path(item.path).stem + ".mid")
        midi.write_bytes(midi_file(events, tempo))
        item.detail.update({"tempo": round(tempo, 2), "scale": scale, "notes": sum(map(len, phrases)),
                            "midi": midi.relative_to(work).as_posix()})
        audio = render_midi(midi, path)
    _finish(audio, path, item)


def listen(item: Item, work: Path) -> None:
    """The listening proxy: level and pitched share, measured as `tildekit eval` measures them."""
    import soundfile as sf

    from tildekit.models import metrics

    audio, rate = sf.read(work / item.path, dtype="float32")
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    item.rms_dbfs = round(20 * np.log10(max(rms, 1e-10)), 2)
    item.voiced_fraction = round(metrics.pitch_track(audio, rate).voiced_fraction, 3)


def tool_versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            return ""
        return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else ""

    return {"fluidsynth": first_line(["fluidsynth", "--version"]),
            "espeak-ng": first_line(["espeak-ng", "--version"]),
            "soundfont": str(SOUNDFONT),
            "soundfont_sha256": hashlib.sha256(SOUNDFONT.read_bytes()).hexdigest()}


def check_tools() -> None:
    missing = [tool for tool in ("fluidsynth", "espeak-ng") if shutil.which(tool) is None]
    if missing or not SOUNDFONT.is_file():
        what = ", ".join(missing + ([str(SOUNDFONT)] if not SOUNDFONT.is_file() else []))
        raise SystemExit(f"missing {what}: sudo apt-get install fluidsynth fluid-soundfont-gm espeak-ng")


def _owned(out: Path) -> bool:
    try:
        return json.loads((out / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def build(out: Path, quick: bool, seed: int) -> list[Item]:
    check_tools()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _owned(out))):
        raise SystemExit(f"{out} exists and is not a corpus folder: pick a new folder")
    items = plan(quick, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for folder in ("train", "test", "midi"):
            (work / folder).mkdir()
        from tqdm import tqdm

        for item in tqdm(items, desc="corpus", unit="file", disable=None, leave=False):
            make(item, work)
            listen(item, work)
        manifest = {
            "format": FORMAT, "version": VERSION, "seed": seed, "quick": quick, "sample_rate": RATE,
            "channels": 1, "tools": tool_versions(),
            "seconds": {split: round(sum(i.seconds for i in items if i.split == split), 2)
                        for split in ("train", "test")},
            "files": [asdict(item) for item in items],
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        work.chmod(0o755)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            retired.rmdir()
            os.replace(out, retired)
            os.replace(work, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="corpus folder to write")
    parser.add_argument("--quick", action="store_true", help="a small corpus (about a minute of audio)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = build(args.out, args.quick, args.seed)
    print(f"{'file':<44} {'split':>5} {'seconds':>7} {'RMS dBFS':>8} {'voiced':>6}")
    for item in items:
        print(f"{item.path:<44} {item.split:>5} {item.seconds:>7.2f} {item.rms_dbfs:>8.1f} "
              f"{item.voiced_fraction:>6.2f}")
    for split in ("train", "test"):
        chosen = [i for i in items if i.split == split]
        print(f"{split}: {len(chosen)} files, {sum(i.seconds for i in chosen) / 60:.1f} min")
    quiet = [i.path for i in items if i.rms_dbfs < -45 or i.seconds < 1.0]
    if quiet:
        print(f"suspicious (near-silent or very short): {', '.join(quiet)}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {args.out}/manifest.json")


if __name__ == "__main__":
    main()
