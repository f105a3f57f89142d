"""Generative sampling from a hyper-representation (R22's S_KDE30; docs/baselines.md).

1. Anchors: the training rows in the top ``top`` fraction by test accuracy (≥ the 0.7 quantile for 30 %).
   On zoos that vary the activation, only anchors of the most frequent activation among them are kept:
   one sampled vector must fit one architecture.
2. KDE: an independent 1-D Gaussian kernel density per latent dimension (scikit-learn ``KernelDensity``,
   bandwidth 0.002 as in R22) fitted on the anchors' latents; every dimension is sampled on its own,
   then clipped to tanh's range [−1, 1]. Beside it (``METHODS``): the joint KDE of the latents (SANE's
   sampling; with bandwidth 0.002 it draws close to single anchors) and R22's B_KDE30, the same
   per-dimension KDE on the anchors' standardised weights, without a hyper-representation.
3. Decode to flat weights, rebuild with ``loading.build_module`` and evaluate on the zoo's test images
   (``loading.evaluate_row``), then again after ``finetune_epochs`` epochs of the zoo's own training
   protocol (``training.train_reference`` resumed from the sampled weights, fresh optimizer).
4. Baselines: the anchors' own accuracies, the anchors decoded from their own latents (``reconstructed``:
   does the decoder work at all?), and random initialisation (the zoo's init scheme, new seeds) trained
   with the same protocol.
5. New models or copies? For every sample, the nearest training checkpoint (Euclidean distance over the
   flat vector, all training rows): its distance relative to its norm, its model and test accuracy. The
   scale to compare with is ``between_models``: for as many anchors, the distance to the nearest
   checkpoint of *another* training model (how far apart two real models are).

The generator is the hyper-representation baseline's model, or (``SamplingConfig.hyperrep``) one trained
for generation only, optionally on other epochs (``SamplingConfig.epochs``; R22 used 5 consecutive late
epochs per model).

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
from modelzoos.baselines.hyperrep import HyperRep, HyperRepConfig
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
    hyperrep: HyperRepConfig | None = None  # the generator's settings; None: reuse the hyperrep baseline's model
    epochs: tuple[int, ...] | None = None  # the generator's samples (anchors too); None: the bench's epochs


def kde_sample(points: np.ndarray, n: int, bandwidth: float, seed: int = 0, *, joint: bool = False,
               bounds: tuple[float, float] | None = (-1.0, 1.0)) -> np.ndarray:
    """``n`` draws [n, d] from a Gaussian KDE of ``points`` [N, d], clipped to ``bounds`` (tanh's range).

    Default (R22's S_KDE): an independent 1-D KDE per column, every column sampled on its own. ``joint``:
    the d-dimensional KDE with an isotropic bandwidth (SANE's sampling): a random point plus N(0, bw²) noise.
    """
    from sklearn.neighbors import KernelDensity

    points = np.asarray(points, dtype=np.float64)
    if joint:
        out = KernelDensity(bandwidth=bandwidth).fit(points).sample(n, random_state=seed)
    else:
        out = np.stack([KernelDensity(bandwidth=bandwidth).fit(points[:, [j]]).sample(n, random_state=seed + j)[:, 0]
                        for j in range(points.shape[1])], axis=1)
    return out if bounds is None else np.clip(out, *bounds)


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


def nearest_checkpoints(weights: torch.Tensor, source: ZooSource, split: str = "train",
                        exclude_models: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """For every flat vector of ``weights`` [n, D], its nearest checkpoint of ``split`` (one pass over the
    rows): ``distance`` (L2), ``relative`` (distance ÷ the checkpoint's norm), ``model_id``, ``epoch`` and
    ``test_acc`` of that checkpoint. ``exclude_models`` [n]: a model whose checkpoints vector i may not match
    (its own model), or None."""
    w = weights.double()
    best = np.full(len(w), np.inf)
    found = {k: np.zeros(len(w), dtype=np.int64) for k in ("model_id", "epoch")}
    found |= {"norm": np.zeros(len(w)), "test_acc": np.zeros(len(w))}
    for batch in source.loader(split, ("weights", "model_id", "epoch", "test_acc")):
        rows = batch["weights"].double()
        dist = torch.cdist(w, rows, compute_mode="donot_use_mm_for_euclid_dist").numpy()
        if exclude_models is not None:
            dist[np.asarray(exclude_models)[:, None] == batch["model_id"].numpy()[None, :]] = np.inf
        idx = dist.argmin(1)
        closer = dist[np.arange(len(w)), idx] < best
        best[closer] = dist[np.arange(len(w)), idx][closer]
        for key in ("model_id", "epoch", "test_acc"):
            found[key][closer] = batch[key].numpy()[idx][closer]
        found["norm"][closer] = rows.norm(dim=1).numpy()[idx][closer]
    return {"distance": best, "relative": best / found.pop("norm"), **found}


METHODS = ("sampled", "sampled_joint", "weight_kde")  # S_KDE30, joint KDE in latent space, B_KDE30


def sample_and_evaluate(rep: HyperRep, source: ZooSource, latents: np.ndarray, meta: Mapping[str, np.ndarray],
                        config: SamplingConfig = SamplingConfig(), *, device: str | torch.device = "cpu",
                        progress: bool = True) -> dict[str, dict[str, list[float]]]:
    """``{"accuracy": {method: [test accuracy]}, "nearest": {...}}`` (module docstring).

    Methods: ``anchors``; ``reconstructed`` (anchors decoded from their own latents); ``sampled`` (R22's
    S_KDE30: per-dimension KDE of the anchors' latents, decoded), ``sampled_joint`` (the joint KDE of the
    latents, decoded: samples around single anchors), ``weight_kde`` (R22's B_KDE30: per-dimension KDE of
    the anchors' weights, standardised as the generator sees them, no hyper-representation), each evaluated
    as is and after ``finetune_epochs`` (``<method>_ft``); ``random`` / ``random_ft``. ``nearest``: per
    sampled model, the relative distance to and the test accuracy of its nearest training checkpoint, and
    per anchor the same for the nearest checkpoint of another model (``between_models``). ``latents``
    [N, latent] and ``meta`` (``test_acc``, ``model_id``, optionally ``activation``) are the training rows
    of ``source``, in the same order (``ZooSource.extract("train", rep.embed)``).
    """
    rows = anchors(meta, config.top)
    own = rows[: config.samples]
    anchor_weights = source.weights("train", rows)
    standard = rep.stats.standardize(anchor_weights.to(rep.device)).cpu().numpy()
    draws = {
        "sampled": rep.decode(torch.from_numpy(kde_sample(latents[rows], config.samples, config.bandwidth,
                                                          config.seed)).float()),
        "sampled_joint": rep.decode(torch.from_numpy(kde_sample(latents[rows], config.samples, config.bandwidth,
                                                                config.seed, joint=True)).float()),
        "weight_kde": rep.stats.restore(torch.from_numpy(kde_sample(
            standard, config.samples, config.bandwidth, config.seed, bounds=None)).float().to(rep.device)).cpu(),
    }
    reconstructed = rep.decode(torch.from_numpy(latents[own]).float())
    zoo = source.info.zoo
    base = zoo.models()[int(meta["model_id"][rows[0]])]
    data = load_image_data(zoo.data)
    out: dict[str, list[float]] = {"anchors": np.asarray(meta["test_acc"])[rows].tolist(), "reconstructed": []}
    out |= {k: [] for m in METHODS for k in (m, f"{m}_ft")} | {"random": [], "random_ft": []}

    def accuracy(flat: torch.Tensor, run: ModelConfig) -> float:
        row = {WEIGHTS: flat, "activation": run.activation, "dropout": run.dropout}
        return evaluate_row(row, source.info, data=data, device=device)[1]

    for i in tqdm(range(config.samples), desc="sampling", disable=not progress):
        run = dataclasses.replace(base, seed=SEED_BASE + i)
        if i < len(reconstructed):
            out["reconstructed"].append(accuracy(reconstructed[i], run))
        for method in METHODS:
            out[method].append(accuracy(draws[method][i], run))
            out[f"{method}_ft"].append(finetune(draws[method][i], source, run, data, config.finetune_epochs, device))
        initial, trained = from_scratch(source, run, data, config.finetune_epochs, device)
        out["random"].append(initial)
        out["random_ft"].append(trained)
    nearest: dict[str, np.ndarray] = {}
    for method in METHODS:
        found = nearest_checkpoints(draws[method], source)
        nearest |= {f"{method}_relative": found["relative"], f"{method}_nearest_acc": found["test_acc"],
                    f"{method}_nearest_models": found["model_id"]}
    between = nearest_checkpoints(anchor_weights[: len(own)], source, exclude_models=np.asarray(meta["model_id"])[own])
    nearest |= {"between_models_relative": between["relative"], "between_models_nearest_acc": between["test_acc"]}
    return {"accuracy": out, "nearest": {k: np.asarray(v).tolist() for k, v in nearest.items()}}
