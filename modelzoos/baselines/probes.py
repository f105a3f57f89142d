"""Probes from features to model properties (docs/baselines.md, "Probes, and how to read the table").

Every probe takes features and targets per split (``{"train": ..., "validation": ..., "test": ...}``),
fits on train, selects on validation only, and reports a score on all three splits, each on its own rows:

- ``ridge_probe``: closed-form ridge exactly as §11.3 (the reference row of every table). A ones column is
  appended (the intercept is penalised like every coefficient), float64, (XᵀX + λI) b = Xᵀy solved per λ
  of ``LAMBDAS``; λ is the one with the best **validation** R² (no fallback to train); R² = 1 − MSE / Var(y)
  per split, each with its own mean; rows with a NaN target are dropped. When there are fewer train rows
  than columns the identical solution is computed in dual form, b = Xᵀ (XXᵀ + λI)⁻¹ y (an n × n solve
  instead of d × d).
- ``standardized_ridge_probe``: not in the protocol, robust where it is not. Every feature is standardised
  with the train split's mean and std (constant features dropped), the intercept is the train mean of the
  target and is not penalised, and λ runs over the wider grid ``STD_LAMBDAS`` (1e-3 … 1e6), again chosen
  on validation. Without it, features in the thousands (diverged runs) or a penalised intercept (weights
  with no linear signal: predictions shrink to 0, not to the mean) give R² of −10 to −10⁶.
- ``gbm_probe``: scikit-learn ``HistGradientBoostingRegressor`` (fixed seed), early-stopped on the
  validation split (Unterthiner et al. early-stopped on test; we do not).
- ``linear_probe``: §11.4's classifier for categorical targets, in torch: one Linear layer (softmax,
  no hidden layer), kaiming-normal init, Adam lr 1e-4, weight decay 1e-6, 50 epochs, minibatch 10,
  seed 42, unstandardised features. Classes are those seen in train; an unseen label counts as wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modelzoos.repository import SPLITS

REPORT = {"train": "train", "validation": "val", "test": "test"}  # split → key of ProbeResult.scores
LAMBDAS = (1e3, 3e2, 1e2, 3e1, 1e1, 3.0, 1.0, 0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
STD_LAMBDAS = tuple(float(f"{10 ** (k / 2):.3g}") for k in range(12, -7, -1))  # 1e6, 3.16e5, ..., 1e-3
R2_FLOOR = -1.0  # a test R² below this is flagged: worse than predicting a constant by a whole variance

Splits = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ProbeResult:
    """Scores of one probe on one target: ``scores`` = {"train", "val", "test"} → R² or accuracy."""

    metric: str  # "r2" | "accuracy"
    scores: dict[str, float]
    predictions: dict[str, np.ndarray] = field(repr=False)  # per split, for the rows kept (NaN targets dropped)
    targets: dict[str, np.ndarray] = field(repr=False)
    lam: float | None = None  # ridge: the λ chosen on validation
    val_curve: dict[float, float] | None = field(default=None, repr=False)  # ridge: validation R² per λ

    @property
    def flags(self) -> list[str]:
        """Warnings for the table: ``"r2<-1"`` (test R² below ``R2_FLOOR``), ``"lambda-edge"`` (the chosen λ
        is the largest or smallest of its grid: the best value may lie outside it)."""
        out = []
        if self.metric == "r2" and self.scores["test"] < R2_FLOOR:
            out.append("r2<-1")
        if self.val_curve is not None and self.lam in (max(self.val_curve), min(self.val_curve)):
            out.append("lambda-edge")
        return out

    def to_json(self) -> dict:
        out = {"metric": self.metric, **self.scores}
        out |= {"lambda": self.lam} if self.lam is not None else {}
        return out | ({"flags": self.flags} if self.flags else {})


def _check(x: Splits, y: Splits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split (features [n, d], targets [n]) with NaN targets dropped."""
    missing = [s for s in SPLITS if s not in x or s not in y]
    if missing:
        raise KeyError(f"probes need features and targets for {', '.join(SPLITS)}; missing {missing}")
    out = {}
    for s in SPLITS:
        xs, ys = np.asarray(x[s]), np.asarray(y[s])
        if xs.ndim != 2 or len(xs) != len(ys):
            raise ValueError(f"{s}: features must be [n, d] with one target per row, got {xs.shape} and {ys.shape}")
        keep = ~np.isnan(ys) if ys.dtype.kind == "f" else np.ones(len(ys), bool)
        if not keep.any():
            raise ValueError(f"{s}: no row with a target (all NaN)")
        out[s] = (xs[keep], ys[keep])
    return out


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """1 − MSE / Var(y), Var with ``y``'s own mean (−inf-free: a constant ``y`` gives NaN)."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    var = y.var()
    return float(1 - np.mean((y - pred) ** 2) / var) if var > 0 else float("nan")


# ---------------------------------------------------------------------------------------------------------
# Ridge (§11.3)
# ---------------------------------------------------------------------------------------------------------


def _with_ones(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.hstack([x, np.ones((len(x), 1))])


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Coefficients [d + 1] (last: intercept, penalised) solving (XᵀX + λI) b = Xᵀy with X = [x, 1], float64."""
    return _ridge_solver(_with_ones(x), np.asarray(y, np.float64))(lam)


