"""Fidelity to the original protocol where it is subtle: which models share a data order (the original's
global-RNG consumption, replayed here with torch's own RNG), the ResNet epoch-0 train metrics, and the
normalisation constants of the specs."""

import itertools
import math
import textwrap
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from modelzoos import randomness
from modelzoos.architectures import ARCHITECTURES, INITS, build_model, init_weights
from modelzoos.catalogue import get_zoo
from modelzoos.data import ImageData, Split
from modelzoos.population import train_population
from modelzoos.training import TRAIN_STREAMS, augment, train_reference

EPOCHS, N_TRAIN, BATCH = 3, 20, 10
DROPOUTS = (0.0, 0.3, 0.5)


def original_streams(architecture: str, in_channels: int, size: int, init: str, dropout: float, seed: int
                     ) -> list[torch.Tensor]:
    """The original's global torch RNG state at the start of epochs 1..EPOCHS of one model.

    As the original trainable: ``manual_seed(seed)``, build, init; then per epoch a ``randperm`` of the train
    set (its data order) and the train-mode forwards, whose ``nn.Dropout`` masks draw from the same RNG
    (p = 0: no draw). Backward passes and optimizer steps draw nothing. The state at an epoch's start is the
    stream that epoch's order and masks come from.
    """
    images = torch.zeros(N_TRAIN, in_channels, size, size)
    states = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model = init_weights(ARCHITECTURES[architecture].build(in_channels, 10, "relu", dropout), init)
        for _ in range(EPOCHS):
            states.append(torch.get_rng_state())
            order = torch.randperm(N_TRAIN)
            for start in range(0, N_TRAIN, BATCH):
                x = images[order[start:start + BATCH]]
                for spec in model.specs:
                    x = getattr(model, spec.name)(x.flatten(1) if spec.kind == "linear" else x)
                    x = model.pool(x) if spec.pool else x
                    x = model.act(x) if spec.act else x
                    x = F.dropout(x, dropout, training=True) if spec.dropout else x
    return states


@pytest.mark.parametrize(("architecture", "in_channels", "size"), [("cnn", 1, 28), ("cnn", 3, 28), ("cnn_m", 3, 32)])
def test_model_keys_share_exactly_where_the_original_rng_streams_do(architecture, in_channels, size):
    models = list(itertools.product((1, 2), INITS, DROPOUTS))  # (seed, init, dropout): a Hyp-10-fix grid's axes
    streams = {m: original_streams(architecture, in_channels, size, m[1], m[2], m[0]) for m in models}
    shared = {True: 0, False: 0}
    for a, b in itertools.combinations(models, 2):
        for epoch in range(1, EPOCHS + 1):
            original = torch.equal(streams[a][epoch - 1], streams[b][epoch - 1])
            ours = randomness.model_key(a[0], a[1], a[2], epoch) == randomness.model_key(b[0], b[1], b[2], epoch)
            assert ours == original, (a, b, epoch)
            shared[original] += 1
    assert shared[True] and shared[False]


def test_model_keys_cover_every_init_and_keep_the_seed_in_lane_zero():
    assert set(randomness.INIT_LANE) == set(INITS)
    for epoch in range(4):  # the seed zoos' models (uniform-type init, no dropout) are keyed by their seed
        assert randomness.model_key(7, "kaiming_uniform", 0.0, epoch) == 7
    assert randomness.model_key(7, "normal", 0.5, 2) != randomness.model_key(7, "normal", 0.5, 1)
    with pytest.raises(ValueError, match="32-bit seed"):
        randomness.model_key(2**32, "uniform", 0.0, 1)


@pytest.fixture(scope="module")
def sharing_zoo(tmp_path_factory):
    """18 models of two seeds: inits U, KU, N and dropout 0, 0.3, 0.5 (one population group)."""
    path = tmp_path_factory.mktemp("spec") / "sharing.toml"
    path.write_text(textwrap.dedent(f"""
        extends = "digits_cnn_hyp_fix"
        name = "sharing"
        epochs = {EPOCHS}
        [grid]
        init = ["uniform", "kaiming_uniform", "normal"]
        activation = ["relu"]
        optimizer = ["sgd"]
        lr = [0.0001]
        weight_decay = [0.0]
        dropout = {list(DROPOUTS)}
        [seeds]
        range = [1, 2]
    """))
    return get_zoo(path)


@pytest.fixture(scope="module")
def small_digits(digits_data):
    """N_TRAIN train images (10 val, 10 test) of the digits data: only the data orders matter here."""
    d = digits_data
    def cut(s, n):
        return Split(s.images[:n].clone(), s.labels[:n].clone())
    return ImageData(d.recipe, d.num_classes, cut(d.train, N_TRAIN), cut(d.val, 10), cut(d.test, 10), "small")


