"""Weight-space baselines (modelzoos.baselines) on a real tiny digits zoo published to a repository folder.

The zoo is the suite's 20 models × 3 epochs of ``digits_cnn_seed`` (splits 14 / 3 / 3 models) in the shared
repository folder (conftest); everything is read back through ``datasets`` offline.
Learned baselines use tiny sizes: the tests check mechanics (losses decrease, held-out models, files),
not quality — the digits benchmark in the report does that.
"""

import inspect
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from modelzoos.baselines import bench, probes
from modelzoos.baselines.data import (
    SPLITS,
    WEIGHT_THRESHOLD,
    LayerStats,
    ModelBatches,
    ZooSource,
    layer_ids,
    parse_threshold,
    removal_counts,
    tensor_ids,
)
from modelzoos.baselines.features import STATISTICS, layer_statistics, stat_names
from modelzoos.baselines.hyperrep import POOLINGS, HyperRepConfig, nt_xent, train_hyperrep, train_loader
from modelzoos.baselines.probes import (
    LAMBDAS,
    STD_LAMBDAS,
    gbm_probe,
    linear_probe,
    r2_score,
    ridge_fit,
    ridge_probe,
    standardized_ridge_probe,
)
from modelzoos.baselines.sampling import (
    SamplingConfig,
    anchors,
    kde_sample,
    nearest_checkpoints,
    sample_and_evaluate,
)
from modelzoos.baselines.sane import SaneConfig, train_sane
from modelzoos.cli import main, parser
from modelzoos.loading import WEIGHTS, load_zoo
from modelzoos.repository import SPLITS as REPOSITORY_SPLITS
from modelzoos.transforms import chunk_tokens

CONFIG = "digits_cnn_seed"
TINY_HYPERREP = HyperRepConfig(d_model=32, ffn=64, latent=16, epochs=6, batch_size=16, permutations=100)
TINY_SANE = SaneConfig(d_model=32, latent=8, window=16, epochs=6, batch_size=16, permutations=100)


pytestmark = pytest.mark.usefixtures("hf_offline", "one_thread")  # conftest: offline HF caches, 1 torch thread


@pytest.fixture(scope="module")
def repo(repo_dir) -> Path:
    return repo_dir


@pytest.fixture(scope="module")
def source(repo) -> ZooSource:
    return ZooSource(repo, CONFIG)


@pytest.fixture(scope="module")
def hyperrep(source):
    return train_hyperrep(source, TINY_HYPERREP, progress=False)


# ---------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------


def test_stats_have_70_columns_for_cnn_s(source):
    features, meta = source.extract("test", lambda w: layer_statistics(w, source.layout))
    assert features.shape == (len(meta["epoch"]), 70)
    assert len(stat_names(source.layout)) == 70
    assert stat_names(source.layout)[:8] == [f"conv1.weight.{s}" for s in STATISTICS] + ["conv1.bias.mean"]


def test_stats_values_on_a_hand_made_vector(digits_zoo):
    """w = 0, 1, ..., D−1: a tensor at offset o with n entries has mean o + (n−1)/2, population variance
    (n² − 1)/12 and q-th percentile o + q/100 · (n − 1) (linear interpolation)."""
    layout = digits_zoo.layout
    got = layer_statistics(np.arange(layout.size, dtype=np.float32), layout).reshape(-1, 7)
    for row, entry in zip(got, (e for e in layout.entries if e.kind == "parameter"), strict=True):
        o, n = entry.offset, entry.numel
        want = [o + (n - 1) / 2, (n * n - 1) / 12, *(o + q / 100 * (n - 1) for q in (1, 25, 50, 75, 99))]
        np.testing.assert_allclose(row, want, rtol=1e-12, err_msg=entry.name)
    batch = np.stack([np.full(layout.size, 0.5), np.full(layout.size, -2.0)])
    constant = layer_statistics(batch, layout).reshape(2, -1, 7)
    np.testing.assert_array_equal(constant[:, :, 1], 0)  # variances
    np.testing.assert_array_equal(constant[1, :, [0, 2, 6]], -2.0)  # mean, p1, p99


