"""The whole chain on real components: generate → build → push (fake Hub) → load_dataset → rebuilt module."""

import numpy as np
import pytest
from huggingface_hub import HfFileSystem

from modelzoos.catalogue import get_zoo
from modelzoos.cli import main
from modelzoos.export import generate
from modelzoos.loading import build_module, config_info, evaluate_row

pytest_plugins = ["fakehub"]
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def test_generate_build_push_load(fake_hub, tmp_path, capsys, digits_data):
    import datasets

    zoo_dir = tmp_path / "zoo"
    zd = generate(get_zoo("digits_cnn_seed"), zoo_dir, models=8, epochs=1, progress=False)
    repo = tmp_path / "repo"
    assert main(["build", str(zoo_dir), "--repo", str(repo), "--quiet"]) == 0
    assert main(["push", str(repo), "--repo-id", "org/modelzoos"]) == 0
    out = capsys.readouterr().out
    assert 'load_dataset("org/modelzoos", "digits_cnn_seed")' in out
    assert 'load_dataset("org/modelzoos"' in (repo / "README.md").read_text()  # the card names the Hub id

    HfFileSystem.clear_instance_cache()
    rows = datasets.concatenate_datasets([
        datasets.load_dataset("org/modelzoos", "digits_cnn_seed", split=s) for s in ("train", "validation", "test")])
    assert len(rows) == len(zd) == 16
    source = {(int(zd.metadata.model_id[i]), int(zd.metadata.epoch[i])): w.numpy() for i, w in zd.weights()}
    for row in rows:
        assert np.array_equal(np.asarray(row["weights"], dtype=np.float32), source[row["model_id"], row["epoch"]])
    info = config_info("org/modelzoos", "digits_cnn_seed")
    row = rows[3]
    _, acc = evaluate_row(row, info, data=digits_data)
    assert acc == pytest.approx(row["test_acc"], abs=1e-9)
    assert build_module(row, info).training is False
