"""`modelzoos generate`: the zoo directory, resume after SIGKILL, and clear errors on bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from modelzoos.architectures import build_model
from modelzoos.catalogue import get_zoo
from modelzoos.cli import main
from modelzoos.export import METADATA_SCHEMA, ZooDir, ZooFileError, read_safetensors
from modelzoos.generate import generate


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "modelzoos.cli", *map(str, args)]


def _weights(zd: ZooDir) -> dict[tuple[int, int], torch.Tensor]:
    meta = zd.metadata
    return {(int(meta.model_id[i]), int(meta.epoch[i])): w for i, w in zd.weights()}


@pytest.fixture(scope="module", params=["population", "reference"])
def reference_zoo(request, tmp_path_factory):
    """An uninterrupted 3-model × 2-epoch digits zoo, from each engine, made by the CLI in a fresh process.

    A fresh process (as in the resume test) keeps torch's default thread count: CPU results are bitwise
    reproducible for a fixed thread count only.
    """
    out = tmp_path_factory.mktemp("ref") / "zoo"
    cmd = _cli("generate", "digits_cnn_seed", "--out", out, "--models", 3, "--epochs", 2, "--engine", request.param,
               "--quiet")
    subprocess.run(cmd, check=True, capture_output=True)
    return ZooDir(out)


def test_zoo_directory_contents(reference_zoo):
    zd = reference_zoo
    info = json.loads((zd.path / "zoo.json").read_text())
    assert info["run"]["zoo"]["name"] == "digits_cnn_seed"
    assert info["data"]["sizes"] == {"train": 1257, "val": 270, "test": 270}
    assert {"torch", "modelzoos", "python"} <= set(info["versions"])
    assert [e["name"] for e in info["layout"]][:2] == ["conv1.weight", "conv1.bias"]
    meta = zd.metadata
    assert list(meta.columns) == METADATA_SCHEMA.names
    assert len(meta) == 3 * 3
    assert sorted(set(zip(meta.model_id, meta.epoch, strict=True))) == [(m, e) for m in range(3) for e in range(3)]
    assert (meta.ggap == meta.train_acc - meta.test_acc).all()
    assert not meta.nonfinite.any()
    assert set(meta.seed) == {1, 2, 3}
    # no pickle anywhere: only JSON, Parquet and safetensors
    suffixes = {p.suffix for p in zd.path.rglob("*") if p.is_file()}
    assert suffixes == {".json", ".parquet", ".safetensors"}
    assert not list(zd.path.rglob("state.safetensors"))  # training state removed once complete


def test_stored_epoch0_is_the_seeded_init_and_recorded_accuracy_is_real(reference_zoo, digits_data):
    zd = reference_zoo
    model = build_model("cnn", in_channels=1, activation="tanh", init="kaiming_uniform", seed=2)
    assert all(torch.equal(zd.state(1, 0)[k], v) for k, v in model.state_dict().items())
    row = zd.metadata[(zd.metadata.model_id == 1) & (zd.metadata.epoch == 2)].iloc[0]
    model.load_state_dict(zd.state(1, 2))
    with torch.no_grad():
        acc = (model.eval()(digits_data.test.images).argmax(1) == digits_data.test.labels).double().mean().item()
    assert acc == pytest.approx(row.test_acc, abs=1e-9)


def test_rerun_of_a_finished_zoo_is_a_no_op(reference_zoo):
    before = {p: p.stat().st_mtime_ns for p in reference_zoo.path.rglob("*")}
    generate(get_zoo("digits_cnn_seed"), reference_zoo.path, models=3, epochs=2,
             engine=reference_zoo.info["run"]["engine"], progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in reference_zoo.path.rglob("*")}


def test_resume_after_sigkill_gives_the_uninterrupted_zoo(reference_zoo, tmp_path):
    out = tmp_path / "killed"
    engine = reference_zoo.info["run"]["engine"]
    cmd = _cli("generate", "digits_cnn_seed", "--out", out, "--models", 3, "--epochs", 2, "--engine", engine,
               "--quiet")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    kills = 0
    triggers = [  # kill at several moments: start-up, right after an epoch file, later in the run
        lambda: (out / "zoo.json").exists(),
        lambda: any(out.rglob("epoch_001.safetensors")),
        lambda: any(out.rglob("epoch_002.safetensors")),
    ]
    for trigger in triggers:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None and not trigger() and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # never a half-written file under a final name
        for path in out.rglob("*.safetensors"):
            with open(path, "rb") as f:
                header = int.from_bytes(f.read(8), "little")
            assert path.stat().st_size > 8 + header
    assert kills >= 2
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    resumed = ZooDir(out)
    pd.testing.assert_frame_equal(resumed.metadata, reference_zoo.metadata)
    ref = _weights(reference_zoo)
    got = _weights(resumed)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert not list(out.rglob(".*.tmp"))


def test_corrupt_weight_file_gives_a_clear_error(reference_zoo, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_zoo.path, copy)
    victim = sorted(copy.rglob("epoch_001.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    zd = ZooDir(copy)
    with pytest.raises(ZooFileError, match="corrupt or truncated") as err:
        list(zd.weights())
    assert str(victim) in str(err.value) and "delete the chunk directory" in str(err.value)


def test_truncated_state_file_is_reported_on_resume(tmp_path):
    zoo = get_zoo("digits_cnn_seed")
    out = tmp_path / "z"
    generate(zoo, out, models=1, epochs=1, progress=False)
    cdir = next((out / "weights").iterdir())
    (cdir / "complete.json").unlink()
    (out / "metadata.parquet").unlink()
    (cdir / "state.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ZooFileError, match=r"state\.safetensors"):
        generate(zoo, out, models=1, epochs=1, progress=False)


def test_a_directory_of_another_run_is_refused(reference_zoo):
    with pytest.raises(ZooFileError, match=r"different zoo run .*these differ: .*run\.models"):  # names the fields
        generate(get_zoo("digits_cnn_seed"), reference_zoo.path, models=2, epochs=2,
                 engine=reference_zoo.info["run"]["engine"], progress=False)


def test_numerics_are_recorded_and_a_run_resumes_only_under_the_same(reference_zoo, monkeypatch, tmp_path):
    assert reference_zoo.info["numerics"] == {"tf32": False, "channels_last": True, "compile": False,
                                            "kernels": "torch"}
    monkeypatch.setenv("MODELZOOS_CHANNELS_LAST", "0")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(reference_zoo.path, unfinished)
    (unfinished / "metadata.parquet").unlink()
    with pytest.raises(ZooFileError, match=r"numerics\.channels_last \(the run has MODELZOOS_CHANNELS_LAST=1, "
                                           r"this process 0"):
        generate(get_zoo("digits_cnn_seed"), unfinished, models=3, epochs=2,
                 engine=reference_zoo.info["run"]["engine"], progress=False)
    monkeypatch.delenv("MODELZOOS_CHANNELS_LAST")
    info = json.loads((unfinished / "zoo.json").read_text())
    del info["numerics"]["compile"]  # recorded before the switch existed: it was off
    (unfinished / "zoo.json").write_text(json.dumps(info))
    resumed = generate(get_zoo("digits_cnn_seed"), unfinished, models=3, epochs=2,
                       engine=reference_zoo.info["run"]["engine"], progress=False)
    assert len(resumed) == 9
    finished = generate(get_zoo("digits_cnn_seed"), reference_zoo.path, models=3, epochs=2,  # a no-op
                        engine=reference_zoo.info["run"]["engine"], progress=False)
    assert len(finished) == 9
    monkeypatch.setenv("MODELZOOS_CHANNELS_LAST", "yes")
    with pytest.raises(ValueError, match="MODELZOOS_CHANNELS_LAST='yes': use 0 or 1"):
        generate(get_zoo("digits_cnn_seed"), reference_zoo.path, models=3, epochs=2, progress=False)


def test_cli_generate_prints_a_summary(tmp_path, capsys):
    assert main(["generate", "digits_cnn_seed", "--out", str(tmp_path / "z"), "--models", "2", "--epochs", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 models, 4 states" in out and "test accuracy at epoch 1" in out and "median" in out


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "mnist_cnn_sed", "--out", "x"], "did you mean mnist_cnn_seed"),
    (["generate", "digits_cnn_seed", "--out", "x", "--models", "0"], "--models must be in 1..1000"),
    (["generate", "digits_cnn_seed", "--out", "x", "--epochs", "99"], "--epochs must be in 0..50"),
    (["generate", "digits_cnn_seed", "--out", "x", "--engine", "warp"], "unknown engine 'warp'"),
])
def test_cli_bad_input(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_image_data_names_files_and_data_root(tmp_path, capsys):
    assert main(["generate", "mnist_cnn_seed", "--out", str(tmp_path / "z"), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "train-images-idx3-ubyte" in err
    assert not (tmp_path / "z" / "zoo.json").exists()


def test_cli_zoos_table_and_json(capsys):
    assert main(["zoos"]) == 0
    table = capsys.readouterr().out
    assert "cifar10_cnn_seed" in table and "50,360" in table and "2,585,360" in table and "3,844,360" in table
    assert main(["zoos", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 30
    keys = {"name", "dataset", "architecture", "config", "models", "states", "parameters"}
    assert all(keys <= set(r) for r in rows)
    assert sum(r["models"] for r in rows if r["dataset"] != "digits") == 50_360


def test_zoodir_rejects_a_non_zoo(tmp_path):
    with pytest.raises(ZooFileError, match="not a zoo directory"):
        ZooDir(tmp_path)
    Path(tmp_path / "zoo.json").write_text("{}")
    with pytest.raises(ZooFileError, match="incomplete"):
        ZooDir(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Optimizer states (--optimizer-state)
# ---------------------------------------------------------------------------------------------------------

ADAM_SGD = """
extends = "digits_cnn_hyp_fix"
name = "digits_adam_sgd"
epochs = 2
[grid]
init = ["kaiming_uniform"]
activation = ["relu"]
optimizer = ["adam", "sgd"]
lr = [0.001]
weight_decay = [0.0001]
dropout = [0.0]
[seeds]
range = [1, 2]
"""


@pytest.fixture(scope="module")
def adam_sgd(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "digits_adam_sgd.toml"
    path.write_text(ADAM_SGD)
    return get_zoo(path)


@pytest.fixture(scope="module", params=["population", "reference"])
def with_optimizer(request, adam_sgd, tmp_path_factory) -> ZooDir:
    """Adam and SGD models, 2 epochs, with their optimizer states (population: all 4 in one chunk)."""
    models = 4 if request.param == "population" else 2
    return generate(adam_sgd, tmp_path_factory.mktemp("opt") / "zoo", models=models, engine=request.param,
                    optimizer_state=True, progress=False)


def _resume_state(zd: ZooDir, configs, epoch: int) -> dict[str, torch.Tensor]:
    """The engine's resumable state after ``epoch``, rebuilt from the stored weights and optimizer states only."""
    opt = {c.model_id: zd.optimizer_state(c.model_id, epoch) for c in configs}
    if zd.info["run"]["engine"] == "reference":
        (c,) = configs
        state = {f"model.{k}": v for k, v in zd.state(c.model_id, epoch).items()}
        for slot, tensors in opt[c.model_id].items():
            if slot != "step":
                state |= {f"opt.{name}.{slot}": t for name, t in tensors.items()}
        if c.optimizer == "adam":  # torch's Adam keeps its step count per parameter, as a float tensor
            step = torch.tensor(float(opt[c.model_id]["step"]))
            state |= {f"opt.{e.name}.step": step for e in zd.layout.parameters().entries}
        return state | {"step": torch.tensor(opt[c.model_id]["step"])}
    state = {"step": torch.tensor(opt[configs[0].model_id]["step"])}
    groups = [[c for c in configs if c.optimizer == o] for o in dict.fromkeys(c.optimizer for c in configs)]
    for gi, group in enumerate(groups):  # the engine's groups: (activation, optimizer) in order of appearance
        weights = [zd.state(c.model_id, epoch) for c in group]
        for name in weights[0]:
            state[f"g{gi}.param.{name}"] = torch.stack([w[name] for w in weights])
            for slot in opt[group[0].model_id]:
                if slot != "step":
                    state[f"g{gi}.opt.{name}.{slot}"] = torch.stack([opt[c.model_id][slot][name] for c in group])
    return state


