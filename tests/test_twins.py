"""Sparsified twins: epoch 0 is the source model, sparsity grows, masks are exact zeros, resume, bad input."""

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TWIN_EPOCHS as EPOCHS  # twin epochs of the shared twins (the first 3 of the protocol's 25)
from conftest import TWIN_MODELS as MODELS  # the twins are those of the first 7 models of the shared zoo
from conftest import ZOO_MODELS

from modelzoos import export, twins
from modelzoos.architectures import Layout
from modelzoos.catalogue import TWIN_EPOCHS, get_zoo
from modelzoos.cli import main
from modelzoos.export import METADATA_SCHEMA, ZooDir, ZooFileError
from modelzoos.loading import config_info, evaluate_row, load_zoo
from modelzoos.publish import build_repo
from modelzoos.repository import SPLITS, validate_repo
from modelzoos.twins import TWIN_SCHEMA, log_alpha, mp_sparsity, normal, sparsify

WEIGHTS = ("conv1.weight", "conv2.weight", "conv3.weight", "fc1.weight", "fc2.weight")


@pytest.fixture(scope="module")
def source(zoo_dir):
    """The suite's finished digits seed zoo (conftest): 20 models × 3 epochs."""
    return zoo_dir


@pytest.fixture(scope="module", params=["vd", "mp"])
def twin(request, twin_dirs):
    return twin_dirs[request.param]


def _rows(zd: ZooDir) -> dict[tuple[int, int], tuple[torch.Tensor, dict]]:
    """(model_id, epoch) → (flat sparse weights, metadata row)."""
    meta = zd.metadata
    return {(int(meta.model_id[i]), int(meta.epoch[i])): (w, meta.iloc[i]) for i, w in zd.weights()}


def test_directory_format(twin, source):
    method = twin.info["twins"]["method"]
    assert twin.zoo.name == f"digits_cnn_seed_sparse_{method}" and twin.zoo.epochs == TWIN_EPOCHS
    assert twin.info["layout"] == source.info["layout"]
    assert twin.info["twins"]["source_run"] == source.info["run"] and twin.info["twins"]["source_epoch"] == 3
    meta = twin.metadata
    assert list(meta.columns) == TWIN_SCHEMA.names == [*METADATA_SCHEMA.names, "sparsity"]
    expected = [(m, e) for m in range(MODELS) for e in range(EPOCHS + 1)]
    assert sorted(zip(meta.model_id, meta.epoch, strict=True)) == expected
    assert set(meta.zoo) == {twin.zoo.name} and (meta.epochs == TWIN_EPOCHS).all()
    assert json.loads(pq.read_schema(twin.path / "metadata.parquet").metadata[b"modelzoos.twins"])["method"] == method
    assert not list(twin.path.rglob("state.safetensors"))
    assert {p.suffix for p in twin.path.rglob("*") if p.is_file()} == {".json", ".parquet", ".safetensors"}


def test_epoch0_is_the_loaded_source_model(twin, source):
    src = source.metadata[(source.metadata.epoch == 3) & (source.metadata.model_id < MODELS)].set_index("model_id")
    zero = twin.metadata[twin.metadata.epoch == 0].set_index("model_id")
    assert (zero.test_acc == src.test_acc).all()  # exactly
    np.testing.assert_allclose(zero.test_loss, src.test_loss, rtol=1e-6)
    assert (zero.sparsity == 0).all()
    for m in range(MODELS):
        assert all(torch.equal(twin.state(m, 0)[k], v) for k, v in source.state(m, 3).items())


def test_sparsity_grows(twin):
    meta = twin.metadata
    median = meta.groupby("epoch").sparsity.median().to_numpy()
    assert (np.diff(median) >= 0).all() and median[-1] > 0
    if twin.info["twins"]["method"] == "mp":  # exactly the schedule: round(s(e)·N) of the N = 2,416 weights
        n = sum(twin.layout[w].numel for w in WEIGHTS)
        assert n == 2416
        for e in range(1, EPOCHS + 1):
            assert (meta[meta.epoch == e].sparsity == round(mp_sparsity(e) * n) / n).all()


