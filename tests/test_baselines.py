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
import pytest
import torch

from modelzoos.baselines import bench, probes
from modelzoos.baselines.data import SPLITS, LayerStats, ModelBatches, ZooSource, layer_ids, parse_epochs
from modelzoos.baselines.features import STATISTICS, layer_statistics, stat_names
from modelzoos.baselines.hyperrep import HyperRepConfig, nt_xent, train_hyperrep
from modelzoos.baselines.probes import LAMBDAS, gbm_probe, linear_probe, r2_score, ridge_fit, ridge_probe
from modelzoos.baselines.sampling import SamplingConfig, anchors, kde_sample, sample_and_evaluate
from modelzoos.baselines.sane import SaneConfig, train_sane
from modelzoos.cli import main
from modelzoos.loading import WEIGHTS
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
    tokens = chunk_tokens(source.layout, 64).tokenize(weights[:2])
    with pytest.raises(ValueError, match="per layer"):
        per_tensor.standardize_tokens(torch.as_tensor(tokens.values), torch.as_tensor(tokens.positions[..., 1]),
                                      torch.as_tensor(tokens.mask))


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
    assert parse_epochs("1-3,7") == (1, 2, 3, 7)
    assert parse_epochs(None) is None
    with pytest.raises(ValueError, match="neither an epoch nor a range"):
        parse_epochs("x")


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


def test_hyperrep_r21_variant_compression_token_and_shuffled_rows(source):
    config = replace(TINY_HYPERREP, pooling="token", models_per_batch=0, per_tensor_stats=False, erase_p=0.5,
                     noise=0.01, epochs=3)
    rep = train_hyperrep(source, config, progress=False)
    assert rep.history[-1]["loss"] < rep.history[0]["loss"] and not rep.stats.per_tensor
    assert rep.embed(next(iter(source.loader("test")))[WEIGHTS]).shape[1] == TINY_HYPERREP.latent
    with pytest.raises(ValueError, match="pooling"):
        train_hyperrep(source, replace(config, pooling="max"), progress=False)


@pytest.mark.parametrize("streaming", [False, True])
def test_sane_trains_from_map_style_and_streaming_data(repo, streaming):
    src = ZooSource(repo, CONFIG, streaming=streaming, workers=1)
    # datasets sleeps 5 s after every shuffled streaming pass (data.ZooSource.loader): fewer epochs there
    model = train_sane(src, replace(TINY_SANE, epochs=2) if streaming else TINY_SANE, progress=False)
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0]
    z, meta = src.extract("validation", model.embed)
    assert z.shape == (len(meta["epoch"]), TINY_SANE.latent)
    assert set(meta["model_id"].tolist()) == set(src.info.splits["validation"])


def test_sampling_decodes_rebuilds_and_finetunes(source, hyperrep):
    latents, meta = source.extract("train", hyperrep.embed)
    rows = anchors(meta, 0.3)
    assert np.all(meta["test_acc"][rows] >= np.quantile(meta["test_acc"], 0.7))
    draws = kde_sample(latents[rows], 50, 0.002, seed=1)
    assert draws.shape == (50, latents.shape[1]) and np.abs(draws).max() <= 1
    acc = sample_and_evaluate(hyperrep, source, latents, meta, SamplingConfig(samples=2), progress=False)
    assert set(acc) == {"anchors", "sampled", "sampled_ft", "random", "random_ft"}
    assert all(len(acc[k]) == 2 and all(0 <= a <= 1 for a in acc[k]) for k in ("sampled", "random_ft"))


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
        for target in ("test_acc", "ggap", "epoch"):
            assert set(entry["probes"]["ridge"][target]) == {"metric", "train", "val", "test", "lambda"}
            assert entry["probes"]["ridge"][target]["lambda"] in LAMBDAS
    assert saved["baselines"]["stats"]["dims"] == 70 and "gbm" in saved["baselines"]["stats"]["probes"]
    assert "gbm" not in saved["baselines"]["weights"]["probes"]  # 2,464 dims > GBM_MAX_DIMS
    assert saved["sampling"]["summary"]["sampled"]["n"] == 2
    text = (out / "results.md").read_text()
    assert "| stats | ridge | 70 |" in text and "epochs used as samples: 0–3" in text and "Sampling" in text


def test_cli_bench_prints_the_table(repo, tmp_path, capsys):
    assert main(["bench", CONFIG, "--repo", str(repo), "--baselines", "stats", "--out", str(tmp_path),
                 "--epochs-filter", "1-3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| stats | ridge | 70 |" in printed and "epochs used as samples: 1–3" in printed
    with pytest.raises(ValueError, match="unknown baselines"):
        bench.run_bench(repo, CONFIG, ["nope"], progress=False)


def test_probe_split_names_are_the_repository_splits():
    assert probes.SPLITS == SPLITS == REPOSITORY_SPLITS == ("train", "validation", "test")