def test_layer_ids_are_the_layers_of_sane_tokens(digits_zoo):
    layout = digits_zoo.layout
    tokens = chunk_tokens(layout, 64)
    from_tokens = np.full(layout.size, -1)
    from_tokens[tokens.index[tokens.mask]] = np.repeat(tokens.positions[:, 1], tokens.mask.sum(1))
    np.testing.assert_array_equal(layer_ids(layout), from_tokens)


def test_per_tensor_stats_standardise_each_tensor(source):
    weights = torch.cat([b[WEIGHTS] for b in source.loader("train")])
    per_layer, per_tensor = LayerStats.fit(source), LayerStats.fit(source, per_tensor=True)
    assert len(per_layer.mean) == 5 and len(per_tensor.mean) == len(source.layout.entries) == 10
    z = per_tensor.standardize(weights).double()
    for entry in source.layout.entries:  # biases too: trained biases vary (they start at 0)
        part = z[:, entry.offset : entry.offset + entry.numel]
        assert abs(part.mean().item()) < 1e-4 and part.std(unbiased=False).item() == pytest.approx(1, abs=1e-3)
    torch.testing.assert_close(per_tensor.restore(per_tensor.standardize(weights)), weights, atol=1e-5, rtol=1e-5)
    tokenizer = chunk_tokens(source.layout, 64)  # tokens (SANE's) are standardised entry by entry, either way
    tokens = tokenizer.tokenize(weights[:2])
    for stats in (per_layer, per_tensor):
        expected = tokenizer.tokenize(stats.standardize(weights[:2])).values
        got = stats.standardize_tokens(tokens.values, stats.token_groups(tokenizer), tokens.mask)
        torch.testing.assert_close(got, expected)
    assert torch.equal(LayerStats.of(source, "tensor").ids, per_tensor.ids)
    assert torch.equal(LayerStats.of(source, "layer").ids, per_layer.ids)
    with pytest.raises(ValueError, match="normalisation must be one of tensor, layer, none"):
        LayerStats.of(source, "global")


def test_model_batches_hold_whole_runs(source):
    models = source.metadata("train")["model_id"]
    sampler = ModelBatches(models, 4, seed=0)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(set(models.tolist())) // 4 == len(sampler)
    for batch in first:
        ids = set(models[batch].tolist())
        assert len(ids) == 4 and sorted(batch) == sorted(np.flatnonzero(np.isin(models, list(ids))).tolist())
    assert first != second  # a new order of models every epoch
    assert len(list(ModelBatches(models, 1000))) == 1  # fewer models than asked: one batch of all
    batch = next(iter(source.model_batches("train", 2, columns=(WEIGHTS, "model_id"))))
    assert batch[WEIGHTS].shape == (8, source.dim) and len(set(batch["model_id"].tolist())) == 2


def test_parse_epochs():
    from modelzoos.cli import parse_epochs

    assert parse_epochs("1-3,7") == (1, 2, 3, 7) and parse_epochs("0-2,50") == (0, 1, 2, 50)
    assert parse_epochs(None) is None and parse_epochs("") is None
    with pytest.raises(ValueError, match="neither an epoch nor a range"):
        parse_epochs("x")
    with pytest.raises(ValueError, match="'5-3' is not a range of epochs"):
        parse_epochs("0,5-3")


# ---------------------------------------------------------------------------------------------------------
# Cleaning: the original loader's per-state filtering
# ---------------------------------------------------------------------------------------------------------


def test_removal_counts_per_rule_and_model():
    model_id = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    nonfinite = np.array([0, 0, 1, 0, 0, 1, 1, 0], bool)
    over = np.array([0, 1, 0, 0, 0, 0, 0, 1], bool)
    counts = removal_counts(model_id, nonfinite, over)
    assert counts == {"states": 8, "models": 4, "kept_states": 3, "kept_models": 2,
                      "nonfinite": {"states": 3, "models": 2}, "threshold": {"states": 2, "models": 2},
                      "models_emptied": 2}
    with pytest.raises(ValueError, match="both rules"):
        removal_counts(model_id, nonfinite, nonfinite)
    assert parse_threshold("off") == parse_threshold(None) == float("inf") and parse_threshold("100") == 100.0
    with pytest.raises(ValueError, match="neither a number"):
        parse_threshold("five")
    assert WEIGHT_THRESHOLD == 5.0  # the original benchmark's data loader (docs/baselines.md)