def test_masked_weights_are_exact_zeros_counted_by_sparsity(twin):
    layout = twin.layout
    vd = twin.info["twins"]["method"] == "vd"
    if vd:
        ls_layout = Layout.from_json(twin.info["twins"]["log_sigma2_layout"])
        assert [e.name for e in ls_layout.entries] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                         "conv3.weight", "conv3.bias", "fc1.weight", "fc2.weight"]
    previous = {}
    for (m, e), (flat, row) in _rows(twin).items():
        state = layout.unflatten(flat)
        zeros = sum(int((state[n] == 0).sum()) for n in WEIGHTS)
        assert zeros / sum(state[n].numel() for n in WEIGHTS) == row.sparsity
        if e == 0:
            continue
        if vd:  # the stored pair (w, log σ²) gives log α ≥ 3 exactly where w = 0
            tensors, _ = export.read_safetensors(twin.path / row.weights_file)
            ls2 = ls_layout.unflatten(torch.from_numpy(tensors["log_sigma2"][row.weights_row]))
            for entry in ls_layout.entries:
                kind = "conv" if entry.name.startswith("conv") else "linear"
                masked = log_alpha(ls2[entry.name], state[entry.name], kind) >= 3
                assert torch.equal(masked, state[entry.name] == 0), (m, e, entry.name)
        else:  # pruned weights stay pruned
            if (m, e - 1) in previous:
                assert all(((previous[m, e - 1][n] == 0) <= (state[n] == 0)).all() for n in WEIGHTS)
            previous[m, e] = state


def test_published_rows_are_sparse_and_reproduce_their_accuracy(twin, source, tmp_path, digits_data):
    import datasets

    method = twin.info["twins"]["method"]
    config = f"digits_cnn_seed_sparse_{method}"
    repo = tmp_path / "repo"
    assert build_repo([twin.path, source.path], repo, progress=False) == [config, "digits_cnn_seed"]
    assert validate_repo(repo) == ["digits_cnn_seed", config]  # twins listed right after their zoo
    card = (repo / "README.md").read_text()
    assert f"### {config}" in card and "**Sparsified twins** of `digits_cnn_seed`" in card and "`sparsity`" in card
    info = config_info(repo, config)
    assert info.zoo.name == config
    assert "source_path" not in json.loads((repo / "data" / config / "zoo.json").read_text())["twins"]
    rows = datasets.concatenate_datasets([load_zoo(repo, config, split=s) for s in SPLITS]).with_format("numpy")
    assert rows.features == info.features
    assert ("log_sigma2" in rows.column_names) == (method == "vd") and len(rows) == MODELS * (EPOCHS + 1)
    final = source.metadata[source.metadata.epoch == 3].set_index("model_id")
    ls_layout = Layout.from_json(twin.info["twins"]["log_sigma2_layout"]) if method == "vd" else None
    checked = 0
    for row in rows:
        m, e = int(row["model_id"]), int(row["epoch"])
        state = info.layout.unflatten(torch.from_numpy(row["weights"]))
        zeros = sum(int((state[n] == 0).sum()) for n in WEIGHTS)
        assert zeros / 2416 == row["sparsity"]
        if e == 0:  # the dense source model, bit for bit
            assert row["sparsity"] == 0 and row["test_acc"] == final.test_acc[m]
            assert all(torch.equal(state[k], v) for k, v in source.state(m, 3).items())
        elif ls_layout is not None:  # masked exactly where the published log α ≥ 3
            ls2 = ls_layout.unflatten(torch.from_numpy(row["log_sigma2"]))
            for entry in ls_layout.entries:
                kind = "conv" if entry.name.startswith("conv") else "linear"
                masked = log_alpha(ls2[entry.name], state[entry.name], kind) >= 3
                assert torch.equal(masked, state[entry.name] == 0)
        else:  # pruned to the schedule's count, exact zeros
            assert zeros == round(mp_sparsity(e) * 2416)
        if e in (0, EPOCHS) and checked < 4:  # the rebuilt module reproduces the recorded accuracy
            _, acc = evaluate_row(row, info, data=digits_data)
            assert acc == pytest.approx(float(row["test_acc"]), abs=1e-9)
            checked += 1
    assert checked == 4


