"""From a run dir to what every exporter wraps: the streaming ExportCore and its model card.

::

    RunDir ─► streaming AutoEncoder (checkpoint weights)
           ─► PCA of the latent statistics (identity + zero mean when the run has none)
           ─► keep the first K principal dimensions (--latent-dims K, or --fidelity F)
           ─► ExportCore ─► card_from_core
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tildekit.errors import TildekitError
from tildekit.export.core import ExportCore
from tildekit.export.model_card import card_from_core
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.names import check_name, slug_name
from tildekit.models.latent_stats import LatentStats


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


def core_from_run(run_dir: str | Path, latent_dims: int | None = None, fidelity: float | None = None,
                  name: str | None = None) -> tuple[ExportCore, ModelCard]:
    """The streaming core and model card of a run's newest checkpoint."""
    from tildekit.models.run import RunDir

    # The name becomes file names and Pd/Max words: an explicit one must already be safe (checked
    # before any work), the run folder's name is made safe.
    name = check_name(name, "--name") if name is not None else slug_name(Path(run_dir).resolve().name)
    run = RunDir(run_dir)
    if run.profile.family != "autoencoder":
        # the export targets, cards and checks take an autoencoder's methods and latent space
        label = {"ddsp": "DDSP"}.get(run.profile.family, run.profile.family)
        raise TildekitError(f"exporting {label} models is not available yet: '{run.path}' is a run of the "
                            f"{run.profile.family} family (profile {run.profile.name}); the export targets "
                            f"take autoencoder runs only")
    model = run.load_model(streaming=True)
    stats = run.latent_stats
    if stats is None:
        warnings.warn(f"{run.path} has no latent statistics: latent dimensions are exported in the "
                      f"model's own order (identity projection, zero mean)", stacklevel=2)
    keep = choose_latent_dims(model.latent_size, stats, latent_dims, fidelity)
    core = core_from_stats(model, stats, keep)
    card = card_from_core(core, name, stats, run.profile.name, run.step)
    return core, card
