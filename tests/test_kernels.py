"""The fused Triton training step (MODELZOOS_KERNELS=fused) equals the PyTorch step, checked in Triton's interpreter.

Tiny sizes (2 models, batches of 3 and 2, CNN-s on 20×20 and CNN-m on 22×22 inputs, the smallest each layer
table takes) keep the interpreter within seconds per case. Each step is compared from identical starting
points: logits, losses, correct counts and gradients against autograd's through the engine's forward with the
models' epoch keys (``population.model_keys`` of epoch 2: one model's key has a lane, so its dropout masks are
not its seed's); the updated weights and optimizer state against ``optimizers.OPTIMIZERS``' step applied to the
kernel's own gradients (Adam divides by √v + 1e-8, which magnifies the float32 noise of gradients near 1e-9 far
beyond the rest). The generate test runs the whole engine both ways.
"""

import json
import shutil
import textwrap

import pytest
import torch
import torch.nn.functional as F
from fakedata import write_mnist

from modelzoos.architectures import ACTIVATIONS, CNN_M, CNN_S, ConvNet
from modelzoos.catalogue import ModelConfig, get_zoo
from modelzoos.export import ZooFileError
from modelzoos.generate import generate
from modelzoos.kernels import FusedStep, KernelError
from modelzoos.optimizers import OPTIMIZERS
from modelzoos.population import Group, PopulationCNN, make_groups, model_keys
from modelzoos.training import numerics

pytest.importorskip("triton")

ARCHITECTURES = {"cnn_s_1ch": (CNN_S, 1, 20), "cnn_s_3ch": (CNN_S, 3, 20), "cnn_m": (CNN_M, 3, 22)}
OPTIMIZER_DROPOUT = [("adam", False), ("sgd", True), ("adam", True), ("sgd", False)]
# every activation with every architecture; each architecture with both optimizers, with and without dropout
CASES = [(arch, act, *OPTIMIZER_DROPOUT[(i + j) % 4])
         for j, arch in enumerate(ARCHITECTURES) for i, act in enumerate(ACTIVATIONS)]
REL = 1e-5  # float32 rounding of sums of 10²–10³ terms, relative to the tensor's largest element
# larger tiles than the GPU default (32 rows, K 16) for fewer interpreted loop trips; still several row tiles
# and reduction chunks per stage. The generate test below runs the default.
TILES = {"block_rows": 64, "block_k": 32}
DATA_SEED = 3  # its smallest pooling gap (below) is 3.2e-5, 300× the rounding differences


@pytest.fixture
def pooling_gap(monkeypatch):
    """Smallest gap between the two largest values of a 2×2 max-pool window over the torch forwards since the
    last call, relative to the larger value. A window closer to a tie than float32 noise routes the gradient
    by rounding (any other summation order may pick the other element, as MODELZOOS_CHANNELS_LAST does): the
    test data must keep clear of such windows for the comparison to be one of rounding only."""
    pool, inputs = F.max_pool2d, []

    def recording(x, *args, **kwargs):
        inputs.append(x.detach())
        return pool(x, *args, **kwargs)

    def gap() -> float:
        tops = [x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2].unfold(-2, 2, 2).unfold(-2, 2, 2).flatten(-2)
                .topk(2, -1).values for x in inputs]
        inputs.clear()
        return min(((t[..., 0] - t[..., 1]) / t[..., 0].abs()).min().item() for t in tops)

    monkeypatch.setattr(F, "max_pool2d", recording)
    return gap


