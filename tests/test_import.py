"""`modelzoos import`: the original release (written here in its exact format by ``fakerelease``) into zoo
directories, bit-exact and safely, from folders, zips and tars alike; twins; round trip through a built repository."""

import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from fakerelease import (
    BOOM_MARKER,
    FakeTrial,
    OriginalCNN,
    adam_state,
    booby_trap,
    cnn_params,
    cnn_results,
    evolve,
    original_resnet18,
    sgd_state,
    tar_folder,
    truncate,
    write_experiment,
    zip_folder,
)
from safetensors import safe_open

from modelzoos import export
from modelzoos.catalogue import get_zoo
from modelzoos.cli import main
from modelzoos.export import ZooDir
from modelzoos.importing import import_twins, import_zoo, summarize
from modelzoos.release import ReleaseError

SEED_EXPERIMENT = "tune_zoo_mnist_uniform"
EPOCHS = 2
SEEDS = range(1, 9)  # the tiny seed zoo: 8 models (a published config needs 7)
MISSING, TRUNCATED, TRAPPED, DIVERGED = 3, 5, 6, 7  # seeds of the damaged trials (model id = seed - 1)


@pytest.fixture(scope="module", autouse=True)
def no_code_runs(tmp_path_factory):
    """Every pickle of the fake release that is not a tensors-only checkpoint writes this file if unpickled."""
    marker = tmp_path_factory.mktemp("boom") / "ran"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(BOOM_MARKER, str(marker))
        yield marker
    assert not marker.exists(), "a pickle of the release was unpickled unsafely"


def spec(folder, text: str):
    path = folder / f"spec_{abs(hash(text))}.toml"
    path.write_text(textwrap.dedent(text))
    return get_zoo(path)


def trial_name(i: int, tag: str) -> str:
    return f"NN_tune_trainable_c0371_{i:05d}_{i}_{tag}_2021-07-01_16-59-{i % 60:02d}"


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The original loader's flat vector: per parameterised module (index order) weight, then bias; float
    buffers (BatchNorm running mean and variance) where torchvision's state dict has them."""
    if any(k.startswith("module_list.") for k in state):
        idx = sorted({int(k.split(".")[1]) for k in state})
        return torch.cat([state[f"module_list.{i}.{f}"].flatten() for i in idx for f in ("weight", "bias")])
    return torch.cat([v.flatten() for v in state.values() if v.is_floating_point()])


@pytest.fixture(scope="module")
def seed_release(tmp_path_factory):
    """The tiny MNIST seed zoo as released: 8 trials (folder order ≠ seed order), one lacking a checkpoint, one
    truncated, one booby-trapped checkpoint, one diverging to NaN; plus its zip, tar and tar.gz."""
    root = tmp_path_factory.mktemp("release")
    zoo = spec(root, """
        extends = "mnist_cnn_seed"
        name = "mnist_cnn_seed"
        epochs = 2
        [seeds]
        range = [1, 8]
    """)
    trials, models = [], {}
    for i, seed in enumerate([4, 1, 8, 2, 7, 3, 6, 5]):
        torch.manual_seed(seed)
        model = OriginalCNN("cnn", 1, "tanh", 0.0, inserted=False)
        states = evolve(model, EPOCHS, seed, nan_from=2 if seed == DIVERGED else None)
        models[seed] = states
        t = FakeTrial(trial_name(i, f"seed={seed}"), cnn_params(seed, epochs=EPOCHS), states,
                      {e: adam_state(model, e) for e in states}, cnn_results(EPOCHS, seed))
        if seed == MISSING:
            del t.states[1]
        if seed == TRUNCATED:
            t.damage[2] = truncate
        if seed == TRAPPED:
            t.damage[1] = booby_trap
        trials.append(t)
    folder = write_experiment(root / "unzipped", SEED_EXPERIMENT, trials)
    return {"zoo": zoo, "folder": folder, "states": models, "trials": {t.params["seed"]: t for t in trials},
            "zip": zip_folder(folder, root / "mnist_seed.zip"), "tar": tar_folder(folder, root / "mnist_seed.tar"),
            "tar.gz": tar_folder(folder, root / "mnist_seed.tar.gz", "w:gz")}


