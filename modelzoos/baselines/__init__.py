"""Weight-space baselines on published zoos: features, probes, learned representations, sampling, benchmark.

Everything reads a config of a dataset repository through ``datasets`` (``data.ZooSource``: map-style
``WeightsDataset`` + DataLoader workers, or streaming) in bounded memory, on any torch device.

- ``features``: s(W) per-layer statistics (70 for CNN-s) and raw weights W;
- ``probes``: closed-form ridge of the benchmark protocol (λ on validation), gradient boosting, the linear
  softmax classifier (docs/baselines.md, "Probes");
- ``hyperrep``: hyper-representation autoencoder (2021/2022); ``sane``: SANE-style windows and tokens;
- ``sampling``: KDE sampling in the hyper-representation's latent space, decoded and evaluated;
- ``bench``: the benchmark behind ``modelzoos bench`` (``run_bench``).

Example::

    from modelzoos.baselines import ZooSource, layer_statistics, ridge_probe
    src = ZooSource("path/to/repo", "digits_cnn_seed")
    x, y = {}, {}
    for split in ("train", "validation", "test"):
        x[split], meta = src.extract(split, lambda w: layer_statistics(w, src.layout))
        y[split] = meta["test_acc"]
    ridge_probe(x, y).scores  # {"train": ..., "val": ..., "test": ...}
"""

from modelzoos.baselines.bench import run_bench
from modelzoos.baselines.data import LayerStats, ZooSource
from modelzoos.baselines.features import layer_statistics, raw_weights, stat_names
from modelzoos.baselines.hyperrep import HyperRep, HyperRepConfig, train_hyperrep
from modelzoos.baselines.probes import LAMBDAS, ProbeResult, gbm_probe, linear_probe, r2_score, ridge_probe
from modelzoos.baselines.sampling import SamplingConfig, sample_and_evaluate
from modelzoos.baselines.sane import Sane, SaneConfig, train_sane

__all__ = [
    "LAMBDAS",
    "HyperRep",
    "HyperRepConfig",
    "LayerStats",
    "ProbeResult",
    "SamplingConfig",
    "Sane",
    "SaneConfig",
    "ZooSource",
    "gbm_probe",
    "layer_statistics",
    "linear_probe",
    "r2_score",
    "raw_weights",
    "ridge_probe",
    "run_bench",
    "sample_and_evaluate",
    "stat_names",
    "train_hyperrep",
    "train_sane",
]