def _max_abs(repo, split: str) -> dict[tuple[int, int], float]:
    rows = load_zoo(repo, CONFIG, split=split).with_format("numpy")
    return {(int(m), int(e)): float(np.abs(w).max()) for m, e, w in
            zip(rows["model_id"], rows["epoch"], rows["weights"], strict=True)}


def _retargeted(copy: Path) -> Path:
    """``copy`` (a private copy of a repository) with its target columns shuffled (the weights unchanged)."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for path in (copy / "data" / CONFIG).glob("*.parquet"):
        table = pq.read_table(path)
        for name in ("test_acc", "train_acc", "ggap", "test_loss"):
            column = table.column(name).to_numpy()
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(rng.permutation(column)))
        pq.write_table(table, path)
    return copy


def test_threshold_drops_states_by_their_weights_only(repo, copy_of):
    per_split = {s: _max_abs(repo, s) for s in SPLITS}
    threshold = float(np.quantile(list(per_split["train"].values()), 0.5))  # drops about half the train states
    source = ZooSource(repo, CONFIG, weight_threshold=threshold)
    for split in SPLITS:
        want = sorted(k for k, v in per_split[split].items() if v <= threshold)
        meta = source.metadata(split)
        assert sorted(zip(meta["model_id"].tolist(), meta["epoch"].tolist(), strict=True)) == want
        rows = source.dataset(split).select_columns(["model_id", "epoch"])
        assert list(zip(rows["model_id"], rows["epoch"], strict=True)) == list(
            zip(meta["model_id"].tolist(), meta["epoch"].tolist(), strict=True))
        counts = source.removed(split)
        dropped = {k for k, v in per_split[split].items() if v > threshold}
        assert counts["threshold"] == {"states": len(dropped), "models": len({m for m, _ in dropped})}
        assert counts["nonfinite"]["states"] == 0 and counts["kept_states"] == len(want)
    assert 0 < source.removed("train")["threshold"]["states"] < len(per_split["train"])
    # no target enters: the same weights with shuffled targets keep the same states
    other = ZooSource(_retargeted(copy_of(repo)), CONFIG, weight_threshold=threshold)
    assert all(other.removed(s) == source.removed(s) for s in SPLITS)
    assert not np.array_equal(other.metadata("train")["test_acc"], source.metadata("train")["test_acc"])
    # streaming applies the same rule on the fly
    streamed = ZooSource(repo, CONFIG, weight_threshold=threshold, streaming=True)
    _, meta = streamed.extract("test", lambda w: w[:, :1])
    assert sorted(zip(meta["model_id"].tolist(), meta["epoch"].tolist(), strict=True)) == sorted(
        k for k, v in per_split["test"].items() if v <= threshold)
    assert streamed.removed("test") == source.removed("test")
    off = ZooSource(repo, CONFIG, weight_threshold="off")
    assert off.removed("train")["kept_states"] == len(per_split["train"])
    with pytest.raises(ValueError, match="no state left"):
        ZooSource(repo, CONFIG, weight_threshold=1e-6).metadata("test")


# ---------------------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [40, 8])  # primal (n ≥ d + 1) and dual (n < d + 1) form
def test_ridge_is_the_protocol_closed_form(rows):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(rows, 12)), rng.normal(size=rows)
    for lam in (1e3, 1.0, 1e-5):
        # intercept = a penalised ones column, i.e. sklearn's Ridge without its own intercept on [x, 1]
        want = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(np.hstack([x, np.ones((rows, 1))]), y).coef_
        np.testing.assert_allclose(ridge_fit(x, y, lam), want, rtol=1e-6, atol=1e-9)


def _noisy_regression(seed: int = 0) -> tuple[dict, dict]:
    """Few noisy train rows, many features: train R² always prefers the smallest λ, validation a large one."""
    rng = np.random.default_rng(seed)
    sizes = {"train": 30, "validation": 200, "test": 200}
    x = {s: rng.normal(size=(n, 20)) for s, n in sizes.items()}
    y = {s: x[s][:, 0] + 2 * rng.normal(size=n) for s, n in sizes.items()}
    return x, y


def test_ridge_chooses_lambda_on_validation_only():
    x, y = _noisy_regression()
    result = ridge_probe(x, y)
    train_curve = {lam: r2_score(y["train"], np.hstack([x["train"], np.ones((30, 1))]) @ ridge_fit(x["train"],
                                                                                                   y["train"], lam))
                   for lam in LAMBDAS}
    train_best = max(train_curve, key=train_curve.get)
    assert train_best == min(LAMBDAS)
    assert result.lam == max(result.val_curve, key=result.val_curve.get)
    assert result.lam != train_best and result.lam >= 1.0
    assert result.scores["val"] == pytest.approx(result.val_curve[result.lam])
    # Test targets take no part in the choice: a different test set leaves λ and validation untouched.
    changed = ridge_probe(x, {**y, "test": -y["test"] + 7})
    assert changed.lam == result.lam and changed.val_curve == result.val_curve
    assert changed.scores["test"] != result.scores["test"]


def test_r2_per_split_with_its_own_mean_and_nan_targets_dropped():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, np.full(4, y.mean())) == 0.0
    assert r2_score(y + 100, y + 100) == 1.0
    x, ys = _noisy_regression(1)
    ys["train"][:5] = np.nan
    result = ridge_probe(x, ys)
    assert len(result.predictions["train"]) == 25
    xt = np.hstack([x["test"], np.ones((200, 1))])
    pred = xt @ ridge_fit(x["train"][5:], ys["train"][5:], result.lam)
    want = 1 - np.mean((ys["test"] - pred) ** 2) / np.mean((ys["test"] - ys["test"].mean()) ** 2)
    assert result.scores["test"] == pytest.approx(want)


def test_standardized_ridge_is_scale_free_with_a_free_intercept():
    rng = np.random.default_rng(2)
    x = {s: rng.normal(size=(100, 20)) for s in SPLITS}
    y = {s: v[:, 0] + 0.5 * rng.normal(size=100) + 50 for s, v in x.items()}  # a mean the §11.3 penalty shrinks
    scaled = {k: v * 1e3 + 7 for k, v in x.items()}
    std, std_scaled = standardized_ridge_probe(x, y), standardized_ridge_probe(scaled, y)
    np.testing.assert_allclose(std_scaled.predictions["test"], std.predictions["test"], rtol=1e-6)
    assert std.lam in STD_LAMBDAS and std.scores["test"] > 0.6 and "r2<-1" not in std.flags
    # nothing to learn, more features than train rows, a target mean of 50 with std 0.5: the §11.3 ridge's
    # penalised intercept pulls predictions far from the mean
    sizes = {"train": 30, "validation": 100, "test": 100}
    noise = {s: rng.normal(size=(n, 100)) for s, n in sizes.items()}
    flat = {s: 50 + 0.5 * rng.normal(size=n) for s, n in sizes.items()}
    protocol = ridge_probe(noise, flat)
    assert protocol.scores["test"] < -1 and protocol.flags[0] == "r2<-1"
    assert protocol.to_json()["flags"] == protocol.flags
    robust = standardized_ridge_probe(noise, flat)
    assert -0.2 < robust.scores["test"] < 0.05 and "r2<-1" not in robust.flags
    edge = ridge_probe(noise, {s: v[:, 0] * 1e-3 + rng.normal(size=len(v)) for s, v in noise.items()})
    assert edge.lam == max(LAMBDAS) and "lambda-edge" in edge.flags  # pure noise wants the largest λ


def test_gbm_probe_fits_a_nonlinear_target():
    rng = np.random.default_rng(0)
    x = {s: rng.uniform(-2, 2, size=(n, 2)) for s, n in zip(SPLITS, (300, 100, 100), strict=True)}
    y = {s: np.sin(2 * v[:, 0]) + v[:, 1] ** 2 for s, v in x.items()}
    result = gbm_probe(x, y)
    assert result.scores["test"] > 0.9
    assert result.scores["test"] > ridge_probe(x, y).scores["test"] + 0.3


def test_linear_probe_protocol_defaults_and_unseen_labels():
    defaults = {k: p.default for k, p in inspect.signature(linear_probe).parameters.items()}
    assert {k: defaults[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "seed")} == {
        "epochs": 50, "batch_size": 10, "lr": 1e-4, "weight_decay": 1e-6, "seed": 42}
    rng = np.random.default_rng(0)
    names = np.array(["relu", "tanh", "gelu"])
    labels = {s: names[rng.integers(0, 3, n)] for s, n in zip(SPLITS, (100, 30, 30), strict=True)}
    centres = {"relu": (4, 0), "tanh": (-4, 0), "gelu": (0, 4)}
    x = {s: np.array([centres[v] for v in lab]) + rng.normal(size=(len(lab), 2)) for s, lab in labels.items()}
    labels["test"][:10] = "sigmoid"  # not seen in train: always wrong
    result = linear_probe(x, labels, lr=1e-2, epochs=20)
    assert result.metric == "accuracy" and result.scores["train"] > 0.9
    assert 0.5 < result.scores["test"] <= 20 / 30
    assert linear_probe(x, labels, lr=1e-2, epochs=20).scores == result.scores  # seeded


# ---------------------------------------------------------------------------------------------------------
# Learned baselines
# ---------------------------------------------------------------------------------------------------------


def test_nt_xent_rewards_aligned_pairs():
    a = torch.randn(8, 4)
    assert nt_xent(a, a, 0.1) < nt_xent(a, torch.randn(8, 4), 0.1)


def test_hyperrep_trains_and_embeds_held_out_models(source, hyperrep):
    losses = [h["loss"] for h in hyperrep.history]
    assert len(losses) == TINY_HYPERREP.epochs and losses[-1] < losses[0]
    assert hyperrep.history[-1]["reconstruction"] < hyperrep.history[0]["reconstruction"]
    z, meta = source.extract("test", hyperrep.embed)
    assert z.shape == (len(meta["epoch"]), TINY_HYPERREP.latent) and np.abs(z).max() <= 1
    assert set(meta["model_id"].tolist()) == set(source.info.splits["test"])
    assert not set(meta["model_id"].tolist()) & set(source.metadata("train")["model_id"].tolist())
    decoded = hyperrep.decode(torch.from_numpy(z[:3]))
    assert decoded.shape == (3, source.dim) and torch.isfinite(decoded).all()


def test_moments_and_extremes_pooling_are_per_layer_statistics_of_the_token_outputs(source):
    x, layer = torch.randn(2, 1 + 5, 3), torch.tensor([0, 0, 1, 1, 1])  # compression token first
    pooled = POOLINGS["moments"][0](x, layer, 2).view(2, 2, 2, 3)  # [B, layer, (mean, std), d]
    for i, tokens in ((0, [1, 2]), (1, [3, 4, 5])):
        torch.testing.assert_close(pooled[:, i, 0], x[:, tokens].mean(1))
        torch.testing.assert_close(pooled[:, i, 1], x[:, tokens].std(1, unbiased=False))
    extremes = POOLINGS["extremes"][0](x, layer, 2).view(2, 2, 4, 3)  # [B, layer, (mean, std, min, max), d]
    torch.testing.assert_close(extremes[:, :, :2], pooled)
    assert torch.equal(extremes[:, 1, 2], x[:, 3:].amin(1)) and torch.equal(extremes[:, 0, 3], x[:, 1:3].amax(1))
    rep = train_hyperrep(source, replace(TINY_HYPERREP, pooling="moments", epochs=2), progress=False)
    assert rep.embed(next(iter(source.loader("test")))[WEIGHTS]).shape[1] == TINY_HYPERREP.latent


def test_training_does_not_depend_on_what_the_source_read_before(repo):
    # The cleaning's screening pass runs on first use of a split; it must not draw from torch's global RNG, or a
    # hyper-representation trained on a fresh source differs from one trained after the bench read the metadata.
    config = replace(TINY_HYPERREP, epochs=2)
    fresh = train_hyperrep(ZooSource(repo, CONFIG), config, progress=False)
    read = ZooSource(repo, CONFIG)
    for split in REPOSITORY_SPLITS:
        read.metadata(split)
    assert train_hyperrep(read, config, progress=False).history == fresh.history


def test_hyperrep_r21_variant_compression_token_and_shuffled_rows(source):
    config = replace(TINY_HYPERREP, pooling="token", models_per_batch=0, normalisation="layer", erase_p=0.5,
                     noise=0.01, epochs=3)
    rep = train_hyperrep(source, config, progress=False)
    assert rep.history[-1]["loss"] < rep.history[0]["loss"]
    assert torch.equal(rep.stats.ids, torch.from_numpy(layer_ids(source.layout)))  # per layer
    assert rep.embed(next(iter(source.loader("test")))[WEIGHTS]).shape[1] == TINY_HYPERREP.latent
    with pytest.raises(ValueError, match="pooling"):
        train_hyperrep(source, replace(config, pooling="max"), progress=False)
    with pytest.raises(ValueError, match="normalisation"):
        train_hyperrep(source, replace(config, normalisation="global"), progress=False)
    weights = next(iter(source.loader("test")))[WEIGHTS]
    assert torch.equal(LayerStats.identity(source.layout).standardize(weights), weights)  # normalisation="none"


@pytest.mark.parametrize("streaming", [False, True])
def test_sane_trains_from_map_style_and_streaming_data(repo, streaming):
    src = ZooSource(repo, CONFIG, streaming=streaming, workers=1)
    # datasets sleeps 5 s after every shuffled streaming pass (data.ZooSource.loader): fewer epochs there
    model = train_sane(src, replace(TINY_SANE, epochs=2) if streaming else TINY_SANE, progress=False)
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0]
    z, meta = src.extract("validation", model.embed)
    layers = len({e.name.rsplit(".", 1)[0] for e in src.layout.entries})  # per-layer mean and std of the latents
    assert z.shape == (len(meta["epoch"]), layers * 2 * TINY_SANE.latent)
    assert set(meta["model_id"].tolist()) == set(src.info.splits["validation"])


def test_sane_moments_embedding_is_per_layer_statistics_of_the_token_latents(source):
    model = train_sane(source, replace(TINY_SANE, epochs=1), progress=False)
    weights = next(iter(source.loader("test")))[WEIGHTS][:3]
    tokens = model.tokenizer.tokenize(weights)
    values, pos = model.stats.standardize_tokens(tokens.values, model.groups, tokens.mask), tokens.positions
    window = replace(model.config, embed_window=7, embedding="mean")  # 7 tokens per pass: sums accumulate
    with torch.no_grad():
        latents = torch.cat([model.model.encode(values[:, i : i + 7], pos[:, i : i + 7])
                             for i in range(0, values.shape[1], 7)], 1)  # [B, T, latent]
    layer = torch.tensor(model.tokenizer.positions[:, 1])
    layers = int(layer.max()) + 1
    mean = replace(model, config=window).embed(weights)
    torch.testing.assert_close(mean, latents.mean(1))
    got = replace(model, config=replace(window, embedding="moments")).embed(weights)
    got = got.view(3, layers, 2, TINY_SANE.latent)  # [B, layer, (mean, std), latent]
    for i in range(layers):
        torch.testing.assert_close(got[:, i, 0], latents[:, layer == i].mean(1))
        torch.testing.assert_close(got[:, i, 1], latents[:, layer == i].std(1, unbiased=False), atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="embedding"):
        train_sane(source, replace(TINY_SANE, embedding="max"), progress=False)


def test_sane_per_tensor_normalisation_standardises_a_bias_apart_from_its_weight(source):
    model = train_sane(source, replace(TINY_SANE, normalisation="tensor", epochs=2, embedding="mean"), progress=False)
    assert torch.equal(model.stats.ids, torch.from_numpy(tensor_ids(source.layout)))
    assert np.isfinite([h["loss"] for h in model.history]).all()
    weights = next(iter(source.loader("test")))[WEIGHTS][:3]
    tokens = model.tokenizer.tokenize(model.stats.standardize(weights))  # standardised before tokenising
    with torch.no_grad():
        latents = model.model.encode(tokens.values, torch.as_tensor(tokens.positions))
    torch.testing.assert_close(model.embed(weights), latents.mean(1))


def test_sane_can_train_on_whole_runs(source, monkeypatch):
    # models_per_batch > 0: SANE's training batches come from ZooSource.model_batches (every stored epoch of a
    # few models, as the hyper-representation's), each row cut to one window of two views
    batches = []
    whole_runs = ZooSource.model_batches

    def spy(self, split, models_per_batch, **kwargs):
        loader = whole_runs(self, split, models_per_batch, columns=(WEIGHTS, "model_id"), **kwargs)
        for batch in loader:
            batches.append(batch)
            break
        return whole_runs(self, split, models_per_batch, **kwargs)

    monkeypatch.setattr(ZooSource, "model_batches", spy)
    model = train_sane(source, replace(TINY_SANE, models_per_batch=2, epochs=2), progress=False)
    assert len(model.history) == 2 and np.isfinite([h["loss"] for h in model.history]).all()
    models = batches[0]["model_id"].tolist()
    train = source.metadata("train")
    assert len(set(models)) == 2 and len(models) == sum(np.isin(train["model_id"], models))
    assert batches[0][WEIGHTS].shape[1:3] == (2, min(TINY_SANE.window, model.tokenizer.num_tokens))


def test_training_batches_are_whole_runs_where_they_fit(repo, source):
    rows_per_model = np.unique(source.metadata("train")["model_id"], return_counts=True)[1].max()
    whole = next(iter(train_loader(source, 2, 16, None, seed=0)))[WEIGHTS]
    assert len(whole) == 2 * rows_per_model
    too_small = int(2 * rows_per_model - 1) * source.dim * 4  # bytes: one row short of two whole runs
    with pytest.warns(UserWarning, match="shuffled rows"):
        rows = train_loader(source, 2, 16, None, seed=0, max_bytes=too_small)
    assert len(next(iter(rows))[WEIGHTS]) == min(16, 2 * rows_per_model - 1)  # within the byte budget too
    streaming = ZooSource(repo, CONFIG, streaming=True, workers=0)  # cannot group rows: shuffled rows, silently
    assert len(next(iter(train_loader(streaming, 2, 16, None, seed=0)))[WEIGHTS]) == 16


def test_sampling_decodes_rebuilds_and_finetunes(source, hyperrep):
    latents, meta = source.extract("train", hyperrep.embed)
    rows = anchors(meta, 0.3)
    assert np.all(meta["test_acc"][rows] >= np.quantile(meta["test_acc"], 0.7))
    draws = kde_sample(latents[rows], 50, 0.002, seed=1)
    assert draws.shape == (50, latents.shape[1]) and np.abs(draws).max() <= 1
    result = sample_and_evaluate(hyperrep, source, latents, meta, SamplingConfig(samples=2), progress=False)
    acc, near = result["accuracy"], result["nearest"]
    methods = ("sampled", "sampled_joint", "weight_kde")
    assert set(acc) == {"anchors", "reconstructed", "random", "random_ft", *methods, *(f"{m}_ft" for m in methods)}
    assert all(len(acc[k]) == 2 and all(0 <= a <= 1 for a in acc[k]) for k in acc if k != "anchors")
    assert all(len(v) == 2 for v in near.values()) and min(near["between_models_relative"]) > 0
    assert set(near) >= {f"{m}_relative" for m in methods}
    joint = kde_sample(latents[rows], 50, 0.002, seed=1, joint=True)  # around single anchors
    assert np.abs(joint[:, None] - latents[rows][None]).max(2).min(1).max() < 0.02
    # a training checkpoint's nearest training checkpoint is itself; excluding its model, another model's
    weights = source.weights("train", rows[:2])
    itself = nearest_checkpoints(weights, source)
    assert np.array_equal(itself["distance"], [0, 0]) and list(itself["model_id"]) == list(meta["model_id"][rows[:2]])
    other = nearest_checkpoints(weights, source, exclude_models=meta["model_id"][rows[:2]])
    assert (other["model_id"] != meta["model_id"][rows[:2]]).all() and (other["relative"] > 0).all()


# ---------------------------------------------------------------------------------------------------------
# The benchmark runner
# ---------------------------------------------------------------------------------------------------------


def test_bench_writes_markdown_json_and_figure(repo, tmp_path):
    out = tmp_path / "bench"
    results = bench.run_bench(repo, CONFIG, bench.BASELINES, out, progress=False, hyperrep=TINY_HYPERREP,
                              sane=TINY_SANE, sampling=SamplingConfig(samples=2))
    assert {p.name for p in out.iterdir()} == {"results.md", "results.json", "bench.png"}
    saved = json.loads((out / "results.json").read_text())
    assert saved["baselines"].keys() == results["baselines"].keys()
    assert saved["epochs"] == [0, 1, 2, 3] and saved["targets"]["classification"] == []
    assert saved["splits"]["test"] == {"models": 3, "rows": 12}
    for name in ("stats", "weights", "hyperrep", "sane"):
        entry = saved["baselines"][name]
        assert entry["time_s"] > 0 and entry["peak_rss_mb"] > 0
        assert entry["best_probe"] in entry["probes"]
        for target in ("test_acc", "ggap", "epoch"):
            for probe, grid in (("ridge", LAMBDAS), ("ridge_std", STD_LAMBDAS)):
                result = entry["probes"][probe][target]
                assert {"metric", "train", "val", "test", "lambda"} <= set(result) <= {
                    "metric", "train", "val", "test", "lambda", "flags"}
                assert result["lambda"] in grid
                assert ("flags" in result) == (result["test"] < -1 or result["lambda"] in (min(grid), max(grid)))
    assert saved["baselines"]["stats"]["dims"] == 70 and "gbm" in saved["baselines"]["stats"]["probes"]
    assert "gbm" not in saved["baselines"]["weights"]["probes"]  # 2,464 dims > GBM_MAX_DIMS
    assert saved["sampling"]["summary"]["sampled"]["n"] == 2 and saved["sampling"]["generator"] == "hyperrep baseline"
    assert set(saved["sampling"]["summary"]["nearest"]) == {"sampled", "sampled_joint", "weight_kde", "between_models"}
    cleaning = saved["filtering"]
    assert cleaning["weight_threshold"] == WEIGHT_THRESHOLD and cleaning["rules"] == ["nonfinite", "threshold"]
    assert cleaning["splits"]["test"]["kept_states"] == 12  # digits seed weights stay far below 5
    text = (out / "results.md").read_text()
    assert "| stats | ridge | 70 |" in text and "| stats | ridge_std | 70 |" in text and "Sampling" in text
    assert "epochs used as samples: 0–3" in text and r"removed: \|w\| > 5" in text


def test_cli_bench_prints_the_table(repo, tmp_path, capsys):
    assert float(parser().parse_args(["bench", CONFIG, "--repo", "r"]).weight_threshold) == WEIGHT_THRESHOLD
    threshold = float(np.quantile(list(_max_abs(repo, "train").values()), 0.9))
    assert main(["bench", CONFIG, "--repo", str(repo), "--baselines", "stats", "--out", str(tmp_path),
                 "--epochs-filter", "1-3", "--weight-threshold", str(threshold), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| stats | ridge | 70 |" in printed and "epochs used as samples: 1–3" in printed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["filtering"]["weight_threshold"] == threshold and rf"removed: \|w\| > {threshold:g}" in printed
    assert saved["filtering"]["splits"]["train"]["threshold"]["states"] > 0
    with pytest.raises(ValueError, match="unknown baselines"):
        bench.run_bench(repo, CONFIG, ["nope"], progress=False)


def test_probe_split_names_are_the_repository_splits():
    assert probes.SPLITS == SPLITS == REPOSITORY_SPLITS == ("train", "validation", "test")
