"""Generative sampling from a hyper-representation (R22's S_KDE30, baselines.md §5.2-5.3).

1. Anchors: the training rows in the top ``top`` fraction by test accuracy (≥ the 0.7 quantile for 30 %).
   On zoos that vary the activation, only anchors of the most frequent activation among them are kept:
   one sampled vector must fit one architecture.
2. KDE: an independent 1-D Gaussian kernel density per latent dimension (scikit-learn ``KernelDensity``,
   bandwidth 0.002 as in R22) fitted on the anchors' latents; every dimension is sampled on its own,
   then clipped to tanh's range [−1, 1].
3. Decode to flat weights, rebuild with ``loading.build_module`` and evaluate on the zoo's test images
   (``loading.evaluate_row``), then again after ``finetune_epochs`` epochs of the zoo's own training
   protocol (``training.train_reference`` resumed from the sampled weights, fresh optimizer).
4. Baselines: the anchors' own accuracies, and random initialisation (the zoo's init scheme, new seeds)
   trained with the same protocol.

The training configuration is that of the best anchor (optimizer, lr, batch size, ...); the run seeds
(data order, and for random init the weights) are ``SEED_BASE + i``, outside every catalogue seed range.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from modelzoos.baselines.data import ZooSource
from modelzoos.baselines.hyperrep import HyperRep
from modelzoos.catalogue import ModelConfig
from modelzoos.data import ImageData, load_image_data
from modelzoos.loading import WEIGHTS, build_module, evaluate_row
from modelzoos.training import train_reference

SEED_BASE = 10_000_000


@dataclass(frozen=True)
class SamplingConfig:
    samples: int = 20  # sampled models, and as many random initialisations
    top: float = 0.3  # fraction of training rows used as anchors
    bandwidth: float = 0.002  # per-dimension KDE bandwidth, in latent units
    finetune_epochs: int = 1
    seed: int = 0


def kde_sample(latents: np.ndarray, n: int, bandwidth: float, seed: int = 0) -> np.ndarray:
    """``n`` draws [n, d] from independent 1-D Gaussian KDEs of each column of ``latents`` [N, d], in [−1, 1]."""
    from sklearn.neighbors import KernelDensity

    latents = np.asarray(latents, dtype=np.float64)
    columns = [KernelDensity(bandwidth=bandwidth).fit(latents[:, [j]]).sample(n, random_state=seed + j)[:, 0]
               for j in range(latents.shape[1])]
    return np.clip(np.stack(columns, axis=1), -1.0, 1.0)


def anchors(meta: Mapping[str, np.ndarray], top: float) -> np.ndarray:
    """Indices of the anchor rows (module docstring, step 1), best first."""
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    acc = np.asarray(meta["test_acc"], dtype=np.float64)
    keep = acc >= np.quantile(acc, 1 - top)
    if "activation" in meta:
        common = Counter(np.asarray(meta["activation"])[keep].tolist()).most_common(1)[0][0]
        keep &= np.asarray(meta["activation"]) == common
    idx = np.flatnonzero(keep)
    return idx[np.argsort(-acc[idx], kind="stable")]


def finetune(weights: torch.Tensor, source: ZooSource, config: ModelConfig, data: ImageData, epochs: int,
             device: str | torch.device) -> float:
    """Test accuracy after ``epochs`` epochs of the zoo protocol started from flat ``weights`` [D]."""
    module = build_module({WEIGHTS: weights, "activation": config.activation, "dropout": config.dropout},
                          source.info, device)
    state = {f"model.{k}": v for k, v in module.state_dict().items()} | {"step": torch.tensor(0)}
    *_, last = train_reference(source.info.zoo, config, data, device, resume=(0, state), stop=epochs)
    return last.metrics["test_acc"][0]


def from_scratch(source: ZooSource, config: ModelConfig, data: ImageData, epochs: int,
                 device: str | torch.device) -> tuple[float, float]:
    """(test accuracy at initialisation, after ``epochs`` epochs) of a new model of the zoo protocol."""
    results = list(train_reference(source.info.zoo, config, data, device, stop=epochs))
    return results[0].metrics["test_acc"][0], results[-1].metrics["test_acc"][0]


def sample_and_evaluate(rep: HyperRep, source: ZooSource, latents: np.ndarray, meta: Mapping[str, np.ndarray],
                        config: SamplingConfig = SamplingConfig(), *, device: str | torch.device = "cpu",
                        progress: bool = True) -> dict[str, list[float]]:
    """Test accuracies per method: ``anchors``, ``sampled``, ``sampled_ft``, ``random``, ``random_ft``.

    ``latents`` [N, latent] and ``meta`` (``test_acc``, ``model_id``, optionally ``activation``) are the
    training rows, in the same order (``ZooSource.extract("train", rep.embed)``).
    """
    rows = anchors(meta, config.top)
    z = kde_sample(latents[rows], config.samples, config.bandwidth, config.seed)
    weights = rep.decode(torch.from_numpy(z).float())
    zoo = source.info.zoo
    base = zoo.models()[int(meta["model_id"][rows[0]])]
    data = load_image_data(zoo.data)
    out: dict[str, list[float]] = {"anchors": np.asarray(meta["test_acc"])[rows].tolist(), "sampled": [],
                                   "sampled_ft": [], "random": [], "random_ft": []}
    for i in tqdm(range(config.samples), desc="sampling", disable=not progress):
        run = dataclasses.replace(base, seed=SEED_BASE + i)
        row = {WEIGHTS: weights[i], "activation": run.activation, "dropout": run.dropout}
        out["sampled"].append(evaluate_row(row, source.info, data=data, device=device)[1])
        out["sampled_ft"].append(finetune(weights[i], source, run, data, config.finetune_epochs, device))
        initial, trained = from_scratch(source, run, data, config.finetune_epochs, device)
        out["random"].append(initial)
        out["random_ft"].append(trained)
    return out
