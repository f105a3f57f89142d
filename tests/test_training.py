"""Reference training: protocol details, determinism and resume."""

import math

import torch

from modelzoos import randomness
from modelzoos.architectures import build_model, set_dropout_key
from modelzoos.catalogue import get_zoo
from modelzoos.training import METRICS, augment, make_optimizer, train_reference


def _run(zoo, config, data, **kw):
    return list(train_reference(zoo, config, data, **kw))


def test_epoch_zero_is_the_untrained_model_with_real_metrics(digits_zoo, digits_data):
    config = digits_zoo.models()[0]
    first = next(train_reference(digits_zoo, config, digits_data, stop=1))
    model = build_model("cnn", in_channels=1, activation=config.activation, init=config.init, seed=config.seed)
    assert torch.equal(first.weights[0], digits_zoo.layout.flatten(model.state_dict()))
    assert set(first.metrics) == set(METRICS)
    assert all(0 <= first.metrics[k][0] <= 1 for k in ("train_acc", "val_acc", "test_acc"))
    assert all(math.isfinite(v[0]) and v[0] > 0 for k, v in first.metrics.items() if k.endswith("loss"))


def test_training_is_bitwise_deterministic_and_learns(tiny_spec, digits_data):
    zoo = get_zoo(tiny_spec)
    config = zoo.models()[1]  # dropout 0.5: masks are part of the determinism
    assert config.dropout == 0.5
    a = _run(zoo, config, digits_data)
    b = _run(zoo, config, digits_data)
    assert len(a) == zoo.epochs + 1
    for ra, rb in zip(a, b, strict=True):
        assert torch.equal(ra.weights, rb.weights)
        assert ra.metrics == rb.metrics
    assert not torch.equal(a[0].weights, a[-1].weights)
    learned = _run(zoo, zoo.models()[0], digits_data)  # dropout 0: kaiming/relu/adam learns digits in 3 epochs
    assert learned[-1].metrics["test_acc"][0] > 0.7


def test_resume_from_a_saved_state_is_bitwise_identical(tiny_spec, digits_data):
    zoo = get_zoo(tiny_spec)
    config = zoo.models()[1]
    full = _run(zoo, config, digits_data)
    resumed = _run(zoo, config, digits_data, resume=(1, full[1].state))
    assert [r.epoch for r in resumed] == [2, 3]
    for ra, rb in zip(full[2:], resumed, strict=True):
        assert torch.equal(ra.weights, rb.weights)
        assert ra.metrics == rb.metrics


def test_seed_fixes_data_order_and_dropout_masks():
    a = randomness.permutation(5, randomness.DATA_ORDER, 1, 100)
    assert torch.equal(a, randomness.permutation(5, randomness.DATA_ORDER, 1, 100))
    assert not torch.equal(a, randomness.permutation(5, randomness.DATA_ORDER, 2, 100))
    assert not torch.equal(a, randomness.permutation(6, randomness.DATA_ORDER, 1, 100))
    assert torch.equal(a.sort().values, torch.arange(100))
    model = build_model("cnn", in_channels=1, dropout=0.5, seed=1, init="normal").train()
    x = torch.randn(4, 1, 28, 28)
    set_dropout_key(model, 1, 0)
    y0 = model(x)
    set_dropout_key(model, 1, 0)
    assert torch.equal(y0, model(x))
    set_dropout_key(model, 1, 1)
    assert not torch.equal(y0, model(x))


def test_adam_is_coupled_l2_and_sgd_has_momentum(digits_zoo):
    config = digits_zoo.models()[0]
    model = build_model("cnn", in_channels=1)
    opt, sched = make_optimizer(model, config, 100)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW) and sched is None
    resnet = get_zoo("cifar10_resnet18_seed")
    opt, sched = make_optimizer(model, resnet.models()[0], 40_000)
    assert isinstance(opt, torch.optim.SGD) and isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    assert sched.total_steps == 50 * 157  # stepped per batch
    assert math.isclose(opt.param_groups[0]["lr"], 0.05 / 25)
    assert math.isclose(opt.param_groups[0]["momentum"], 0.95)


