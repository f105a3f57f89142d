"""Shared fixtures: the digits image data (offline, built once per session), a tiny digits zoo spec, and the
suite's one digits zoo, its sparsified twins and the repository folder `modelzoos build` writes from them."""

import shutil
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from modelzoos import manifest
from modelzoos.catalogue import get_zoo
from modelzoos.data import load_image_data
from modelzoos.export import ZooDir
from modelzoos.generate import generate
from modelzoos.publish import build_repo
from modelzoos.twins import sparsify

ZOO_MODELS, ZOO_EPOCHS = 20, 3  # the shared zoo: enough models for 14 / 3 / 3 split models and probes
TWIN_MODELS, TWIN_EPOCHS = 7, 3  # the twins of its first 7 models (the fewest a published config takes)


@pytest.fixture(scope="session", autouse=True)
def fresh_datasets_cache(tmp_path_factory):
    """A datasets cache of this session only: datasets keys the cache of a local folder by the folder's
    name and card, so rows of an earlier session's folder called "repo" would be served again."""
    import datasets

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_datasets_cache")
    yield
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="module")
def hf_offline(tmp_path_factory):
    """No network, and every Hugging Face cache in a temporary folder (for one test module)."""
    import datasets
    import huggingface_hub

    home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
        yield home


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for the rest of a module (small models and ResNet forwards on a shared
    2-core machine: two contended threads were ≈ 15× slower); the thread count is restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_zoo():
    return get_zoo("digits_cnn_seed")


@pytest.fixture(scope="session")
def digits_data(digits_zoo):
    return load_image_data(digits_zoo.data)


@pytest.fixture
def tiny_spec(tmp_path):
    """A 4-model digits zoo (2 seeds × 2 dropout values) as a user spec file."""
    path = tmp_path / "tiny_digits.toml"
    path.write_text(textwrap.dedent("""
        extends = "digits_cnn_hyp_fix"
        name = "tiny_digits"
        epochs = 3
        [grid]
        init = ["kaiming_uniform"]
        activation = ["relu"]
        optimizer = ["adam"]
        lr = [0.001]
        weight_decay = [0.0001]
        dropout = [0.0, 0.5]
        [seeds]
        range = [1, 2]
    """))
    return path


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> ZooDir:
    """The suite's digits seed zoo: the first 20 models × 3 epochs (population engine). Read it only; a test
    that changes files works on a copy (``copy_of``)."""
    return generate(get_zoo("digits_cnn_seed"), tmp_path_factory.mktemp("zoo") / "digits_cnn_seed",
                    models=ZOO_MODELS, epochs=ZOO_EPOCHS, progress=False)


@pytest.fixture(scope="session")
def twin_dirs(zoo_dir, tmp_path_factory) -> dict[str, ZooDir]:
    """{method: twin directory}: both sparsified twins of the first 7 models of ``zoo_dir``, 3 twin epochs."""
    return {m: sparsify(zoo_dir, tmp_path_factory.mktemp(m) / f"digits_cnn_seed_sparse_{m}", m, models=TWIN_MODELS,
                        epochs=TWIN_EPOCHS, progress=False) for m in ("vd", "mp")}


@pytest.fixture(scope="session")
def repo_dir(zoo_dir, twin_dirs, tmp_path_factory) -> Path:
    """The repository folder `modelzoos build` writes from ``zoo_dir`` and its variational-dropout twins:
    configs ``digits_cnn_seed`` (the default) and ``digits_cnn_seed_sparse_vd``. Read it only."""
    repo = tmp_path_factory.mktemp("repo") / "modelzoos"
    build_repo([zoo_dir.path, twin_dirs["vd"].path], repo, progress=False)
    return repo


@pytest.fixture
def copy_of(tmp_path):
    """``copy_of(path)``: a private copy of a shared folder (zoo directory or repository) in tmp_path."""

    def copy(path: Path) -> Path:
        return Path(shutil.copytree(path, tmp_path / Path(path).name))

    return copy


@pytest.fixture
def rows_of(copy_of):
    """``rows_of(zoo_path, keep)``: a private copy of a zoo directory whose metadata.parquet keeps only the rows
    where ``keep(table)`` (a bool array) holds, its manifest updated to match (build checks the manifest)."""

    def subset(path: Path, keep) -> Path:
        zoo = copy_of(path)
        meta = pq.read_table(zoo / "metadata.parquet")
        pq.write_table(meta.filter(pa.array(keep(meta))), zoo / "metadata.parquet")
        manifest.write(zoo, manifest.read(zoo) | manifest.record(zoo, [zoo / "metadata.parquet"]))
        return zoo

    return subset
