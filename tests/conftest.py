"""Shared fixtures: the digits image data (offline, built once per session) and a tiny digits zoo spec."""

import textwrap

import pytest
import torch

from modelzoos.catalogue import get_zoo
from modelzoos.data import load_image_data


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
