"""``modelzoos compare``: zoos of one spec from two engines are the same population, a changed learning rate is
not, published configs read like zoo directories, specs must match, small samples are too few to tell."""

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from modelzoos import cli, compare
from modelzoos.catalogue import get_zoo
from modelzoos.compare import DIFFERS, SAME, TOO_FEW, ConfigSide, ZooDirSide, holm, ks_resolution, run_tests
from modelzoos.generate import generate

REFERENCE_MODELS, REFERENCE_EPOCHS = 10, 2  # the reference engine trains one model at a time: keep it small


@pytest.fixture(scope="module")
def reference_zoo(tmp_path_factory, one_thread):
    """The first 10 models of the suite's digits zoo, 2 epochs, trained by the reference engine."""
    return generate(get_zoo("digits_cnn_seed"), tmp_path_factory.mktemp("ref") / "zoo", models=REFERENCE_MODELS,
                    epochs=REFERENCE_EPOCHS, engine="reference", progress=False)


@pytest.fixture(scope="module")
def slow_zoo(tmp_path_factory, one_thread, zoo_dir):
    """The suite's digits zoo (same seeds, models, epochs) with a 10× smaller learning rate (3e-5)."""
    spec = tmp_path_factory.mktemp("slow") / "digits_cnn_seed_slow.toml"
    spec.write_text(textwrap.dedent("""
        extends = "digits_cnn_seed"
        name = "digits_cnn_seed_slow"
        [grid]
        lr = [0.00003]
    """))
    meta = zoo_dir.metadata
    return generate(get_zoo(str(spec)), spec.parent / "zoo", models=meta.model_id.nunique(),
                    epochs=int(meta.epoch.max()), progress=False)


def verdicts(result, **match) -> set[str]:
    return {t["verdict"] for t in result.select(**match)}


def test_population_and_reference_engines_are_the_same_population(zoo_dir, reference_zoo):
    result = compare.compare(ZooDirSide(zoo_dir.path), ZooDirSide(reference_zoo.path), progress=False)
    assert result.epochs == list(range(REFERENCE_EPOCHS + 1))
    assert result.verdict == SAME and result.counts()[DIFFERS] == 0
    # 20 vs 10 models are enough to tell for the distribution tests (10 pairs are not, for the paired ones)
    assert verdicts(result, statistic="distribution") == {SAME}
    acc = result.select(scope="all", statistic="distribution", quantity="test_acc")
    assert [(t["n_a"], t["n_b"]) for t in acc] == [(20, 10)] * 3 and all(0 < t["resolution"] < 1 for t in acc)
    paired = result.select(scope="all", statistic="paired", quantity="test_acc")
    assert [t["n_a"] for t in paired] == [REFERENCE_MODELS] * 3
    assert paired[0]["difference_quantiles"] == [0.0] * len(compare.QUANTILES)  # same seeds: same initial models


def test_a_changed_learning_rate_differs_after_epoch_0(zoo_dir, slow_zoo):
    a, b = ZooDirSide(zoo_dir.path), ZooDirSide(slow_zoo.path)
    with pytest.raises(ValueError, match=r"grid\.lr: A \[0\.0003\], B \[3e-05\].*--allow-spec-diff"):
        compare.compare(a, b, progress=False)
    result = compare.compare(a, b, allow_spec_diff=True, progress=False)
    assert [d["field"] for d in result.spec_differences] == ["grid.lr"]
    assert result.verdict == DIFFERS
    assert verdicts(result, epoch=0) == {SAME}  # same seeds: identical untrained models
    for quantity in ("test_acc", "test_loss", "train_loss", "fc2.bias.std"):  # weights barely left their init
        tests = result.select(scope="all", statistic="distribution", quantity=quantity)
        assert [t["verdict"] for t in tests[1:]] == [DIFFERS] * (len(tests) - 1), quantity
    last = result.select(scope="all", statistic="distribution", quantity="test_acc")[-1]
    assert last["median_difference"] < 0 and last["median_interval"][1] < 0  # the slow zoo learned less
    report = compare.markdown(result)
    assert report.startswith("# modelzoos compare: differs\n\n**The specs differ**") and "`grid.lr`" in report