@pytest.fixture(scope="module")
def seed_import(seed_release, tmp_path_factory):
    return import_zoo([seed_release["folder"]], seed_release["zoo"], tmp_path_factory.mktemp("imp") / "seed",
                      chunk_size=3, progress=False)


def _weights(zd: ZooDir) -> dict[tuple[int, int], torch.Tensor]:
    meta = zd.metadata
    return {(int(meta.model_id[i]), int(meta.epoch[i])): w for i, w in zd.weights()}


def test_seed_zoo_is_imported_bit_exact_with_its_metrics(seed_import, seed_release):
    zd = seed_import.zoo_dir
    meta = zd.metadata
    weights = _weights(zd)
    for seed, states in seed_release["states"].items():
        for epoch, state in states.items():
            if (seed, epoch) in ((MISSING, 1), (TRUNCATED, 2), (TRAPPED, 1)):
                assert (seed - 1, epoch) not in weights
                continue
            got = weights[(seed - 1, epoch)]
            assert torch.equal(got, flat(state)) or (seed == DIVERGED and epoch == 2 and got.isnan().all())
    trials = seed_release["trials"]
    for row in meta.itertuples():
        t = trials[row.seed]
        assert row.model_id == row.seed - 1 and row.trial == t.name
        line = t.results[row.epoch]
        assert row.test_acc == line["test_acc"] and row.test_loss == line["test_loss"]
        assert math.isnan(row.val_loss) and math.isnan(row.val_acc)  # the CNN zoos logged no validation
        if row.epoch == 0:  # the -999 placeholders are missing values, never numbers
            assert math.isnan(row.train_loss) and math.isnan(row.train_acc) and math.isnan(row.ggap)
        else:
            assert row.train_acc == line["train_acc"] and row.ggap == line["train_acc"] - line["test_acc"]
    assert meta[meta.nonfinite].set_index(["model_id", "epoch"]).index.tolist() == [(DIVERGED - 1, 2)]
    assert zd.info["run"]["engine"] == "import" and zd.info["data"]["sha256"] is None


def test_damaged_and_missing_states_are_listed_never_dropped_silently(seed_import, no_code_runs):
    s = seed_import
    assert (s.models, s.spec_models, s.states, s.expected_states) == (8, 8, 21, 24)
    why = {(m, e): w for m, e, w in s.missing_states}
    assert set(why) == {(MISSING - 1, 1), (TRUNCATED - 1, 2), (TRAPPED - 1, 1)}
    assert why[(MISSING - 1, 1)] == "not in the release"
    assert "truncated or corrupt" in why[(TRUNCATED - 1, 2)] and "checkpoint_000002/checkpoints" in why[
        (TRUNCATED - 1, 2)]
    assert "refused" in why[(TRAPPED - 1, 1)] and "checkpoint_000001/checkpoints" in why[(TRAPPED - 1, 1)]
    assert s.nonfinite_models == [DIVERGED - 1] and s.nonfinite_states == 1
    assert not no_code_runs.exists()  # params.pkl, dataset.pt and the trapped checkpoint never ran
    record = s.zoo_dir.info["import"]
    assert record["states"]["missing"] == [[MISSING - 1, 1]]  # what the release lacks, in zoo.json
    assert record["index_layouts"] == {"0,3,6,9,11": {"dropout 0.0": 8}}
    assert record["sources"][0]["name"] == SEED_EXPERIMENT and len(record["sources"][0]["sha256"]) == 64
    assert record["release"]["record"] == "https://doi.org/10.5281/zenodo.6632086"
    assert json.loads(pq.read_schema(s.zoo_dir.path / "metadata.parquet").metadata[b"modelzoos.import"]) == record
    assert {p.suffix for p in s.zoo_dir.path.rglob("*") if p.is_file()} == {".json", ".parquet", ".safetensors"}
    with pytest.raises(export.ZooFileError, match="no optimizer states"):  # weights only by default
        s.zoo_dir.optimizer_state(0, 1)


