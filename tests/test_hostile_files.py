"""Hostile input: crafted cards and model files, hostile names, foreign and read-only folders.

Every case asserts what a user (or an attacker) gets: exit status 2, one line naming the bad
input, and no file changed outside the output the user named (the whole tree is snapshotted
before and after). Cards contradicting their model fail `tildekit check`; real Pure Data opens
patches made from hostile text without running any of it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import ipaddress
import json
import os
import select
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import make_card
from tests.test_export_nn import TINY, _make_run, _stats, _tiny_models
from tests.test_patches import _free_udp_port, _problems
from tests.test_preprocess import SR, tone, write
from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files, read_card
from tildekit.export.check import check_file
from tildekit.models.contract.card import CARD_FILE_NAME, ModelCard
from tildekit.models.contract.card_check import MAX_CARD_BYTES
from tildekit.models.outputs import MARKER_FILE
from tildekit.models.preprocess import INDEX_FILE, preprocess

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

PD = shutil.which("pd")
needs_pd = pytest.mark.skipif(PD is None, reason="Pure Data (Debian package puredata-core) is not installed")

HOSTILE_NAMES = [
    "../../X", "a/b", "..", "a\\b", "x\0y", "A" * 10000, "line\nbreak", "x; pd quit", "x, y",
    "$(reboot)", "`id`", "$1", "a b", "'quoted'", '"dq"', "{brace}", "caf\u00e9", "\u202eevil",
    "-rf", ".hidden", "",
]


# ------------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root``: relative path -> (content digest or kind, permission bits)."""
    entries = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            what = "link:" + os.readlink(path)
        else:
            what = "dir"
        entries[path.relative_to(root).as_posix()] = (what, stat.S_IMODE(info.st_mode))
    return entries


def one_line_error(result: Any) -> str:
    """Exit status 2, exactly one line on stderr, no traceback; returns that line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def save_ts(path: Path, card_text: str | bytes, module: Any = None) -> Path:
    """A TorchScript archive carrying ``card_text`` as its model card."""
    module = module if module is not None else torch.jit.script(torch.nn.Linear(1, 1))
    text = card_text.decode("latin-1") if isinstance(card_text, bytes) else card_text
    torch.jit.save(module, str(path), _extra_files={CARD_FILE_NAME: text})
    return path


def card_data(card: ModelCard | None = None) -> dict:
    return json.loads((card or make_card()).to_json())


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """Make a folder read-only, for root too (chattr +i where chmod does not stop root)."""
    made: list[Path] = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        made.append(folder)
        probe = folder / ".probe"
        try:
            probe.write_text("x")
        except OSError:
            return folder
        probe.unlink()
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)],
                                                     capture_output=True).returncode == 0:
            try:
                probe.write_text("x")
            except OSError:
                return folder
        pytest.skip("cannot make a read-only folder here (root without chattr)")

    yield make
    for folder in made:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


# ------------------------------------------------------------------------------- crafted cards


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation setting the dotted ``path`` (list indices as numbers) to ``value``."""
    def mutate(data: dict) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


def _delete(path: str) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