def test_resume_after_interruption_is_identical(twin, source, tmp_path, monkeypatch):
    method = twin.info["twins"]["method"]
    out = tmp_path / "twin"
    real = export.write_safetensors

    def write_then_die(path, tensors, metadata):
        real(path, tensors, metadata)
        if path.name == "state.safetensors" and metadata["epoch"] == "2":
            raise KeyboardInterrupt  # killed right after epoch 2 was saved

    monkeypatch.setattr(export, "write_safetensors", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        sparsify(source, out, method, models=MODELS, epochs=EPOCHS, progress=False)
    monkeypatch.undo()
    assert not (out / "metadata.parquet").exists() and list(out.rglob("state.safetensors"))
    resumed = sparsify(source, out, method, models=MODELS, epochs=EPOCHS, progress=False)
    assert resumed.metadata.equals(twin.metadata)
    a, b = _rows(resumed), _rows(twin)
    assert all(torch.equal(a[k][0], b[k][0]) for k in b)


def test_normal_noise_is_standard_and_per_model():
    seeds = torch.tensor([1, 2, 3])
    z = normal(seeds, twins.NOISE_STREAM, 7, 200_001)
    assert z.shape == (3, 200_001)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert torch.equal(normal(seeds[1:2], twins.NOISE_STREAM, 7, 1001), z[1:2, :1001])  # independent of the batch
    assert not torch.equal(z[0], z[1])


def test_cli_summary_of_a_finished_twin(twin, source, capsys):
    method = twin.info["twins"]["method"]
    assert main(["twins", str(source.path), "--method", method, "--out", str(twin.path), "--models", str(MODELS),
                 "--epochs", str(EPOCHS), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"twins digits_cnn_seed_sparse_{method}: {MODELS} models, epochs 0..{EPOCHS}" in out and "sparsity" in out
    assert main(["twins", str(source.path), "--method", "l0", "--out", str(twin.path)]) == 2
    assert "error: unknown sparsification method 'l0'; valid: vd, mp" in capsys.readouterr().err


def test_bad_input(source, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(source.path / "zoo.json", unfinished / "zoo.json")
    with pytest.raises(ZooFileError, match="incomplete"):
        sparsify(unfinished, tmp_path / "out", "vd")
    with pytest.raises(ValueError, match="unknown sparsification method 'l1'; valid: vd, mp"):
        sparsify(source, tmp_path / "out", "l1")
    with pytest.raises(ValueError, match=rf"--models must be in 1\.\.{ZOO_MODELS}"):
        sparsify(source, tmp_path / "out", "mp", models=ZOO_MODELS + 1)

    resnet = tmp_path / "resnet"
    resnet.mkdir()
    info = json.loads((source.path / "zoo.json").read_text())
    info["run"]["zoo"] = get_zoo("cifar10_resnet18_seed").to_dict()
    (resnet / "zoo.json").write_text(json.dumps(info))
    pq.write_table(pa.Table.from_pylist([], schema=METADATA_SCHEMA), resnet / "metadata.parquet")
    with pytest.raises(ValueError, match=r"resnet18.*LayerSpec CNNs only"):
        sparsify(resnet, tmp_path / "out", "vd")
    assert not (tmp_path / "out").exists()


def test_kl_weight_ramp_and_mp_schedule():
    # docs/protocol.md, "Sparsified twins": min(1, 0.01·e/25) for e = 0..24 never reaches 1;
    # MP reaches its target at epoch 20
    assert min(1.0, twins.KL_RAMP * 24 / TWIN_EPOCHS) == pytest.approx(0.0096)
    assert mp_sparsity(twins.MP_RAMP_EPOCHS) == mp_sparsity(TWIN_EPOCHS) == twins.MP_TARGET
    assert all(mp_sparsity(e) < mp_sparsity(e + 1) for e in range(1, twins.MP_RAMP_EPOCHS))
    assert math.isclose(mp_sparsity(1), 0.8 * (1 - 0.95**3))