def test_rerun_of_a_finished_import_is_a_no_op(seed_import, seed_release):
    path = seed_import.zoo_dir.path
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.name != ".sources-sha256.json"}
    again = import_zoo([seed_release["folder"]], seed_release["zoo"], path, chunk_size=3, progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.name != ".sources-sha256.json"}
    assert again.missing_states == seed_import.missing_states and again.problems == seed_import.problems


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_archives_import_exactly_like_the_folder(kind, seed_release, seed_import, tmp_path):
    s = import_zoo([seed_release[kind]], seed_release["zoo"], tmp_path / kind, chunk_size=3, progress=False)
    pd.testing.assert_frame_equal(s.zoo_dir.metadata, seed_import.zoo_dir.metadata)
    a, b = _weights(s.zoo_dir), _weights(seed_import.zoo_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k].nan_to_num(7.0), b[k].nan_to_num(7.0)) for k in a)
    assert [m[:2] for m in s.missing_states] == [m[:2] for m in seed_import.missing_states]
    assert s.zoo_dir.info["import"]["sources"][0]["kind"].startswith(kind.split(".")[0])


def test_a_zoo_spread_over_parts_imports_as_one_and_a_partial_release_lists_what_it_lacks(seed_release, seed_import,
                                                                                          tmp_path):
    folder = seed_release["folder"]
    trials = sorted(p for p in folder.iterdir() if p.is_dir())
    part1 = tmp_path / "part1.tar"
    with tarfile.open(part1, "w") as t:
        for p in trials[:4]:
            t.add(p, arcname=f"{SEED_EXPERIMENT}/{p.name}")
    part2 = tmp_path / "part2.zip"
    with zipfile.ZipFile(part2, "w") as z:
        for p in sorted(q for q in folder.rglob("*") if q.is_file() and q.relative_to(folder).parts[0] not in
                        {t.name for t in trials[:4]}):
            z.write(p, p.relative_to(folder.parent).as_posix())
    both = import_zoo([part1, part2], seed_release["zoo"], tmp_path / "both", chunk_size=3, progress=False)
    pd.testing.assert_frame_equal(both.zoo_dir.metadata, seed_import.zoo_dir.metadata)
    first = import_zoo([part1], seed_release["zoo"], tmp_path / "first", chunk_size=3, progress=False)
    lacking = sorted(seed_release["trials"][int(p.name.split("seed=")[1].split("_")[0])].params["seed"] - 1
                     for p in trials[4:])
    assert first.missing_models == lacking and first.models == 4 and first.expected_states == 8 * 3
    assert first.zoo_dir.info["import"]["models"] == {"spec": 8, "imported": 4, "missing": lacking}


def test_workers_give_the_same_zoo(seed_release, seed_import, tmp_path):
    s = import_zoo([seed_release["zip"]], seed_release["zoo"], tmp_path / "par", chunk_size=3, workers=2,
                   progress=False)
    pd.testing.assert_frame_equal(s.zoo_dir.metadata, seed_import.zoo_dir.metadata)


