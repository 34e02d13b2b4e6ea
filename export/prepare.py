"""From a run dir to what every exporter wraps: the streaming ExportCore and its model card.

::

    RunDir ─► streaming AutoEncoder (checkpoint weights)
           ─► PCA of the latent statistics (identity + zero mean when the run has none)
           ─► keep the first K principal dimensions (--latent-dims K, or --fidelity F)
           ─► ExportCore ─► card_from_core

A DDSP run becomes its streaming model through export/ddsp_export.py, an effect run through
export/effect_export.py (:func:`exportable_from_run` dispatches on the run's family).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tildekit.errors import TildekitError
from tildekit.export.core import ExportCore
from tildekit.export.exportable import Exportable
from tildekit.export.model_card import card_from_core
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.names import check_name, slug_name
from tildekit.models.latent_stats import LatentStats

if TYPE_CHECKING:
    from tildekit.models.run import RunDir


def choose_latent_dims(full: int, stats: LatentStats | None, latent_dims: int | None = None,
                       fidelity: float | None = None) -> int:
    """K: given directly, or the smallest K whose cumulative explained variance reaches ``fidelity``."""
    if latent_dims is not None and fidelity is not None:
        raise TildekitError("give either --latent-dims or --fidelity, not both")
    if latent_dims is not None:
        if not 1 <= latent_dims <= full:
            raise TildekitError(f"--latent-dims {latent_dims} is out of range: this model has "
                                f"{full} latent dimensions, keep 1..{full}")
        return latent_dims
    if fidelity is None:
        return full
    if not 0.0 < fidelity <= 1.0:
        raise TildekitError(f"--fidelity {fidelity} must be in (0, 1]: the share of the latent "
                            f"variance to keep, e.g. 0.99")
    if stats is None:
        raise TildekitError("--fidelity needs the run's latent statistics (latent_stats.json), which "
                            "this run lacks: use --latent-dims K, or train past phase 1")
    total = 0.0
    for k, ratio in enumerate(stats.variance_ratio, start=1):
        total += ratio
        if total >= fidelity - 1e-9:
            return k
    return full


def core_from_stats(model: torch.nn.Module, stats: LatentStats | None, keep: int) -> ExportCore:
    """ExportCore with the PCA projection of ``stats`` (identity when None); dropped dims at their mean."""
    if stats is None:
        return ExportCore(model, keep=keep)
    if stats.size != model.latent_size:
        raise TildekitError(f"latent statistics describe {stats.size} dimensions but the model has "
                            f"{model.latent_size}: recompute them for this checkpoint")
    fill = torch.tensor(stats.dim_mean, dtype=torch.float32)  # deterministic: each dim's mean
    return ExportCore(model, latent_mean=torch.tensor(stats.mean, dtype=torch.float32),
                      components=torch.tensor(stats.components, dtype=torch.float32),
                      keep=keep, fill=fill)


def _run_and_name(run_dir: str | Path, name: str | None) -> tuple[RunDir, str]:
    from tildekit.models.run import RunDir

    # The name becomes file names and Pd/Max words: an explicit one must already be safe (checked
    # before any work), the run folder's name is made safe.
    name = check_name(name, "--name") if name is not None else slug_name(Path(run_dir).resolve().name)
    return RunDir(run_dir), name


def core_from_run(run_dir: str | Path, latent_dims: int | None = None, fidelity: float | None = None,
                  name: str | None = None) -> tuple[ExportCore, ModelCard]:
    """The streaming core and model card of an autoencoder run's newest checkpoint."""
    run, name = _run_and_name(run_dir, name)
    if run.profile.family != "autoencoder":
        raise TildekitError(f"'{run.path}' is a {run.profile.family} run (profile {run.profile.name}): "
                            f"`tildekit eval` takes autoencoder runs only; "
                            f"`tildekit export` exports {run.profile.family} runs")
    return _autoencoder(run, name, latent_dims, fidelity)


def exportable_from_run(run_dir: str | Path, latent_dims: int | None = None, fidelity: float | None = None,
                        name: str | None = None) -> tuple[ExportCore | Exportable, ModelCard]:
    """What the export targets take from a run's newest checkpoint, by its family, and its card."""
    run, name = _run_and_name(run_dir, name)
    family = run.profile.family
    if family == "autoencoder":
        return _autoencoder(run, name, latent_dims, fidelity)
    if family == "ddsp":
        if latent_dims is not None or fidelity is not None:
            raise TildekitError(f"--latent-dims and --fidelity choose an autoencoder's latent dimensions: "
                                f"'{run.path}' is a DDSP run, which has none")
        from tildekit.export import ddsp_export
        from tildekit.models.ddsp import control_stats

        export = ddsp_export.exportable(run.load_model(streaming=True))
        return export, ddsp_export.card(export, name, run.profile.name, run.step,
                                        control_stats.card_extra(run.path))
    if family == "effect":
        if latent_dims is not None or fidelity is not None:
            raise TildekitError(f"--latent-dims and --fidelity choose an autoencoder's latent dimensions: "
                                f"'{run.path}' is an effect run, which has none")
        from tildekit.export import effect_export
        from tildekit.models.effects.train import load_effect_run

        export = effect_export.exportable(load_effect_run(run.path, streaming=True))
        return export, effect_export.card(export, name, run.profile.name, run.step)
    raise TildekitError(f"exporting {family} models is not available yet: '{run.path}' is a run of the "
                        f"{family} family (profile {run.profile.name}); no export adapter takes it")


def _autoencoder(run: RunDir, name: str, latent_dims: int | None,
                 fidelity: float | None) -> tuple[ExportCore, ModelCard]:
    model = run.load_model(streaming=True)
    stats = run.latent_stats
    if stats is None:
        warnings.warn(f"{run.path} has no latent statistics: latent dimensions are exported in the "
                      f"model's own order (identity projection, zero mean)", stacklevel=3)
    keep = choose_latent_dims(model.latent_size, stats, latent_dims, fidelity)
    core = core_from_stats(model, stats, keep)
    card = card_from_core(core, name, stats, run.profile.name, run.step)
    return core, card
