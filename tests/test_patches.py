"""Generated Pd/Max patches: real Pure Data opens them, OSC reaches every control, Max files are sound."""

from __future__ import annotations

import dataclasses
import json
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from pythonosc.udp_client import SimpleUDPClient

from tests.conftest import make_card
from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.oscmap import OscMap, model_slug
from tildekit.patches.write import write_patches

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")

PD = shutil.which("pd")
needs_pd = pytest.mark.skipif(PD is None, reason="Pure Data (Debian package puredata) is not installed")
PROBLEM = re.compile(r"error|couldn't|failed|bad |no such|can't|unknown|not found|no method", re.I)


def _stereo_card() -> ModelCard:
    card = make_card(latent_size=2, name="duo stereo")
    methods = {k: dataclasses.replace(m, in_channels=2 if m.in_ratio == 1 else m.in_channels,
                                      out_channels=2 if m.out_ratio == 1 else m.out_channels)
               for k, m in card.methods.items()}
    return dataclasses.replace(card, channels=2, methods=methods, latents=[])


def _encode_decode_only() -> ModelCard:
    card = make_card(latent_size=1, compression=2048, name="one")
    methods = {k: m for k, m in card.methods.items() if k != "forward"}
    attrs = [a for a in card.attributes if a.name == "temperature"]  # no reset: [reload( instead
    return dataclasses.replace(card, methods=methods, attributes=attrs)


CARDS = {"tiny": make_card, "stereo": _stereo_card, "encdec": _encode_decode_only,
         "wide": lambda: make_card(latent_size=16, name="wide")}


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _problems(output: str) -> list[str]:
    """Console lines reporting a problem, except nn~ failing to create (not installed here)."""
    lines = [line.split(": ", 1)[-1] if line.startswith("verbose(") else line
             for line in output.splitlines()]
    bad = []
    for i, line in enumerate(lines):
        if "couldn't create" in line and i > 0 and lines[i - 1].startswith("nn~ "):
            continue
        if PROBLEM.search(line):
            bad.append(line)
    return bad


def _run_pd(folder: Path, files: list[str], timeout: float = 30) -> str:
    args = [PD, "-nogui", "-nosound", "-nrt", "-stderr", "-path", str(folder)]
    for name in files:
        args += ["-open", str(folder / name)]
    args += ["-send", "pd dsp 1", "-send", "pd quit"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=folder)
    return done.stdout + done.stderr


@needs_pd
@pytest.mark.parametrize("name", sorted(CARDS))
def test_pd_opens_every_patch(tmp_path: Path, name: str) -> None:
    card = CARDS[name]()
    written = write_patches(card, tmp_path, host="pd", osc_port=_free_udp_port())
    assert all(p.suffix == ".pd" for p in written)
    output = _run_pd(tmp_path, [p.name for p in written])
    assert _problems(output) == [], output
    # every nn~ object was at least attempted, with the model named next to the patch
    expected = {f"nn~ {model_slug(card.name)}.ts {m} 2048" for m in card.methods}
    assert {line.split(": ", 1)[-1] for line in output.splitlines() if "nn~ " in line} >= expected


def test_pd_rejects_garbage_detection() -> None:
    """The console check itself catches other failures."""
    out = "verbose(0): nn~ a.ts encode 2048\nverbose(1): ... couldn't create\nfoo 1 2\n... couldn't create\n"
    assert _problems(out) == ["... couldn't create"]
    assert _problems("x.pd 1 0 2 0 (obj->obj) connection failed") != []