def test_resume_after_interruption_is_identical(seed_release, seed_import, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    real = export.write_safetensors

    def write_then_die(path, tensors, metadata):
        real(path, tensors, metadata)
        if path.name == "state.safetensors" and metadata["epoch"] == "1":
            raise KeyboardInterrupt  # killed right after a chunk's epoch 1

    monkeypatch.setattr(export, "write_safetensors", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        import_zoo([seed_release["tar"]], seed_release["zoo"], out, chunk_size=3, progress=False)
    monkeypatch.undo()
    assert not (out / "metadata.parquet").exists() and list(out.rglob("state.safetensors"))
    resumed = import_zoo([seed_release["tar"]], seed_release["zoo"], out, chunk_size=3, progress=False)
    pd.testing.assert_frame_equal(resumed.zoo_dir.metadata, seed_import.zoo_dir.metadata)
    assert [m[:2] for m in resumed.missing_states] == [m[:2] for m in seed_import.missing_states]
    a, b = _weights(resumed.zoo_dir), _weights(seed_import.zoo_dir)
    assert all(torch.equal(a[k].nan_to_num(7.0), b[k].nan_to_num(7.0)) for k in b)


def test_resume_after_sigkill_gives_the_uninterrupted_zoo(seed_release, seed_import, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "modelzoos.cli", "import", str(seed_release["zip"]), "--zoo",
           str(seed_release["zoo"].path), "--out", str(out), "--chunk-size", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not any(out.rglob("epoch_001.safetensors")) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, "the import finished before it could be killed"
    proc.send_signal(signal.SIGKILL)  # after a chunk's epoch 1, before the import's end
    proc.wait()
    assert list(out.rglob("state.safetensors")) and not (out / "metadata.parquet").exists()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    resumed = summarize(out)
    pd.testing.assert_frame_equal(resumed.zoo_dir.metadata, seed_import.zoo_dir.metadata.assign(
        weights_file=resumed.zoo_dir.metadata.weights_file, weights_row=resumed.zoo_dir.metadata.weights_row))
    a, b = _weights(resumed.zoo_dir), _weights(seed_import.zoo_dir)
    assert all(torch.equal(a[k].nan_to_num(7.0), b[k].nan_to_num(7.0)) for k in b)
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob("state.safetensors"))


def test_epoch_subset_and_cli(seed_release, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["import", str(seed_release["tar"]), "--zoo", str(seed_release["zoo"].path), "--out", str(out),
                 "--epochs", "0,2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "8 of the spec's 8 models, 15 of 16 states" in printed and "refused" not in printed  # epoch 1 not read
    assert f"model {TRUNCATED - 1} epoch 2: " in printed
    assert "module indices 0,3,6,9,11: 8 trials with dropout 0.0" in printed
    zd = ZooDir(out)
    assert sorted(zd.metadata.epoch.unique()) == [0, 2] and zd.info["import"]["epochs"] == [0, 2]
    assert main(["import", str(seed_release["tar"]), "--zoo", "mnist_cnn_hyp_fix", "--out", str(tmp_path / "x"),
                 "--experiment", SEED_EXPERIMENT, "--quiet"]) == 2
    assert "training::epochs_train = 2" in capsys.readouterr().err


def test_a_trial_outside_the_spec_is_an_error_naming_trial_and_key(seed_release, tmp_path):
    zoo = spec(tmp_path, """
        extends = "mnist_cnn_seed"
        name = "mnist_cnn_seed"
        epochs = 2
        [grid]
        lr = [0.001]
        [seeds]
        range = [1, 8]
    """)
    with pytest.raises(ReleaseError, match=r"NN_tune_trainable_c0371_00000_0_seed=4.*optim::lr = 0.0003 is not in"):
        import_zoo([seed_release["folder"]], zoo, tmp_path / "x", progress=False)
    with pytest.raises(ReleaseError, match=r"experiments found: tune_zoo_mnist_uniform \(8 trials\)"):
        import_zoo([seed_release["folder"]], seed_release["zoo"], tmp_path / "y", experiment="other", progress=False)
    with pytest.raises(ReleaseError, match="pass every part of the release once"):
        import_zoo([seed_release["folder"], seed_release["zip"]], seed_release["zoo"], tmp_path / "z", progress=False)


# ---------------------------------------------------------------------------------------------------------
# Hyperparameter zoos: both CNN-s index layouts, Hyp-10-rand model ids, round trip through a built repository
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hyp_release(tmp_path_factory):
    """A Hyp-10-fix zoo with dropout 0 and 0.5 × seeds 1..4: the dropout-0.5 trials half with the inserted
    Dropout modules (indices 0/4/8/11/14), half without (0/3/6/9/11)."""
    root = tmp_path_factory.mktemp("hyp")
    zoo = spec(root, """
        extends = "mnist_cnn_hyp_fix"
        name = "mnist_cnn_hyp_fix"
        epochs = 1
        [grid]
        init = ["kaiming_uniform"]
        activation = ["relu"]
        optimizer = ["sgd"]
        lr = [0.001]
        weight_decay = [0.0001]
        dropout = [0.0, 0.5]
        [seeds]
        range = [1, 4]
    """)
    trials, models = [], {}
    for i, (seed, p) in enumerate((s, p) for p in (0.5, 0.0) for s in range(1, 5)):
        inserted = p > 0 and seed % 2 == 0
        torch.manual_seed(seed)
        model = OriginalCNN("cnn", 1, "relu", p, inserted)
        states = evolve(model, 1, seed)
        models[(seed, p)] = (model, states)
        trials.append(FakeTrial(trial_name(i, f"dropout={p},seed={seed}"),
                                cnn_params(seed, init="kaiming_uniform", activation="relu", optimizer="sgd", lr=1e-3,
                                           wd=1e-4, dropout=p, epochs=1), states, results=cnn_results(1, seed)))
    folder = write_experiment(root, "tune_zoo_mnist_hyperparameter_10_fixed_seeds", trials)
    return {"zoo": zoo, "folder": folder, "models": models}


def test_both_cnn_s_index_layouts_map_by_the_file_and_are_reported(hyp_release, tmp_path):
    s = import_zoo([hyp_release["folder"]], hyp_release["zoo"], tmp_path / "hyp", progress=False)
    assert s.index_layouts == {"0,4,8,11,14": {"dropout 0.5": 2}, "0,3,6,9,11": {"dropout 0.5": 2, "dropout 0.0": 4}}
    meta, weights = s.zoo_dir.metadata, _weights(s.zoo_dir)
    for (seed, p), (_, states) in hyp_release["models"].items():
        mid = int(meta[(meta.seed == seed) & (meta.dropout == p)].model_id.iloc[0])
        assert mid == (seed - 1) * 2 + (p > 0)  # (replicate, …, dropout) enumeration
        assert all(torch.equal(weights[(mid, e)], flat(st)) for e, st in states.items())


def test_round_trip_import_build_load_dataset_build_module_gives_the_original_logits(hyp_release, tmp_path,
                                                                                     hf_offline):
    from datasets import load_dataset

    from modelzoos.loading import build_module
    from modelzoos.publish import build_repo
    from modelzoos.repository import config_info, validate_repo

    s = import_zoo([hyp_release["folder"]], hyp_release["zoo"], tmp_path / "mnist_cnn_hyp_fix", progress=False)
    repo = tmp_path / "repo"
    build_repo([s.zoo_dir.path], repo, progress=False)
    validate_repo(repo)
    info = config_info(repo, "mnist_cnn_hyp_fix")
    assert info.imported["experiment"] == "tune_zoo_mnist_hyperparameter_10_fixed_seeds"
    card = (repo / "README.md").read_text()
    assert "The authors' released models" in card and "`trial`" in card and "10.5281/zenodo.6632086" in card
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    checked = 0
    for split in ("train", "validation", "test"):
        for row in load_dataset(str(repo), "mnist_cnn_hyp_fix", split=split, cache_dir=str(tmp_path / "cache")):
            model, states = hyp_release["models"][(row["seed"], row["dropout"])]
            assert row["trial"].endswith(f"dropout={row['dropout']},seed={row['seed']}_2021-07-01_16-59-"
                                         + row["trial"][-2:])
            model.load_state_dict(states[row["epoch"]])
            with torch.no_grad():
                assert torch.equal(build_module(row, info)(x), model.eval()(x))
            checked += 1
    assert checked == 16


def test_optimizer_states_of_adam_and_sgd_trials_round_trip(tmp_path, capsys):
    """--optimizer-state: the release's optimizer files as main's optimizer.<slot> tensors (one chunk mixing Adam
    and SGD), read back by ZooDir.optimizer_state equal to what the trials saved; a missing file is NaN and noted."""
    zoo = spec(tmp_path, """
        extends = "mnist_cnn_hyp_fix"
        name = "mnist_cnn_hyp_fix"
        epochs = 2
        [grid]
        init = ["uniform"]
        activation = ["tanh"]
        optimizer = ["adam", "sgd"]
        lr = [0.001]
        weight_decay = [0.0]
        dropout = [0.0]
        [seeds]
        range = [1, 2]
    """)
    saved, trials = {}, []
    for i, (seed, opt) in enumerate([(1, "sgd"), (1, "adam"), (2, "adam"), (2, "sgd")]):
        torch.manual_seed(seed)
        model = OriginalCNN("cnn", 1, "tanh", 0.0, inserted=False)
        make = {"adam": adam_state, "sgd": sgd_state}[opt]
        saved[(seed, opt)] = {e: make(model, e * 10 + i) if e else make(model, 0) for e in range(3)}
        t = FakeTrial(trial_name(i, f"optimizer={opt},seed={seed}"), cnn_params(seed, optimizer=opt, lr=1e-3),
                      evolve(model, 2, seed), dict(saved[(seed, opt)]), cnn_results(2, seed))
        if (seed, opt) == (2, "sgd"):
            del t.optimizers[1]
        trials.append(t)
    folder = write_experiment(tmp_path, "tune_zoo_mnist_hyperparameter_10_fixed_seeds", trials)
    out = tmp_path / "opt"
    assert main(["import", str(folder), "--zoo", str(zoo.path), "--out", str(out), "--optimizer-state",
                 "--quiet"]) == 0
    assert "model 3 (" in capsys.readouterr().out  # the missing optimizer file is a listed problem
    zd = ZooDir(out)
    assert zd.info["run"]["optimizer_state"] is True and len(zd.metadata) == 12
    names = [e.name for e in zd.layout.parameters().entries]
    checked = 0
    for row in zd.metadata.itertuples():
        got = zd.optimizer_state(row.model_id, row.epoch)
        state = saved[(row.seed, row.optimizer)][row.epoch]["state"]
        if (row.seed, row.optimizer, row.epoch) == (2, "sgd", 1):
            assert got == {"step": -1}  # no file: NaN rows, step unknown
            continue
        slots = {"adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}[row.optimizer]
        assert set(got) == {*slots, "step"}
        for slot in slots:
            for j, name in enumerate(names):
                want = state[j][slot] if state else torch.zeros_like(got[slot][name])
                assert torch.equal(got[slot][name], want)
        steps = {int(s["step"]) for s in state.values() if "step" in s}
        assert got["step"] == (steps.pop() if steps else 0 if not state else -1)  # torch's SGD records no step
        checked += 1
    assert checked == 11
    with safe_open(str(out / zd.metadata.weights_file[0]), framework="pt") as f:  # one chunk: both optimizers
        sgd_rows = f.get_tensor("optimizer.momentum_buffer")[
            [r.weights_row for r in zd.metadata[zd.metadata.epoch == 0].itertuples() if r.optimizer == "adam"]]
    assert sgd_rows.isnan().all()
    assert main(["import", str(folder), "--twins-of", str(out), "--out", str(tmp_path / "t"),
                 "--optimizer-state"]) == 2


def test_hyp_rand_trials_fill_replicates_by_released_seed(tmp_path):
    zoo = spec(tmp_path, """
        extends = "mnist_cnn_hyp_rand"
        name = "mnist_cnn_hyp_rand"
        epochs = 1
        [grid]
        init = ["normal"]
        activation = ["sigmoid"]
        optimizer = ["adam"]
        lr = [0.0001]
        weight_decay = [0.001]
        dropout = [0.0, 0.5]
        [seeds]
        random = 2
        low = 0
        high = 1000000
        draw_seed = 1
    """)
    released = [(900, 0.0), (55, 0.5), (17, 0.0), (3, 0.5)]
    trials = []
    for i, (seed, p) in enumerate(released):
        model = OriginalCNN("cnn", 1, "sigmoid", p, inserted=False)
        trials.append(FakeTrial(trial_name(i, f"dropout={p}"), cnn_params(seed, init="normal", activation="sigmoid",
                                lr=1e-4, wd=1e-3, dropout=p, epochs=1), evolve(model, 1, seed),
                                results=cnn_results(1, seed)))
    folder = write_experiment(tmp_path, "tune_zoo_mnist_hyperparameter_10_random_seeds", trials)
    s = import_zoo([folder], zoo, tmp_path / "rand", progress=False)
    ids = s.zoo_dir.metadata.drop_duplicates("model_id").set_index("model_id")
    assert ids.seed.to_dict() == {0: 17, 1: 3, 2: 900, 3: 55}  # replicate r of a grid point: its r-th smallest seed
    assert any("keeps the seed of its original trial" in n for n in s.zoo_dir.zoo.notes)
    extra = FakeTrial(trial_name(9, "dropout=0.0"), cnn_params(5, init="normal", activation="sigmoid", lr=1e-4,
                      wd=1e-3, epochs=1), evolve(OriginalCNN("cnn", 1, "sigmoid", 0, False), 1, 5))
    write_experiment(tmp_path / "more", "tune_zoo_mnist_hyperparameter_10_random_seeds", [*trials, extra])
    with pytest.raises(ReleaseError, match="2 replicates of this grid point already imported"):
        import_zoo([tmp_path / "more" / "tune_zoo_mnist_hyperparameter_10_random_seeds"], zoo, tmp_path / "r2",
                   progress=False)


# ---------------------------------------------------------------------------------------------------------
# CNN-m, ResNet-18, twins
# ---------------------------------------------------------------------------------------------------------


def test_cnn_m_trial(tmp_path):
    zoo = spec(tmp_path, """
        extends = "cifar10_cnn_m_seed"
        name = "cifar10_cnn_m_seed"
        epochs = 1
        [seeds]
        range = [1, 1]
    """)
    model = OriginalCNN("cnn_m", 3, "gelu", 0.0, inserted=True)
    states = evolve(model, 1, 1)
    folder = write_experiment(tmp_path, zoo.source, [FakeTrial(trial_name(0, "seed=1"), cnn_params(
        1, model_type="CNN3", channels=3, init="kaiming_uniform", activation="gelu", lr=1e-4, wd=1e-2, epochs=1),
        states, results=cnn_results(1, 1))])
    s = import_zoo([folder], zoo, tmp_path / "m", progress=False)
    assert s.index_layouts == {"0,4,8,13,16": {"dropout 0.0": 1}}
    weights = _weights(s.zoo_dir)
    assert all(torch.equal(weights[(0, e)], flat(st)) for e, st in states.items())


def test_resnet18_trial_with_batchnorm_buffers(tmp_path, one_thread):
    zoo = spec(tmp_path, """
        extends = "cifar10_resnet18_seed"
        name = "cifar10_resnet18_seed"
        epochs = 1
        [seeds]
        range = [1, 1]
    """)
    torch.manual_seed(0)
    model = original_resnet18()
    model.train()(torch.randn(2, 3, 32, 32))  # BatchNorm running statistics move off their defaults
    states = evolve(model, 1, 1)
    results = cnn_results(1, 1, val=True, placeholder=False)
    params = cnn_params(1, model_type="Resnet18", channels=3, init="kaiming_uniform", activation="relu",
                        optimizer="sgd", lr=0.05, wd=5e-4, batch_size=256, epochs=1)
    del params["model::dropout"]
    params["cuda"] = True
    folder = write_experiment(tmp_path, zoo.source, [FakeTrial(trial_name(0, "seed=1"), params, states,
                                                               results=results)])
    s = import_zoo([folder], zoo, tmp_path / "r", progress=False)
    zd = s.zoo_dir
    assert "bn1.running_mean" in {e.name for e in zd.layout.entries}
    assert zd.info["import"]["environment"]["cuda_trials"] == 1 and s.index_layouts == {"torchvision": {
        "dropout 0.0": 1}}
    for e, st in states.items():
        got = zd.state(0, e)
        assert all(torch.equal(got[k], v) for k, v in st.items() if v.is_floating_point())
    row = zd.metadata.iloc[0]
    assert row.train_acc == results[0]["train_acc"] and row.val_acc == results[0]["val_acc"]  # real at epoch 0
    ours = get_zoo(zoo.path)
    from modelzoos.architectures import build_model

    net = build_model(ours.architecture, in_channels=3, num_classes=10, activation="relu")
    net.load_state_dict(zd.state(0, 1), strict=False)
    model.load_state_dict(states[1])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), model.eval()(x))


def _ard_checkpoint(state: dict[str, torch.Tensor], seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """A variational-dropout checkpoint of a dense CNN-s state: log σ² = −10, except for a random third of the
    weights set above the drop threshold; and the sparsity_ratio the release would log (log α ≥ 3, clipped)."""
    g = torch.Generator().manual_seed(seed)
    out, dropped, total = {}, 0, 0
    kinds = {0: 8, 3: 8, 6: 8, 9: 10, 11: 10}  # module index → log α clip
    for i, clip in kinds.items():
        w, b = state[f"module_list.{i}.weight"], state[f"module_list.{i}.bias"]
        ls2 = torch.full_like(w, -10.0)
        pick = torch.rand(w.shape, generator=g) < 1 / 3
        ls2[pick] = (torch.log(w.abs() + 1e-15) * 2 + 3.5)[pick]
        out |= {f"module_list.{i}.weight": w, f"module_list.{i}.bias": b, f"module_list.{i}.log_sigma2": ls2,
                f"module_list.{i}.log_sigma2_bias": torch.full_like(b, -10.0)}
        la = torch.clamp(ls2 - 2 * torch.log(w.abs() + 1e-15), -clip, clip)
        dropped += int((la >= 3).sum())
        total += w.numel()
    return out, dropped / total


def test_variational_dropout_twins_import_in_the_twin_format(seed_import, seed_release, tmp_path):
    source = seed_import.zoo_dir
    trials, expected = [], {}
    for i, seed in enumerate(SEEDS):
        source_trial = seed_release["trials"][seed]
        dense = seed_release["states"][seed][2 if seed not in (TRUNCATED, DIVERGED) else 1]
        states, ratios = {}, {}
        for e in range(3):
            states[e], ratios[e] = _ard_checkpoint({k: v + 0.001 * e for k, v in dense.items()}, seed * 10 + e)
        expected[seed - 1] = states
        params = cnn_params(seed, model_type="CNN_ARD", epochs=25, **{
            "training::init_checkpoint_path": f"/home/authors/zoos/{SEED_EXPERIMENT}/{source_trial.name}",
            "training::sample_epoch": 2})
        trials.append(FakeTrial(trial_name(i, f"seed={seed}"), params, states,
                                results=cnn_results(2, seed, extra=lambda e, r=ratios: {"sparsity_ratio": r[e]})))
    folder = write_experiment(tmp_path, "cnn_small_mnist_ard", trials)
    s = import_twins([folder], source.path, tmp_path / "mnist_cnn_seed_sparse_vd", epochs=[0, 1, 2], progress=False)
    zd = s.zoo_dir
    assert zd.zoo.name == "mnist_cnn_seed_sparse_vd" and zd.info["twins"]["source_epoch"] == 2
    assert not [p for p in s.problems if "sparsity" in p]  # sparsity from the weights = the logged sparsity_ratio
    ls_layout = zd.info["twins"]["log_sigma2_layout"]
    assert [e["name"] for e in ls_layout] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                              "conv3.weight", "conv3.bias", "fc1.weight", "fc2.weight"]
    meta = zd.metadata
    for i, w in zd.weights():
        m, e = int(meta.model_id[i]), int(meta.epoch[i])
        raw = expected[m][e]
        dense = flat({k: v for k, v in raw.items() if not k.endswith(("log_sigma2", "log_sigma2_bias"))})
        assert torch.equal(w[w != 0], dense[w != 0]) and (w == 0).sum() > 0.2 * w.numel()
        assert meta.sparsity[i] > 0.2 and meta.trial[i] == trials[m].name
    rows = np.zeros((len(meta), len(ls_layout) and sum(int(np.prod(e["shape"])) for e in ls_layout)), np.float32)
    zd.read_rows(np.arange(len(meta)), rows, "log_sigma2")
    first = expected[int(meta.model_id[0])][int(meta.epoch[0])]
    assert torch.equal(torch.from_numpy(rows[0][:200]), first["module_list.0.log_sigma2"].flatten())
