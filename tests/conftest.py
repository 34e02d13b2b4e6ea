"""Shared fixtures: generated audio and hand-built model cards (no training needed), and a guard
that fails any test leaving a child process running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from tildekit.models.contract.card import AttributeSpec, LatentDim, MethodSpec, ModelCard


def make_card(latent_size: int = 4, compression: int = 128, sample_rate: int = 16000,
              name: str = "tiny", channels: int = 1, delay: int = 500) -> ModelCard:
    """A card shaped like the nn~ exporter's output for a small model (consistent, so it also
    passes the readers' validation when written to a file)."""
    labels = [f"latent {i}" for i in range(latent_size)]
    audio_in = ["audio in"] if channels == 1 else [f"audio in {c + 1}" for c in range(channels)]
    audio_out = ["audio out"] if channels == 1 else [f"audio out {c + 1}" for c in range(channels)]
    return ModelCard(
        name=name,
        sample_rate=sample_rate,
        channels=channels,
        compression=compression,
        latent_size=latent_size,
        methods={
            "encode": MethodSpec(channels, 1, latent_size, compression, audio_in, labels, delay=300),
            "decode": MethodSpec(latent_size, compression, channels, 1, labels, audio_out, delay=200),
            "forward": MethodSpec(channels, 1, channels, 1, audio_in, audio_out, delay=delay),
        },
        attributes=[
            AttributeSpec("temperature", ["float"], [0.0], 0.0, 10.0, "posterior noise scale"),
            AttributeSpec("latent_bias", ["float"] * latent_size, [0.0] * latent_size,
                          description="per-dimension latent offset"),
            AttributeSpec("latent_scale", ["float"] * latent_size, [1.0] * latent_size,
                          description="per-dimension latent gain"),
            AttributeSpec("reset", ["bool"], [False], description="clear the streaming state"),
        ],
        delay=delay,
        latents=[LatentDim(mean=0.1 * i, std=1.0, minimum=-2.0 - i, maximum=2.0 + i,
                           variance_ratio=1.0 / latent_size) for i in range(latent_size)],
        profile="small",
    )


@pytest.fixture
def tiny_card() -> ModelCard:
    return make_card()


@pytest.fixture(scope="module")
def one_thread():
    """Buffer-sized calls run fastest on one thread, as in a host's audio thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def export_tiny_model(folder: Path, stem: str = "tiny", latent_size: int = 4) -> Path:
    """STEM.ts (the nn~ module, scripted), STEM.onnx + STEM.decode.onnx (streaming graphs taking
    any multiple of 128 samples) from one random `small` core of capacity 8, card name "tiny".
    A real export in seconds: export_nn's minute of contract checks is tested in the exporter's tests."""
    import onnx

    from tildekit.export.card_io import card_extra_files
    from tildekit.export.core import ExportCore
    from tildekit.export.model_card import card_from_core
    from tildekit.export.nn_tilde import script_nn_tilde
    from tildekit.export.onnx_export import build_onnx
    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile

    torch.manual_seed(0)
    cfg = load_profile("small", ["model.capacity=8", f"model.latent_size={latent_size}"]).model
    whole = build_model(cfg, False).eval()
    streaming = build_model(cfg, True)
    streaming.load_state_dict(whole.state_dict())
    core = ExportCore(streaming)
    card = card_from_core(core, "tiny", None, "small", 0)
    torch.jit.save(script_nn_tilde(core, card), str(folder / f"{stem}.ts"), _extra_files=card_extra_files(card))
    for method, name in (("forward", f"{stem}.onnx"), ("decode", f"{stem}.decode.onnx")):
        core.reset_state()
        proto, _ = build_onnx(core, card, method, streaming=True)
        onnx.save(proto, str(folder / name))
    return folder
# ------------------------------------------------------------------------------- child processes

PROC = Path("/proc")
# Long-lived helpers Python's multiprocessing starts once per interpreter, on purpose.
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver",
                       "multiprocessing.semaphore_tracker")


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc (empty where there is none)."""
    table = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def _descendants(root: int) -> dict[int, str]:
    """Every running (not zombie) descendant of ``root``: pid -> command line."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, str] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        if table[pid][1] == "Z":
            continue
        try:
            command = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if not any(helper in command for helper in INTERPRETER_HELPERS):
            found[pid] = command.strip()
    return found


@pytest.fixture(autouse=True)
def no_child_process_outlives_its_test():
    """Fail a test whose child processes are still running when it ends; kill and reap them."""
    before = set(_descendants(os.getpid()))
    yield
    left = {pid: cmd for pid, cmd in _descendants(os.getpid()).items() if pid not in before}
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in left:
        try:
            os.waitpid(pid, 0)  # reaps direct children; others are gone with their parent
        except ChildProcessError:
            pass
    listed = "; ".join(f"{pid}: {cmd[:120]}" for pid, cmd in sorted(left.items()))
    pytest.fail(f"child process(es) outlived the test and were killed: {listed}", pytrace=False)