def _osc_harness(folder: Path, names: list[str]) -> Path:
    """A patch printing everything sent to the control names, so the test can see OSC arrive."""
    lines = ["#N canvas 0 0 400 400 12;"]
    for k, name in enumerate(names):
        lines.append(f"#X obj 10 {10 + 30 * k} r {name};")
        lines.append(f"#X obj 200 {10 + 30 * k} print {name};")
    lines += [f"#X connect {2 * k} 0 {2 * k + 1} 0;" for k in range(len(names))]
    path = folder / "harness.pd"
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_pd
def test_pd_osc_reaches_every_control(tmp_path: Path) -> None:
    card = make_card(latent_size=3)
    port = _free_udp_port()
    osc = OscMap(card)
    paths = write_patches(card, tmp_path, host="pd", osc_port=port)
    sends = [f"tk-tiny-{kind}-{i}" for kind in ("bias", "scale") for i in range(3)]
    sends += [f"tk-tiny-attr-{a.name}" for a in card.attributes] + ["tk-tiny-gain", "tk-tiny-reset"]
    harness = _osc_harness(tmp_path, sends)
    osc_patch = next(p for p in paths if p.name == "tiny-osc.pd")
    # Open the receiver abstraction on its own, with the port as its argument, plus the harness.
    main_patch = tmp_path / "main.pd"
    main_patch.write_text(f"#N canvas 0 0 300 300 12;\n#X obj 10 10 tiny-osc {port};\n")
    proc = subprocess.Popen([PD, "-nogui", "-nosound", "-stderr", "-path", str(tmp_path),
                             "-open", str(harness), "-open", str(main_patch)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()
    client = SimpleUDPClient("127.0.0.1", port)
    seen: list[str] = []

    def wait_for(prefix: str, deadline: float = 20.0) -> str:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} from Pd; console:\n" + "\n".join(seen))

    try:
        # The receiver binds its port on load; retry the first message until it is heard.
        end = time.monotonic() + 20
        got = None
        while got is None and time.monotonic() < end:
            client.send_message(osc.gain, 0.5)
            try:
                got = wait_for("tk-tiny-gain:", deadline=0.5)
            except AssertionError:
                pass
        assert got == "tk-tiny-gain: 0.5", "\n".join(seen)
        checks = [
            (osc.latent(1), [0.25], "tk-tiny-bias-1: 0.25"),
            (osc.latent_scale(2), [1.5], "tk-tiny-scale-2: 1.5"),
            (osc.latent_scale(0), [-1.0], "tk-tiny-scale-0: -1"),
            (osc.attr("temperature"), [0.75], "tk-tiny-attr-temperature: 0.75"),
            (osc.attr("latent_bias"), [0.1, 0.2, 0.3], "tk-tiny-attr-latent_bias: 0.1 0.2 0.3"),
            # Pd 0.53's oscparse rejects the T/F type tags: bools travel as words or 0/1
            (osc.attr("reset"), ["true"], "tk-tiny-attr-reset: true"),
            (osc.attr("reset"), [0], "tk-tiny-attr-reset: 0"),
            (osc.attr("reset"), ["false"], "tk-tiny-attr-reset: false"),
            (osc.reset, [], "tk-tiny-reset: bang"),
        ]
        for address, args, expected in checks:
            client.send_message(address, args)
            line = wait_for(expected.split(":")[0] + ":")
            assert line.startswith(expected), (address, line)
        client.send_message(osc.bias_all, [1.0, 2.0, 3.0])
        got_all = sorted(wait_for("tk-tiny-bias-") for _ in range(3))  # [unpack] fires right to left
        assert got_all == ["tk-tiny-bias-0: 1", "tk-tiny-bias-1: 2", "tk-tiny-bias-2: 3"]
        client.send_message(osc.scale_all, [0.5, 0.5, 0.5])
        got_all = sorted(wait_for("tk-tiny-scale-") for _ in range(3))
        assert got_all == [f"tk-tiny-scale-{i}: 0.5" for i in range(3)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert _problems("\n".join(seen)) == []
    assert osc_patch.exists()


@needs_pd
def test_pd_bool_words_drive_the_messages(tmp_path: Path) -> None:
    """[r ...-attr-reset] turns true/false words and 1/0 numbers into `set reset true|false`."""
    card = make_card(latent_size=2)
    write_patches(card, tmp_path, host="pd", osc_port=_free_udp_port())
    text = (tmp_path / "tiny-forward.pd").read_text()
    assert "#X msg" in text and "set reset true;" in text and "set reset false;" in text
    assert "set temperature 0;" in text
    assert "bufsize 2048" in text  # 1-in/1-out forward in Pd (docs/contracts.md §1)


def _max_boxes(path: Path) -> tuple[dict[str, dict], list[dict]]:
    data = json.loads(path.read_text())
    patcher = data["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
    assert len(boxes) == len(patcher["boxes"]), "duplicate box ids"
    return boxes, [line["patchline"] for line in patcher["lines"]]


@pytest.mark.parametrize("name", sorted(CARDS))
def test_max_patches_are_consistent(tmp_path: Path, name: str) -> None:
    card = CARDS[name]()
    written = write_patches(card, tmp_path, host="max", buffer=4096)
    assert written and all(p.suffix == ".maxpat" for p in written)
    for path in written:
        boxes, lines = _max_boxes(path)
        for line in lines:
            (src, outlet), (dst, inlet) = line["source"], line["destination"]
            assert src in boxes and dst in boxes, line
            assert 0 <= outlet < boxes[src]["numoutlets"], (path.name, boxes[src].get("text"), outlet)
            assert 0 <= inlet < boxes[dst]["numinlets"], (path.name, boxes[dst].get("text"), inlet)
        for box in boxes.values():
            text = box.get("text", "")
            if box.get("maxclass") == "newobj" and text.startswith("nn~ "):
                _, model, method, buffer = text.split()
                spec = card.methods[method]
                assert model == f"{model_slug(card.name)}.ts"
                assert buffer == "4096"
                assert box["numinlets"] == max(1, spec.in_channels)
                assert box["numoutlets"] == spec.out_channels
                assert box["outlettype"] == ["signal"] * spec.out_channels


def _expected_addresses(card: ModelCard) -> set[str]:
    osc = OscMap(card)
    addresses = {osc.bias_all, osc.scale_all, osc.gain, osc.reset}
    addresses |= {osc.latent(i) for i in range(card.latent_size)}
    addresses |= {osc.latent_scale(i) for i in range(card.latent_size)}
    addresses |= {osc.attr(a.name) for a in card.attributes}
    return addresses


@pytest.mark.parametrize("name", sorted(CARDS))
def test_max_osc_routes_cover_the_address_space(tmp_path: Path, name: str) -> None:
    card = CARDS[name]()
    write_patches(card, tmp_path, host="max")
    stem = model_slug(card.name)
    boxes, _ = _max_boxes(tmp_path / f"{stem}-osc.maxpat")
    routes = [b["text"].split()[1:] for b in boxes.values() if b.get("text", "").startswith("route /")]
    assert len(routes) == 1
    assert set(routes[0]) == _expected_addresses(card)
    assert any(b.get("text") == "udpreceive 9000" for b in boxes.values())


def test_slider_ranges_come_from_latent_statistics(tmp_path: Path) -> None:
    card = make_card(latent_size=2)
    card = dataclasses.replace(card, latents=[card.latents[0]])  # dimension 1 has no statistics
    write_patches(card, tmp_path, host="both")
    pd_text = (tmp_path / "tiny-transfer.pd").read_text()
    assert "hsl 128 15 -2 2 0 0 empty empty bias_0" in pd_text  # minimum/maximum of dimension 0
    assert "hsl 128 15 -3 3 0 0 empty empty bias_1" in pd_text  # fallback
    boxes, _ = _max_boxes(tmp_path / "tiny-transfer.maxpat")
    sliders = {b["hint"]: (b["min"], b["size"]) for b in boxes.values() if b["maxclass"] == "slider"}
    assert sliders["bias_0"] == (-2.0, 4.0) and sliders["bias_1"] == (-3.0, 6.0)


def _save_ts(path: Path, card: ModelCard) -> Path:
    module = torch.jit.script(torch.nn.Linear(1, 1))
    torch.jit.save(module, str(path), _extra_files=card_extra_files(card))
    return path


def test_cli_patch_from_exported_file_into_other_folder(tmp_path: Path) -> None:
    card = make_card()
    model = _save_ts(tmp_path / "models" / "tiny.ts", card) if (tmp_path / "models").mkdir() is None else None
    out = tmp_path / "patches"
    result = CliRunner().invoke(main, ["patch", str(model), "--out", str(out), "--host", "pd"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["tiny-forward.pd", "tiny-osc.pd", "tiny-transfer.pd"]
    assert "nn~ ../models/tiny.ts encode 2048" in (out / "tiny-transfer.pd").read_text()
    # default: next to the model, named by file name
    result = CliRunner().invoke(main, ["patch", str(model), "--host", "max", "--buffer", "512"])
    assert result.exit_code == 0, result.output
    assert "nn~ tiny.ts decode 512" in (model.parent / "tiny-transfer.maxpat").read_text()
    assert not list(model.parent.glob("*.tmp"))


@pytest.mark.parametrize("buffer, why", [(1000, "power of two"), (64, "highest ratio 128"), (0, "power of two")])
def test_bad_buffer(tmp_path: Path, buffer: int, why: str) -> None:
    with pytest.raises(TildekitError, match=why):
        write_patches(make_card(), tmp_path, buffer=buffer)
    result = CliRunner().invoke(main, ["patch", str(tmp_path / "x.json"), "--buffer", str(buffer)])
    assert result.exit_code == 2


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["patch", str(tmp_path / "nope.ts")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "tiny.json").write_text(make_card().to_json())
    bad = CliRunner().invoke(main, ["patch", str(tmp_path / "tiny.json"), "--buffer", "100"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "power of two" in bad.output


def test_neutone_file_is_refused(tmp_path: Path) -> None:
    model = _save_ts(tmp_path / "tiny.nm", make_card())
    with pytest.raises(TildekitError, match="nn~ loads TorchScript .ts"):
        write_patches(model)


def test_path_with_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TildekitError, match="cannot pass to nn~"):
        write_patches(make_card(), tmp_path, model_file=tmp_path / "my model.ts")


def test_patches_from_json_card_name_the_ts_beside_it(tmp_path: Path) -> None:
    (tmp_path / "tiny.json").write_text(make_card().to_json())
    written = write_patches(tmp_path / "tiny.json", host="pd")
    assert "nn~ tiny.ts forward 2048" in (tmp_path / "tiny-forward.pd").read_text()
    assert len(written) == 3
