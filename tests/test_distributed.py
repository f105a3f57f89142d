"""The Ray backend on a local 2-CPU Ray instance: same zoo as the local backend, killed workers, failing chunks."""

import json
import socket
import sys

import pandas as pd
import pytest
import ray  # the [ray] extra is part of the test environment: a missing Ray fails the suite, it is not skipped
import torch

from modelzoos.catalogue import get_zoo
from modelzoos.distributed import DistributedError, FaultInjection, RayBackend
from modelzoos.export import Run, ZooDir, ZooFileError, chunk_dir, produce
from modelzoos.generate import Training, generate

pytestmark = pytest.mark.slow

MODELS, EPOCHS = 4, 2


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_zoo(tmp_path_factory) -> ZooDir:
    """The uninterrupted zoo from the local backend, with 1 torch thread like a 1-CPU Ray task."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return generate(get_zoo("digits_cnn_seed"), tmp_path_factory.mktemp("local") / "zoo", models=MODELS,
                        epochs=EPOCHS, engine="reference", chunk_size=1, progress=False)
    finally:
        torch.set_num_threads(threads)


def _run(models: int = MODELS) -> Run:
    return Run(get_zoo("digits_cnn_seed"), models=models, epochs=EPOCHS, engine="reference", chunk_size=1)


def generate_ray(run: Run, out, *, device: str = "cpu", progress: bool = False, **backend) -> ZooDir:
    """``run`` written into ``out`` by the Ray backend (``generate(..., backend="ray")`` with its options)."""
    return produce(out.resolve(), Training(run, device), RayBackend(device=device, **backend), progress)


def _assert_same_zoo(got: ZooDir, ref: ZooDir) -> None:
    """Same rows (of ``got``'s models), bitwise equal weights, same zoo.json apart from the run's size."""
    rows = ref.metadata.model_id.isin(got.metadata.model_id.unique())
    expected = ref.metadata[rows].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.metadata, expected)
    want = {(int(ref.metadata.model_id[i]), int(ref.metadata.epoch[i])): w for i, w in ref.weights()}
    have = {(int(got.metadata.model_id[i]), int(got.metadata.epoch[i])): w for i, w in got.weights()}
    assert have.keys() == {k for k in want if k[0] in set(got.metadata.model_id)}
    assert all(torch.equal(have[k], want[k]) for k in have)
    info, ref_info = (json.loads((z.path / "zoo.json").read_text()) for z in (got, ref))
    info["run"]["models"] = ref_info["run"]["models"]
    assert info == ref_info
    assert not list(got.path.rglob("state.safetensors")) and not list(got.path.rglob(".*.tmp"))


def test_ray_zoo_equals_the_local_zoo(ray_instance, local_zoo, tmp_path):
    generate_ray(_run(), tmp_path / "zoo", progress=False)
    _assert_same_zoo(ZooDir(tmp_path / "zoo"), local_zoo)


def test_generate_with_the_ray_backend(ray_instance, local_zoo, tmp_path):
    zd = generate(get_zoo("digits_cnn_seed"), tmp_path / "zoo", models=2, epochs=EPOCHS, engine="reference",
                  chunk_size=1, progress=False, backend="ray")
    _assert_same_zoo(zd, local_zoo)


def test_a_killed_worker_is_retried_and_its_chunk_resumes(ray_instance, local_zoo, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    fault = FaultInjection(markers, first_ids=frozenset({0, 2}), after_epoch=1, kills=1)
    generate_ray(_run(), tmp_path / "zoo", max_retries=3, fault=fault)
    assert sorted(p.name for p in markers.iterdir()) == ["kills_000000", "kills_000002"]
    assert all(p.read_text() == "1" for p in markers.iterdir())  # each was SIGKILLed once after epoch 1
    _assert_same_zoo(ZooDir(tmp_path / "zoo"), local_zoo)


def test_a_chunk_failing_beyond_its_retries_raises_and_stays_resumable(ray_instance, local_zoo, tmp_path):
    markers, out, run = tmp_path / "markers", tmp_path / "zoo", _run(models=2)
    markers.mkdir()
    fault = FaultInjection(markers, first_ids=frozenset({1}), after_epoch=0, kills=99)
    with pytest.raises(DistributedError, match="1 of 2 chunk task") as err:
        generate_ray(run, out, max_retries=1, fault=fault)
    assert "models_000001-000001: the worker process died" in str(err.value) and "rerun" in str(err.value)
    assert (markers / "kills_000001").read_text() == "2"  # first attempt + one retry
    first, second = (chunk_dir(out, c) for c in run.chunks())
    assert (first / "complete.json").exists()
    assert (second / "state.safetensors").exists() and (second / "epoch_000.safetensors").exists()
    assert not (second / "complete.json").exists() and not (out / "metadata.parquet").exists()
    generate_ray(run, out, progress=False)  # the rerun trains only what is missing
    _assert_same_zoo(ZooDir(out), local_zoo)


def test_a_directory_of_another_run_is_refused(ray_instance, local_zoo):
    with pytest.raises(ZooFileError, match="different zoo run"):
        generate_ray(_run(models=3), local_zoo.path, progress=False)


def test_an_unreachable_cluster_is_named(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(DistributedError, match=f"cannot reach the Ray cluster at '{address}'.*ray start --head"):
        generate_ray(_run(), tmp_path / "zoo", address=address, progress=False)


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(DistributedError, match=r"pip install 'modelzoos\[ray\]'"):
        generate_ray(_run(), tmp_path / "zoo", progress=False)


def test_a_cuda_index_is_refused_when_ray_assigns_gpus(tmp_path):
    with pytest.raises(ValueError, match="pass device='cuda'"):
        generate_ray(_run(), tmp_path / "zoo", device="cuda:1", progress=False)