def test_published_config_reads_like_its_zoo_directory(zoo_dir, repo_dir, monkeypatch):
    monkeypatch.setattr(compare, "BATCH_BYTES", 7 * 4 * zoo_dir.layout.size)  # several batches of 7 rows
    directory = ZooDirSide(zoo_dir.path).read("A", None, True, False).frame
    published = ConfigSide(repo_dir, "digits_cnn_seed").read("B", None, True, False).frame
    pd.testing.assert_frame_equal(published, directory, check_like=True)
    assert {"conv1.weight.std", "fc2.bias.norm"} <= set(directory.columns)
    first = directory.iloc[0]  # the statistics of one state, from its state dict
    state = zoo_dir.state(int(first.model_id), int(first.epoch))
    np.testing.assert_allclose(first["conv1.weight.std"], state["conv1.weight"].double().std(unbiased=False))
    np.testing.assert_allclose(first["fc2.weight.norm"], state["fc2.weight"].double().norm())


def test_compare_command_with_a_published_side(zoo_dir, repo_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["compare", str(zoo_dir.path), "--repo", str(repo_dir), "--config", "digits_cnn_seed",
                     "--epochs", "0,3", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("# modelzoos compare: same")
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == SAME and report["epochs"] == [0, 3] and report["b"]["kind"] == "published config"
    paired = [t for t in report["tests"] if t["statistic"] == "paired"]
    assert paired and all(t["difference_quantiles"] == [0.0] * len(compare.QUANTILES) for t in paired)
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_compare_command_errors(zoo_dir, repo_dir, capsys):
    assert cli.main(["compare", str(zoo_dir.path), "--repo", str(repo_dir), "--config", "digits_cnn_seed_sparse_vd",
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the zoos have different specs") and "epochs: A 50, B 25" in err
    assert cli.main(["compare", str(zoo_dir.path), "--quiet"]) == 2
    assert "compare needs two sides" in capsys.readouterr().err


def test_too_few_models_to_tell(zoo_dir, tmp_path, one_thread):
    tiny = generate(get_zoo("digits_cnn_seed"), tmp_path / "tiny", models=4, epochs=1, progress=False)
    result = compare.compare(ZooDirSide(zoo_dir.path), ZooDirSide(tiny.path), weights=False, progress=False)
    assert result.epochs == [0, 1] and result.verdict == TOO_FEW
    assert verdicts(result) == {TOO_FEW}
    assert "**0 differ**" in compare.markdown(result)


def test_a_drift_in_one_group_shows_in_that_group():
    """Synthetic populations: B's sigmoid models lost 0.1 test accuracy, its tanh models did not."""
    rng = np.random.default_rng(0)

    def population(shift: float) -> pd.DataFrame:
        frame = pd.DataFrame({"model_id": np.arange(200), "epoch": 5, "activation": ["tanh", "sigmoid"] * 100,
                              "optimizer": "adam", "nonfinite": False, "test_acc": rng.normal(0.9, 0.02, 200)})
        for h in ("seed", "init", "lr", "weight_decay", "dropout", "batch_size", "epochs", "schedule"):
            frame[h] = 0
        frame.loc[frame.activation == "sigmoid", "test_acc"] -= shift
        return frame

    tests = run_tests(population(0.0), population(0.1), ["test_acc"], [5])
    by_scope = {(t["scope"], t["statistic"]): t["verdict"] for t in tests}
    assert by_scope[("activation=sigmoid", "distribution")] == DIFFERS
    assert by_scope[("activation=sigmoid", "paired")] == DIFFERS
    assert by_scope[("activation=tanh", "distribution")] == SAME
    assert by_scope[("activation=tanh", "paired")] == SAME
    assert ("optimizer=adam", "distribution") not in by_scope  # one optimizer: no groups of it


def test_holm_and_ks_resolution():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    from scipy.stats import ks_2samp

    level = 1e-3
    resolution = ks_resolution(20, 20, level)
    k = round(resolution * 20)  # with 20 values each the KS distances are multiples of 1/20
    x = np.arange(20)
    assert ks_2samp(x, x + k).pvalue < level <= ks_2samp(x, x + k - 1).pvalue
    assert np.isnan(ks_resolution(4, 4, level))  # 4 vs 4 values: not even a complete separation is flagged