def _data_orders(monkeypatch, run) -> list[torch.Tensor]:
    """Every data order ``run()`` draws, in call order (each [n] or [M, n])."""
    drawn = []
    permutation = randomness.permutation

    def spy(key, stream, step, n, device=None):
        out = permutation(key, stream, step, n, device)
        if stream == randomness.DATA_ORDER:
            drawn.append(out.clone())
        return out

    monkeypatch.setattr(randomness, "permutation", spy)
    run()
    monkeypatch.undo()
    return drawn


def test_engines_share_batches_as_the_original(sharing_zoo, small_digits, monkeypatch):
    models = sharing_zoo.models()
    ref = _data_orders(monkeypatch, lambda: [list(train_reference(sharing_zoo, c, small_digits)) for c in models])
    pop = _data_orders(monkeypatch, lambda: list(train_population(sharing_zoo, models, small_digits)))
    assert len(ref) == len(models) * EPOCHS and len(pop) == EPOCHS  # one group: one [M, n] draw per epoch
    order = {(c.seed, c.init, c.dropout): [ref[i * EPOCHS + e] for e in range(EPOCHS)] for i, c in enumerate(models)}
    for i, c in enumerate(models):  # bitwise the same orders in both engines
        assert all(torch.equal(order[(c.seed, c.init, c.dropout)][e], pop[e][i]) for e in range(EPOCHS))

    def shared_epochs(a, b) -> list[int]:
        return [e + 1 for e in range(EPOCHS) if torch.equal(order[a][e], order[b][e])]

    assert shared_epochs((1, "uniform", 0.0), (1, "kaiming_uniform", 0.0)) == [1, 2, 3]  # same init class
    assert shared_epochs((1, "uniform", 0.0), (1, "normal", 0.0)) == []  # U vs N: apart from epoch 1
    assert shared_epochs((1, "uniform", 0.0), (1, "uniform", 0.5)) == [1]  # dropout 0 vs 0.5: apart from epoch 2
    assert shared_epochs((1, "uniform", 0.3), (1, "uniform", 0.5)) == [1, 2, 3]  # any p > 0 draws alike
    assert shared_epochs((1, "normal", 0.3), (1, "kaiming_uniform", 0.3)) == []
    assert shared_epochs((1, "uniform", 0.0), (2, "uniform", 0.0)) == []  # other seed
    # and every pair as the original's RNG streams
    streams = {m: original_streams("cnn", 1, 28, m[1], m[2], m[0]) for m in order}
    for a, b in itertools.combinations(order, 2):
        assert shared_epochs(a, b) == [e + 1 for e in range(EPOCHS) if torch.equal(streams[a][e], streams[b][e])]


def test_resnet_epoch0_train_metrics_use_the_train_augmentation():
    zoo = get_zoo("cifar10_resnet18_seed")
    gen = torch.Generator().manual_seed(0)
    imgs, labels = torch.randn(8, 3, 32, 32, generator=gen), torch.arange(8) % 10
    data = ImageData(replace(zoo.data, train_size=4), 10, Split(imgs[:4], labels[:4]), Split(imgs[4:6], labels[4:6]),
                     Split(imgs[6:], labels[6:]), "x")
    config = replace(zoo.models()[0], batch_size=2, epochs=1)
    first = next(train_reference(zoo, config, data, stop=0))
    model = build_model("resnet18", in_channels=3, activation="relu", init=config.init, seed=config.seed).eval()
    key = randomness.model_key(config.seed, config.init, config.dropout, 0)
    augmented = augment(imgs[:4], "crop_flip", data.pad_value, key, 0, torch.arange(4), TRAIN_STREAMS)
    assert not torch.equal(augmented, imgs[:4])
    with torch.no_grad():
        loss_aug = F.cross_entropy(model(augmented), labels[:4]).item()
        loss_plain = F.cross_entropy(model(imgs[:4]), labels[:4]).item()
    assert first.metrics["train_loss"][0] == pytest.approx(loss_aug, rel=1e-5)
    assert not math.isclose(loss_aug, loss_plain, rel_tol=1e-3)  # the un-augmented pass would be another value


def test_resnet_normalisation_is_the_originals_python_floats():
    cifar10 = get_zoo("cifar10_resnet18_seed").data
    assert cifar10.mean == tuple(v / 255 for v in (125.3, 123.0, 113.9))
    assert cifar10.std == tuple(v / 255 for v in (63.0, 62.1, 66.7))
    tiny = get_zoo("tinyimagenet_resnet18_seed").data
    assert tiny.mean == tuple(255 * v for v in (0.485, 0.456, 0.406))
    assert tiny.std == tuple(255 * v for v in (0.229, 0.224, 0.225))
    cifar100 = get_zoo("cifar100_resnet18_seed").data
    assert (cifar100.mean, cifar100.std) == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