def test_stored_optimizer_states_resume_the_run_bitwise(with_optimizer, adam_sgd, digits_data):
    from modelzoos.population import train_population
    from modelzoos.training import train_reference_chunk

    zd = with_optimizer
    assert zd.info["run"]["optimizer_state"] is True
    engine = {"population": train_population, "reference": train_reference_chunk}[zd.info["run"]["engine"]]
    configs = adam_sgd.models()[: zd.info["run"]["models"]]
    adam, sgd = zd.optimizer_state(0, 1), zd.optimizer_state(1, 1)
    assert set(adam) == {"exp_avg", "exp_avg_sq", "step"} and set(sgd) == {"momentum_buffer", "step"}
    assert adam["step"] == sgd["step"] == 126  # ⌈1,257 / 10⌉ steps per epoch
    assert adam["exp_avg"].keys() == zd.state(0, 1).keys()
    assert all(not t.any() for t in zd.optimizer_state(0, 0)["exp_avg"].values())  # epoch 0: no step yet
    chunks = [configs] if zd.info["run"]["engine"] == "population" else [[c] for c in configs]
    for chunk in chunks:
        (epoch2,) = list(engine(adam_sgd, chunk, digits_data, "cpu", resume=(1, _resume_state(zd, chunk, 1)), stop=2))
        for i, c in enumerate(chunk):
            stored = zd.layout.flatten(zd.state(c.model_id, 2))
            assert torch.equal(epoch2.weights[i], stored), c
            assert all(torch.equal(epoch2.optimizer[slot][i], zd.layout.parameters().flatten(t))
                       for slot, t in zd.optimizer_state(c.model_id, 2).items() if slot != "step")