@pytest.fixture(scope="module")
def interpreter():
    """TRITON_INTERPRET=1 for this module's tests (the kernel module is re-imported under it), then restored."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, rel: float = REL) -> None:
    err = (actual - expected).abs().max().item()
    assert err <= rel * expected.abs().max().item(), (what, err, expected.abs().max().item())


def make_group(specs, channels: int, size: int, activation: str, optimizer: str, dropout: bool) -> Group:
    """Two models with their own seed, init class, learning rate, weight decay and dropout probability."""
    configs = [ModelConfig(i, 7 + i, init, activation, optimizer, lr, wd, p, 3, 1, "constant")
               for i, (init, lr, wd, p) in enumerate([("kaiming_uniform", 1e-3, 0.0, 0.0),
                                                      ("normal", 3e-4, 1e-3, 0.5 if dropout else 0.0)])]

    def params_of(index):
        states = []
        for i in index:
            torch.manual_seed(configs[i].seed)
            states.append(ConvNet(specs, channels, size, 10, activation, 0.0).state_dict())
        return {k: torch.stack([s[k] for s in states]) for k in states[0]}

    (g,) = make_groups(configs, params_of, torch.device("cpu"))
    return g


def copy_state(src: Group, dst: Group) -> None:
    with torch.no_grad():
        for k, v in src.params.items():
            dst.params[k].copy_(v)
        for k, v in src.opt_state.items():
            dst.opt_state[k].copy_(v)


@pytest.mark.parametrize(("arch", "activation", "optimizer", "dropout"), CASES)
def test_fused_step_equals_the_torch_step(interpreter, one_thread, pooling_gap, arch, activation, optimizer,
                                          dropout):
    specs, channels, size = ARCHITECTURES[arch]
    g, fused_g, check_g = (make_group(specs, channels, size, activation, optimizer, dropout) for _ in range(3))
    net = PopulationCNN(specs, activation)
    keys = model_keys(g)(2)  # epoch 2: the second model's key is in lane 1 (normal init), or 3 with dropout
    assert (keys >> 32).tolist() == [0, 3 if dropout else 1]
    gen = torch.Generator().manual_seed(DATA_SEED)
    images, labels = torch.randn(12, channels, size, size, generator=gen), torch.randint(0, 10, (12,), generator=gen)
    fused = FusedStep(fused_g, net, images, labels, 3, store_grads=True, **TILES)
    update = OPTIMIZERS[optimizer].step
    for done, b in ((4, 3), (5, 2)):  # a full batch, then a partial one; Adam state zero, then not
        copy_state(fused_g, g)
        copy_state(fused_g, check_g)
        idx = torch.randint(0, 12, (2, b), generator=gen)
        x, y = images[idx], labels[idx]
        logits = net.forward(g.params, x, keys, g.dropout, torch.tensor(done))
        losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
        losses.sum().backward()
        assert pooling_gap() > 1e-5
        grads = {k: v.grad for k, v in g.params.items()}
        for v in g.params.values():
            v.grad = None
        fused_losses, fused_correct = fused(idx, keys, torch.tensor(done))
        close(fused.logits[:, :b], logits.detach(), "logits")
        close(fused_losses, losses.detach(), "losses")
        assert torch.equal(fused_correct, (logits.argmax(2) == y).sum(1))
        for k, v in grads.items():
            close(fused.grads[k], v, f"{k}.grad")
        for k, v in check_g.params.items():
            v.grad = fused.grads[k].clone()
        update(check_g.params, check_g.opt_state, check_g.lr, check_g.wd, done + 1)
        for k, v in check_g.params.items():
            close(fused_g.params[k], v, k)
        for k, v in check_g.opt_state.items():
            close(fused_g.opt_state[k], v, k)


def test_fused_needs_the_interpreter_on_the_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    g = make_group(CNN_S, 1, 20, "relu", "sgd", False)
    with pytest.raises(KernelError, match="TRITON_INTERPRET=1"):
        FusedStep(g, PopulationCNN(CNN_S, "relu"), torch.zeros(4, 1, 20, 20), torch.zeros(4, dtype=torch.int64), 2)


def test_the_switch_takes_named_values(monkeypatch):
    assert numerics("cpu")["kernels"] == numerics("cuda")["kernels"] == "torch"  # until measured on a GPU
    monkeypatch.setenv("MODELZOOS_KERNELS", "fused")
    assert numerics("cpu")["kernels"] == "fused"
    monkeypatch.setenv("MODELZOOS_KERNELS", "triton")
    with pytest.raises(ValueError, match="MODELZOOS_KERNELS='triton': use torch or fused"):
        numerics("cpu")


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """A 2-model MNIST-shaped zoo (kaiming_normal init: keys in lane 1, ``randomness.model_key``, so the dropout
    masks are not the seed's; dropout 0 and 0.5) on 4 fake train images: one step of 4 per epoch."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root / "data", n_train=30, n_test=12)
    (root / "tiny.toml").write_text(textwrap.dedent("""
        extends = "mnist_cnn_seed"
        name = "tiny_mnist"
        batch_size = 4
        [data]
        train_size = 4
        [grid]
        init = ["kaiming_normal"]
        dropout = [0.0, 0.5]
        [seeds]
        range = [1, 1]
    """))
    return get_zoo(root / "tiny.toml"), root


def test_generate_with_fused_kernels_writes_the_same_zoo(interpreter, one_thread, tiny_mnist, monkeypatch,
                                                        tmp_path):
    zoo, root = tiny_mnist
    plain = generate(zoo, tmp_path / "torch", epochs=1, data_root=root / "data", progress=False)
    monkeypatch.setenv("MODELZOOS_KERNELS", "fused")
    fused = generate(zoo, tmp_path / "fused", epochs=1, data_root=root / "data", progress=False)
    assert fused.info["numerics"]["kernels"] == "fused" and plain.info["numerics"]["kernels"] == "torch"
    w1, w2 = dict(plain.weights()), dict(fused.weights())
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) <= 1e-5  # one Adam step at lr 3e-4
    cols = ["train_loss", "val_loss", "test_loss"]
    assert (plain.metadata[cols] - fused.metadata[cols]).abs().max().max() <= 1e-5

    # a run resumes only under the switch it began with; zoo.json files from before the switch mean "torch"
    unfinished = tmp_path / "unfinished"
    shutil.copytree(plain.path, unfinished)
    (unfinished / "metadata.parquet").unlink()
    with pytest.raises(ZooFileError, match=r"numerics\.kernels \(the run has MODELZOOS_KERNELS=torch, this process "
                                           r"fused"):
        generate(zoo, unfinished, epochs=1, data_root=root / "data", progress=False)
    monkeypatch.delenv("MODELZOOS_KERNELS")
    info = json.loads((unfinished / "zoo.json").read_text())
    del info["numerics"]["kernels"]
    (unfinished / "zoo.json").write_text(json.dumps(info))
    assert len(generate(zoo, unfinished, epochs=1, data_root=root / "data", progress=False)) == len(plain)