# (case id, mutation of a valid card, text the one-line error must contain)
CRAFTED = [
    ("rate-text", _set("sample_rate", "abc"), "sample_rate"),
    ("rate-negative", _set("sample_rate", -1), "sample_rate"),
    ("rate-float", _set("sample_rate", 16000.5), "sample_rate"),
    ("rate-huge", _set("sample_rate", 10 ** 30), "sample_rate"),
    ("rate-bool", _set("sample_rate", True), "sample_rate"),
    ("latent-negative", _set("latent_size", -1), "latent_size"),
    ("latent-text", _set("latent_size", "4"), "latent_size"),
    ("channels-contradict-methods", _set("channels", 2), "methods.forward"),
    ("compression-zero", _set("compression", 0), "compression"),
    ("delay-negative", _set("delay", -5), "delay"),
    ("delay-contradicts-forward", _set("delay", 7), "delay"),
    ("no-methods", _set("methods", {}), "methods"),
    ("ratio-zero", _set("methods.encode.out_ratio", 0), "methods.encode.out_ratio"),
    ("ratio-contradicts-compression", _set("methods.encode.out_ratio", 64), "methods.encode"),
    ("method-channels-text", _set("methods.decode.in_channels", "4"), "methods.decode.in_channels"),
    ("method-name-hostile", _set("methods", {"forward; pd quit": {"in_channels": 1, "in_ratio": 1,
                                                                   "out_channels": 1, "out_ratio": 1}}),
     "methods"),
    ("labels-count", _set("methods.encode.output_labels", ["only one"]), "methods.encode.output_labels"),
    ("label-newline", _set("methods.encode.output_labels.0", "a\nb"), "methods.encode.output_labels[0]"),
    ("attribute-name-semicolon", _set("attributes.0.name", "temp; pd quit"), "attributes[0].name"),
    ("attribute-name-dots", _set("attributes.0.name", "../x"), "attributes[0].name"),
    ("attribute-type-unknown", _set("attributes.0.types", ["complex"]), "attributes.temperature.types[0]"),
    ("attribute-default-range", _set("attributes.0.default", [1e30]), "attributes.temperature.default[0]"),
    ("attribute-default-type", _set("attributes.3.default", ["yes"]), "attributes.reset.default[0]"),
    ("attribute-bias-length", _set("attributes.1.types", ["float"]), "attributes.latent_bias"),
    ("attribute-min-above-max", _set("attributes.0.minimum", 20.0), "attributes.temperature.minimum"),
    ("attribute-repeated", lambda d: d["attributes"].append(copy.deepcopy(d["attributes"][0])), "repeats"),
    ("attribute-description-control", _set("attributes.0.description", "a\x1b[2Jb"),
     "attributes.temperature.description"),
    ("latent-std-negative", _set("latents.0.std", -1.0), "latents[0].std"),
    ("latent-min-above-max", _set("latents.0.minimum", 9.0), "latents[0].minimum"),
    ("latent-mean-huge", _set("latents.0.mean", 1e300), "latents[0].mean"),
    ("latents-count", lambda d: d["latents"].pop(), "latents"),
    ("extra-deep", _set("extra", {"a": [[[[[1]]]]]}), "extra.a"),
    ("extra-key", _set("extra", {"x; y": 1}), "extra"),
    ("unknown-field", _set("evil", 1), "evil"),
    ("missing-name", _delete("name"), "name"),
    ("format-newer", _set("card_format", 99), "upgrade tildekit"),
    ("format-negative", _set("card_format", -1), "card_format"),
] + [(f"name-{i}", _set("name", name), "'name'") for i, name in enumerate(HOSTILE_NAMES)]


@pytest.mark.parametrize("mutate, expected", [pytest.param(m, e, id=i) for i, m, e in CRAFTED])
def test_crafted_card_is_refused_everywhere_with_one_line(tmp_path: Path, mutate: Callable, expected: str) -> None:
    data = card_data()
    mutate(data)
    model = save_ts(tmp_path / "crafted.ts", json.dumps(data))
    before = snapshot(tmp_path)
    with pytest.raises(TildekitError) as caught:
        read_card(model)
    message = str(caught.value)
    assert "crafted.ts" in message and expected in message and "\n" not in message, message
    for command in (["info", model], ["patch", model, "--out", tmp_path / "patches"], ["check", model],
                    ["bench", model, "--seconds", "0.01"]):
        line = one_line_error(invoke(*command))
        assert "crafted.ts" in line and expected in line, (command, line)
    assert snapshot(tmp_path) == before  # nothing written, not even the patch folder


