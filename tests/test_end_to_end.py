"""The whole chain on real components: generate → build → push (fake Hub) → load_dataset → rebuilt module.

`generate` runs on the suite's finished digits zoo (conftest), where the same command is a no-op."""

import numpy as np
import pytest
from huggingface_hub import HfFileSystem

from modelzoos.cli import main
from modelzoos.loading import build_module, config_info, evaluate_row

pytest_plugins = ["fakehub"]
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def test_generate_build_push_load(fake_hub, zoo_dir, tmp_path, capsys, digits_data):
    import datasets

    zd = zoo_dir
    before = {p: p.stat().st_mtime_ns for p in zd.path.rglob("*")}
    assert main(["generate", "digits_cnn_seed", "--out", str(zd.path), "--models", "20", "--epochs", "3",
                 "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in zd.path.rglob("*")} == before  # finished: nothing rewritten
    repo = tmp_path / "repo"
    assert main(["build", str(zd.path), "--repo", str(repo), "--quiet"]) == 0
    assert main(["push", str(repo), "--repo-id", "org/modelzoos"]) == 0
    out = capsys.readouterr().out
    assert 'load_dataset("org/modelzoos", "digits_cnn_seed")' in out
    assert b'load_dataset("org/modelzoos"' in fake_hub.files("org/modelzoos")["README.md"]  # the card names the id

    HfFileSystem.clear_instance_cache()
    rows = datasets.concatenate_datasets([
        datasets.load_dataset("org/modelzoos", "digits_cnn_seed", split=s) for s in ("train", "validation", "test")])
    assert len(rows) == len(zd) == 80
    source = {(int(zd.metadata.model_id[i]), int(zd.metadata.epoch[i])): w.numpy() for i, w in zd.weights()}
    for row in rows:
        assert np.array_equal(np.asarray(row["weights"], dtype=np.float32), source[row["model_id"], row["epoch"]])
    info = config_info("org/modelzoos", "digits_cnn_seed")
    row = rows[3]
    _, acc = evaluate_row(row, info, data=digits_data)
    assert acc == pytest.approx(row["test_acc"], abs=1e-9)
    assert build_module(row, info).training is False