def test_optimizer_states_resume_after_interruption_bitwise(with_optimizer, adam_sgd, tmp_path, monkeypatch):
    from modelzoos import export

    zd = with_optimizer
    run = zd.info["run"]
    real = export.write_safetensors

    def write_then_die(path, tensors, metadata):
        real(path, tensors, metadata)
        if path.name == "state.safetensors" and metadata["epoch"] == "1":
            raise KeyboardInterrupt  # killed right after epoch 1 was saved

    monkeypatch.setattr(export, "write_safetensors", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(adam_sgd, tmp_path / "zoo", models=run["models"], engine=run["engine"], optimizer_state=True,
                 progress=False)
    monkeypatch.undo()
    resumed = generate(adam_sgd, tmp_path / "zoo", models=run["models"], engine=run["engine"], optimizer_state=True,
                       progress=False)
    pd.testing.assert_frame_equal(resumed.metadata, zd.metadata)
    for file in sorted(zd.path.rglob("epoch_*.safetensors")):
        a, _ = export.read_safetensors(file)
        b, _ = export.read_safetensors(resumed.path / file.relative_to(zd.path))
        assert a.keys() == b.keys() and any(k.startswith("optimizer.") for k in a)
        assert all(a[k].tobytes() == b[k].tobytes() for k in a), file  # bitwise (NaN rows too)
        assert file.read_bytes() == (resumed.path / file.relative_to(zd.path)).read_bytes(), file  # whole files


def test_weights_only_by_default(reference_zoo):
    assert "optimizer_state" not in reference_zoo.info["run"]
    for file in reference_zoo.path.rglob("epoch_*.safetensors"):
        tensors, _ = read_safetensors(file)
        assert list(tensors) == ["weights"]
    with pytest.raises(ZooFileError, match="without --optimizer-state"):
        reference_zoo.optimizer_state(0, 1)