@pytest.mark.parametrize("text, expected", [
    (b"NaN", "not valid JSON"), (b'{"sample_rate": NaN}', "NaN is not a JSON number"),
    (b'{"a": Infinity}', "Infinity"), (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    (b"[]", "not a JSON object"), (b'"text"', "not a JSON object"), (b"\xff\xfe", "not valid JSON"),
])
def test_card_that_is_not_a_card_json(tmp_path: Path, text: bytes, expected: str) -> None:
    path = tmp_path / "odd.json"
    path.write_bytes(text)
    line = one_line_error(invoke("info", path))
    assert "odd.json" in line and expected in line, line


def test_oversized_card_member_is_not_inflated(tmp_path: Path) -> None:
    """A zip-bomb card (1 GB of spaces compresses to ~1 MB) is refused from its header alone."""
    model = save_ts(tmp_path / "bomb.ts", make_card().to_json())
    bomb = tmp_path / "bomb2.ts"
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename.endswith(f"/extra/{CARD_FILE_NAME}"):
                with target.open(info.filename, "w") as member:
                    chunk = b" " * (1 << 20)
                    for _ in range(4 * (MAX_CARD_BYTES >> 20) + 4):
                        member.write(chunk)
            else:
                target.writestr(info, source.read(info))
    line = one_line_error(invoke("patch", bomb))
    assert "bomb2.ts" in line and "bytes" in line


def test_card_checked_before_embedding_round_trips(tmp_path: Path) -> None:
    """What the validator accepts, a writer writes and a reader reads back unchanged."""
    card = make_card()
    assert card.checked() is card
    model = save_ts(tmp_path / "ok.ts", card.to_json())
    assert read_card(model) == card
    hostile = dataclasses.replace(card, name="x; pd quit")
    with pytest.raises(Exception, match="name"):
        hostile.checked()


# ------------------------------------------------------------------------------- cards that lie


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> tuple[Any, ModelCard]:
    """A tiny real nn~ module (scripted, not yet saved) and its honest card."""
    from tildekit.export.model_card import card_from_core
    from tildekit.export.nn_tilde import script_nn_tilde
    from tildekit.export.prepare import core_from_stats
    from tildekit.models.config import load_profile

    profile = load_profile("small", TINY)
    reference, streaming = _tiny_models(profile)
    stats = _stats(reference)
    core = core_from_stats(streaming, stats, keep=4)
    card = card_from_core(core, "tiny", stats, profile.name, 7)
    return script_nn_tilde(core, card), card


def _with_channels(data: dict, channels: int) -> None:
    data["channels"] = channels
    for spec in data["methods"].values():
        if spec["in_ratio"] == 1:
            spec["in_channels"] = channels
            spec["input_labels"] = []
        if spec["out_ratio"] == 1:
            spec["out_channels"] = channels
            spec["output_labels"] = []


def _with_compression(data: dict, compression: int) -> None:
    data["compression"] = compression
    data["methods"]["encode"]["out_ratio"] = compression
    data["methods"]["decode"]["in_ratio"] = compression


def _understated(data: dict) -> None:
    data["delay"] = data["methods"]["forward"]["delay"] = 0


LIES = {
    "delay-understated": (_understated, "forward delay"),
    "stereo-on-mono": (lambda d: _with_channels(d, 2), "forward_params"),
    "compression": (lambda d: _with_compression(d, 256), "encode_params"),
    "sample-rate": (lambda d: d.update(sample_rate=44100), "set_sample_rate"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_check_fails_a_card_that_contradicts_its_model(tmp_path: Path, scripted: tuple, lie: str) -> None:
    module, card = scripted
    data = card_data(card)
    mutate, failing_item = LIES[lie]
    mutate(data)
    ModelCard.from_dict(data)  # a consistent card: only the model can contradict it
    path = tmp_path / "liar.ts"
    torch.jit.save(module, str(path), _extra_files={CARD_FILE_NAME: json.dumps(data)})
    result = invoke("check", path)
    assert result.exit_code == 1, result.output
    failed = [line[len("FAIL  "):] for line in result.stdout.splitlines() if line.startswith("FAIL  ")]
    assert any(item.startswith(failing_item) for item in failed), result.stdout


def test_check_measures_the_delay_of_the_honest_card(tmp_path: Path, scripted: tuple) -> None:
    module, card = scripted
    path = tmp_path / "honest.ts"
    torch.jit.save(module, str(path), _extra_files=card_extra_files(card))
    delays = [r for r in check_file(path) if " delay (" in r.item]
    assert {r.item.split()[0] for r in delays} == {"forward", "encode", "decode"}
    assert all(r.passed for r in delays), delays


# ------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_export_refuses_hostile_names_before_any_work(tmp_path: Path, name: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "deep" / "out"
    before = snapshot(tmp_path)
    line = one_line_error(invoke("export", run, "--out", out, "--name", name))
    assert "--name" in line
    assert snapshot(tmp_path) == before


def test_default_export_name_from_a_run_folder_is_made_safe(tmp_path: Path) -> None:
    from tildekit.models.contract.names import slug_name

    assert slug_name("my run; rm -rf ~") == "my_run_rm_-rf"
    assert slug_name("../../..") == "model" and slug_name("caf\u00e9") == "caf"
    assert len(slug_name("x" * 10000)) == 64


@pytest.mark.parametrize("file_name", ["a;b.ts", "$(id).ts", "a b.ts", "caf\u00e9.ts", "x'y.ts", "{x}.ts",
                                       "a\nb.ts", "-" + "a" * 200 + ".ts"])
def test_patch_refuses_model_files_with_hostile_names(tmp_path: Path, file_name: str) -> None:
    model = save_ts(tmp_path / "ok.ts", make_card().to_json())
    hostile = tmp_path / file_name
    model.rename(hostile)
    before = snapshot(tmp_path)
    line = one_line_error(invoke("patch", hostile))
    assert "model" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("host", ["127.0.0.1; pd quit", "localhost", "0.0.0.0 1", "$1", "::1\n", ""])
def test_patch_refuses_a_hostile_listen_address(tmp_path: Path, host: str) -> None:
    model = save_ts(tmp_path / "tiny.ts", make_card().to_json())
    before = snapshot(tmp_path)
    assert "--osc-host" in one_line_error(invoke("patch", model, "--osc-host", host))
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------- Pd opens hostile text

HOSTILE_TEXT = ["x; pd quit", "a, b; pd dsp 0", "$0 $1 \\$2", "back\\slash \\; pd quit", "{evil} [x( ]",
                "#N canvas 0 0 1 1 12; #X obj 0 0 pd quit", "caf\u00e9 \u65e5\u672c", "A" * 400]


def _hostile_text_card() -> ModelCard:
    """A card that passes validation while every free-text field carries hostile text."""
    card = make_card(latent_size=len(HOSTILE_TEXT))
    attributes = [dataclasses.replace(a, description=HOSTILE_TEXT[i % len(HOSTILE_TEXT)][:500])
                  for i, a in enumerate(card.attributes)]
    methods = {k: dataclasses.replace(m, input_labels=[t[:64] for t in HOSTILE_TEXT] if m.in_ratio > 1 else [],
                                      output_labels=[t[:64] for t in HOSTILE_TEXT] if m.out_ratio > 1 else [])
               for k, m in card.methods.items()}
    return dataclasses.replace(card, attributes=attributes, methods=methods, profile="x; pd quit")


def _pd_survives(folder: Path, patches: list[Path]) -> str:
    """Open ``patches`` in Pd, then ask a harness to print: Pd must still be there to answer."""
    harness = folder / "harness.pd"
    harness.write_text("#N canvas 0 0 300 300 12;\n#X obj 10 10 r tk-test-alive;\n"
                       "#X obj 10 40 print ALIVE;\n#X connect 0 0 1 0;\n")
    args = [PD, "-nogui", "-nosound", "-nrt", "-stderr", "-path", str(folder)]
    for patch in patches + [harness]:
        args += ["-open", str(patch)]
    args += ["-send", "tk-test-alive bang", "-send", "pd quit"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=folder)
    return done.stdout + done.stderr


@needs_pd
def test_pd_opens_patches_made_from_hostile_text_without_running_it(tmp_path: Path) -> None:
    card = _hostile_text_card()
    ModelCard.from_dict(json.loads(card.to_json()))  # all of it is acceptable card text
    card_file = tmp_path / "hostile.json"
    card_file.write_text(card.to_json())
    result = invoke("patch", card_file, "--host", "both")
    assert result.exit_code == 0, result.output
    pd_files = sorted(tmp_path.glob("hostile-*.pd"))
    assert len(pd_files) == 3
    output = _pd_survives(tmp_path, pd_files)
    assert "ALIVE: bang" in output, output
    assert _problems(output) == [], output
    # Max: the same text is JSON data in comments, never in a box Max parses.
    for maxpat in tmp_path.glob("hostile-*.maxpat"):
        boxes = [b["box"] for b in json.loads(maxpat.read_text())["patcher"]["boxes"]]
        for box in boxes:
            if box.get("maxclass") in ("newobj", "message"):
                assert not any(t[:10] in box["text"] for t in HOSTILE_TEXT), box["text"]


@needs_pd
def test_pd_patch_from_an_api_card_with_a_hostile_name(tmp_path: Path) -> None:
    from tildekit.patches.write import write_patches

    card = make_card(name="x; pd quit $1 \\ {")  # built in code: never read from a file
    written = write_patches(card, tmp_path, host="pd")
    assert [p.name for p in written] == ["x_pd_quit_1-transfer.pd", "x_pd_quit_1-forward.pd", "x_pd_quit_1-osc.pd"]
    assert "ALIVE: bang" in _pd_survives(tmp_path, written)
    bad = dataclasses.replace(card, attributes=[dataclasses.replace(card.attributes[0], name="t; pd quit")])
    before = snapshot(tmp_path)
    with pytest.raises(TildekitError, match="cannot be written safely"):
        write_patches(bad, tmp_path / "other", host="both")
    assert snapshot(tmp_path) == before


def _udp_listeners(port: int) -> list[str]:
    """Local addresses of the UDP sockets bound to ``port`` (IPv4 and IPv6), from /proc/net."""
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            address, hex_port = line.split()[1].split(":")
            if int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(str(ipaddress.ip_address(words)))
    return found


def _read_until(proc: subprocess.Popen, prefix: bytes, guard: float = 120.0) -> str:
    """Pd's console up to the first line starting with ``prefix`` (the guard only stops a hang)."""
    lines = []
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], guard)
        line = proc.stdout.readline() if ready else b""
        if not line:
            printed = b"".join(lines).decode(errors="replace")
            raise AssertionError("Pd never printed " + prefix.decode() + ": " + printed)
        lines.append(line)
        if line.startswith(prefix):
            return b"".join(lines).decode(errors="replace")


@needs_pd
@pytest.mark.skipif(not Path("/proc/net/udp").exists(), reason="reads the socket table from /proc")
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_pd_receiver_binds_only_the_address_it_is_given(tmp_path: Path, host: str) -> None:
    from tildekit.patches.write import write_patches

    port = _free_udp_port()
    kwargs = {} if host == "127.0.0.1" else {"osc_host": host}  # 127.0.0.1 is the default
    write_patches(make_card(), tmp_path, host="pd", osc_port=port, **kwargs)
    assert f"listen \\$1 {host};" in (tmp_path / "tiny-osc.pd").read_text()
    main_patch = tmp_path / "main.pd"
    # Abstractions run their loadbang before their parent's: BOUND comes after the receiver listens.
    main_patch.write_text(f"#N canvas 0 0 300 300 12;\n#X obj 10 10 tiny-osc {port};\n#X obj 10 40 loadbang;\n"
                          f"#X obj 10 70 print BOUND;\n#X connect 1 0 2 0;\n")
    proc = subprocess.Popen([PD, "-nogui", "-nosound", "-stderr", "-path", str(tmp_path), "-open", str(main_patch)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0, cwd=tmp_path)
    try:
        console = _read_until(proc, b"BOUND")
        listeners = _udp_listeners(port)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()
    assert _problems(console) == [], console
    assert listeners == [host], listeners


# ------------------------------------------------------------------------------- folders


def _source(tmp_path: Path) -> Path:
    write(tmp_path / "in" / "a.wav", tone(0.5))
    return tmp_path / "in"


def test_preprocess_never_replaces_a_folder_of_another_program(tmp_path: Path) -> None:
    source = _source(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / INDEX_FILE).write_text('{"another": "program"}')
    (theirs / "photo.jpg").write_bytes(b"\xff\xd8 precious")
    before = snapshot(tmp_path)
    line = one_line_error(invoke("preprocess", source, theirs))
    assert "theirs" in line and "not a tildekit dataset" in line
    assert snapshot(tmp_path) == before


def test_preprocess_keeps_user_files_put_into_its_dataset(tmp_path: Path) -> None:
    source = _source(tmp_path)
    dataset = tmp_path / "ds"
    preprocess(source, dataset, SR, progress=False)
    assert (dataset / MARKER_FILE).is_file()
    (dataset / "notes.txt").write_text("mine")
    write(source / "b.wav", tone(0.5, frequency=330.0))  # new input: a rebuild is due
    before = snapshot(tmp_path)
    line = one_line_error(invoke("preprocess", source, dataset, "--sample-rate", SR, "--min-seconds", "0.1"))
    assert "notes.txt" in line
    assert snapshot(tmp_path) == before


def test_preprocess_leaves_unmarked_lookalike_siblings_alone(tmp_path: Path) -> None:
    """A folder named like a temporary build but without tildekit's marker is not tildekit's."""
    source = _source(tmp_path)
    lookalike = tmp_path / ".ds.tmp-mine"
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("mine")
    preprocess(source, tmp_path / "ds", SR, progress=False)
    assert (lookalike / "keep.txt").read_text() == "mine"


def test_preprocess_output_that_is_a_file(tmp_path: Path) -> None:
    source = _source(tmp_path)
    (tmp_path / "ds").write_text("a file")
    before = snapshot(tmp_path)
    assert "not a folder" in one_line_error(invoke("preprocess", source, tmp_path / "ds"))
    assert snapshot(tmp_path) == before


def test_preprocess_into_a_read_only_folder(tmp_path: Path, read_only: Callable) -> None:
    source = _source(tmp_path)
    locked = read_only(tmp_path / "locked")
    before = snapshot(tmp_path)
    line = one_line_error(invoke("preprocess", source, locked / "ds"))
    assert "locked" in line
    assert snapshot(tmp_path) == before


def test_patch_into_a_file_a_read_only_folder_and_over_a_foreign_file(tmp_path: Path, read_only: Callable) -> None:
    model = save_ts(tmp_path / "tiny.ts", make_card().to_json())
    (tmp_path / "afile").write_text("x")
    locked = read_only(tmp_path / "locked")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "tiny-forward.pd").write_text("#N canvas 0 0 1 1 12;\n#X text 1 1 my own patch;\n")
    before = snapshot(tmp_path)
    assert "is a file" in one_line_error(invoke("patch", model, "--out", tmp_path / "afile"))
    assert "locked" in one_line_error(invoke("patch", model, "--out", locked))
    assert "tiny-forward.pd" in one_line_error(invoke("patch", model, "--out", foreign))
    assert snapshot(tmp_path) == before
    assert invoke("patch", model, "--out", tmp_path / "new").exit_code == 0
    assert invoke("patch", model, "--out", tmp_path / "new").exit_code == 0  # ours: replaced


def test_export_refuses_bad_outputs_without_writing(tmp_path: Path, read_only: Callable) -> None:
    run = _make_run(tmp_path / "run", TINY)
    (tmp_path / "afile").write_text("x")
    locked = read_only(tmp_path / "locked")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "tiny.ts").write_text("my own TorchScript, not an export")
    before = snapshot(tmp_path)
    assert "is a file" in one_line_error(invoke("export", run, "--out", tmp_path / "afile"))
    assert "locked" in one_line_error(invoke("export", run, "--out", locked / "sub", "--name", "tiny"))
    assert "tiny.ts" in one_line_error(invoke("export", run, "--out", foreign, "--name", "tiny"))
    assert snapshot(tmp_path) == before


def test_export_all_is_all_or_nothing(tmp_path: Path) -> None:
    """nn~ and Neutone succeed, ONNX fails (a buffer it cannot use): nothing lands in --out."""
    run = _make_run(tmp_path / "run", TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / "readme.txt").write_text("the user's")
    before = snapshot(tmp_path)
    line = one_line_error(invoke("export", run, "--target", "all", "--out", out, "--name", "tiny",
                                 "--buffer", "1000"))
    assert "--buffer 1000" in line and "no target was written" in line
    assert snapshot(tmp_path) == before