def _ridge_solver(xa: np.ndarray, y: np.ndarray):
    n, d = xa.shape
    if n >= d:
        gram, rhs = xa.T @ xa, xa.T @ y
        return lambda lam: np.linalg.solve(gram + lam * np.eye(d), rhs)
    kernel = xa @ xa.T  # dual form: the same b, solving an n × n system
    return lambda lam: xa.T @ np.linalg.solve(kernel + lam * np.eye(n), y)


def _choose(data: dict[str, tuple[np.ndarray, np.ndarray]], solve, predict, lambdas: tuple[float, ...]) -> ProbeResult:
    """Fit every λ (``solve(λ)`` → coefficients), keep the best validation R², score all splits."""
    coefs = {lam: solve(lam) for lam in lambdas}
    xv, yv = data["validation"]
    curve = {lam: r2_score(yv, predict(xv, b)) for lam, b in coefs.items()}
    if all(np.isnan(v) for v in curve.values()):
        raise ValueError("validation targets are constant: R² is undefined, so λ cannot be chosen on validation")
    best = max(lambdas, key=lambda lam: -np.inf if np.isnan(curve[lam]) else curve[lam])
    preds = {s: predict(xs, coefs[best]) for s, (xs, _) in data.items()}
    return ProbeResult("r2", {REPORT[s]: r2_score(data[s][1], preds[s]) for s in SPLITS}, preds,
                       {s: data[s][1] for s in SPLITS}, lam=best, val_curve=curve)


def ridge_probe(x: Splits, y: Splits, lambdas: tuple[float, ...] = LAMBDAS) -> ProbeResult:
    """Closed-form ridge of §11.3; λ chosen by validation R² only (module docstring)."""
    data = {s: (_with_ones(xs), ys.astype(np.float64)) for s, (xs, ys) in _check(x, y).items()}
    return _choose(data, _ridge_solver(*data["train"]), lambda xs, b: xs @ b, lambdas)


def standardize(x: Splits) -> dict[str, np.ndarray]:
    """Features per split standardised with the train split's mean and std (float64); features constant on
    train (or non-finite there) are dropped."""
    train = np.asarray(x["train"], dtype=np.float64)
    mean, std = train.mean(0), train.std(0)
    keep = np.isfinite(mean) & np.isfinite(std) & (std > 0)
    return {s: (np.asarray(v, dtype=np.float64)[:, keep] - mean[keep]) / std[keep] for s, v in x.items()}


def standardized_ridge_probe(x: Splits, y: Splits, lambdas: tuple[float, ...] = STD_LAMBDAS) -> ProbeResult:
    """Ridge on standardised features with an unpenalised intercept; λ by validation R² (module docstring)."""
    checked = _check(x, y)
    z = standardize({s: xs for s, (xs, _) in checked.items()})
    data = {s: (z[s], ys.astype(np.float64)) for s, (_, ys) in checked.items()}
    offset = data["train"][1].mean()
    solve = _ridge_solver(data["train"][0], data["train"][1] - offset)
    return _choose(data, solve, lambda xs, b: xs @ b + offset, lambdas)


# ---------------------------------------------------------------------------------------------------------
# Gradient boosting
# ---------------------------------------------------------------------------------------------------------


def gbm_probe(x: Splits, y: Splits, seed: int = 0, max_iter: int = 500) -> ProbeResult:
    """``HistGradientBoostingRegressor`` (seed ``seed``), early stopping on the validation split."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    data = _check(x, y)
    model = HistGradientBoostingRegressor(max_iter=max_iter, early_stopping=True, n_iter_no_change=20,
                                          random_state=seed)
    model.fit(*data["train"], X_val=data["validation"][0], y_val=data["validation"][1])
    preds = {s: model.predict(xs) for s, (xs, _) in data.items()}
    return ProbeResult("r2", {REPORT[s]: r2_score(data[s][1], preds[s]) for s in SPLITS}, preds,
                       {s: data[s][1] for s in SPLITS})


# ---------------------------------------------------------------------------------------------------------
# Linear softmax classifier (§11.4)
# ---------------------------------------------------------------------------------------------------------


def linear_probe(x: Splits, labels: Splits, *, epochs: int = 50, batch_size: int = 10, lr: float = 1e-4,
                 weight_decay: float = 1e-6, seed: int = 42, device: str | torch.device = "cpu") -> ProbeResult:
    """Accuracy of the §11.4 linear softmax classifier (module docstring) on each split."""
    data = _check(x, labels)
    classes = sorted(set(data["train"][1].tolist()))
    code = {c: i for i, c in enumerate(classes)}
    device = torch.device(device)

    def tensors(s: str) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = data[s]
        return (torch.as_tensor(xs, dtype=torch.float32, device=device),
                torch.tensor([code.get(v, -1) for v in ys.tolist()], dtype=torch.int64, device=device))

    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
        torch.manual_seed(seed)
        layer = nn.Linear(data["train"][0].shape[1], len(classes))
        nn.init.kaiming_normal_(layer.weight)
    layer = layer.to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = tensors("train")
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).to(device).split(batch_size):
            loss = F.cross_entropy(layer(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    scores, preds = {}, {}
    with torch.no_grad():
        for s in SPLITS:
            xs, ys = tensors(s)
            pred = layer(xs).argmax(1)
            scores[REPORT[s]] = int((pred == ys).sum()) / len(ys)
            preds[s] = np.asarray(classes, dtype=object)[pred.cpu().numpy()]
    return ProbeResult("accuracy", scores, preds, {s: data[s][1] for s in SPLITS})