def test_augmentations_are_seeded_and_shape_preserving():
    images = torch.randn(6, 3, 32, 32)
    pad = torch.tensor([-1.0, -2.0, -3.0])
    ids = torch.arange(6)
    a = augment(images, "crop_flip", pad, 1, 1, ids)
    assert a.shape == images.shape
    assert torch.equal(a, augment(images, "crop_flip", pad, 1, 1, ids))
    assert not torch.equal(a, augment(images, "crop_flip", pad, 1, 2, ids))
    # every output pixel is either an input pixel or the black fill of its channel
    for c in range(3):
        vals = set(a[:, c].flatten().tolist())
        assert vals <= set(images[:, c].flatten().tolist()) | {pad[c].item()}
    r = augment(torch.randn(4, 3, 64, 64), "flip_rotate", pad, 1, 1, torch.arange(4))
    assert r.shape == (4, 3, 64, 64)
    assert augment(images, "none", pad, 1, 1, ids) is images


def test_resnet_trains_one_step_on_tiny_data(digits_data):
    from dataclasses import replace

    from modelzoos.data import ImageData, Split

    zoo = get_zoo("cifar10_resnet18_seed")
    imgs = torch.randn(6, 3, 32, 32)
    labels = torch.arange(6) % 10
    data = ImageData(replace(zoo.data, train_size=4), 10, Split(imgs[:4], labels[:4]), Split(imgs[4:], labels[4:]),
                     Split(imgs[4:], labels[4:]), "x")
    config = replace(zoo.models()[0], batch_size=2, epochs=1)
    results = list(train_reference(zoo, config, data))
    assert [r.epoch for r in results] == [0, 1]
    assert results[1].weights.shape == (1, zoo.layout.size)
    assert not torch.equal(results[0].weights, results[1].weights)


def _tiny_resnet_run(stop: int = 1) -> list:
    from dataclasses import replace

    from modelzoos.data import ImageData, Split

    zoo = get_zoo("cifar10_resnet18_seed")
    gen = torch.Generator().manual_seed(0)
    imgs, labels = torch.randn(8, 3, 32, 32, generator=gen), torch.arange(8) % 10
    data = ImageData(replace(zoo.data, train_size=4), 10, Split(imgs[:4], labels[:4]), Split(imgs[4:6], labels[4:6]),
                     Split(imgs[6:], labels[6:]), "x")
    return list(train_reference(zoo, replace(zoo.models()[0], batch_size=2, epochs=stop), data, stop=stop))


def test_resnet_channels_last_changes_rounding_only(monkeypatch):
    fast = _tiny_resnet_run()  # default: channels-last for ONE_BY_ONE architectures
    monkeypatch.setenv("MODELZOOS_CHANNELS_LAST", "0")
    plain = _tiny_resnet_run()
    assert torch.equal(fast[0].weights, plain[0].weights)
    # the one step's update differs by rounding only: BatchNorm over two samples amplifies the rounding
    # of the other memory layout (about 6e-4 of the update's norm on x86 oneDNN), a wrong layout would
    # change the update itself
    update = plain[1].weights - plain[0].weights
    assert (fast[1].weights - plain[1].weights).norm() <= 1e-2 * update.norm()
    assert fast[1].metrics["test_acc"] == plain[1].metrics["test_acc"]


def test_compile_switch_compiles_resnet_training_only(monkeypatch, digits_data):
    compiled = []

    def spy(model):  # stands in for torch.compile: records what would be compiled, runs it eagerly
        compiled.append((type(model).__name__, model.conv1.weight.is_contiguous(memory_format=torch.channels_last)))
        return model

    monkeypatch.setattr(torch, "compile", spy)
    monkeypatch.setenv("MODELZOOS_COMPILE", "1")
    _tiny_resnet_run()
    zoo = get_zoo("digits_cnn_seed")
    list(train_reference(zoo, zoo.models()[0], digits_data, stop=0))  # small CNN: the eager one-by-one baseline
    assert compiled == [("ResNet", True)]
