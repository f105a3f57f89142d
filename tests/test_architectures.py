"""Architectures: parameter counts, layouts, init schemes, seeding."""

import pytest
import torch

from modelzoos.architectures import ACTIVATIONS, BIAS_INIT, INITS, Layout, build_model


@pytest.mark.parametrize(("arch", "channels", "classes", "params", "size"), [
    ("cnn", 1, 10, 2464, 28), ("cnn", 3, 10, 2864, 28), ("cnn_m", 3, 10, 10853, 32),
    ("resnet18", 3, 10, 11_173_962, 32), ("resnet18", 3, 100, 11_220_132, 32), ("resnet18", 3, 200, 11_271_432, 64),
])
def test_parameter_counts_and_forward(arch, channels, classes, params, size):
    model = build_model(arch, in_channels=channels, num_classes=classes, activation="relu")
    assert sum(p.numel() for p in model.parameters()) == params
    layout = Layout.of(model)
    assert layout.num_parameters == params
    out = model.eval()(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)


def test_small_cnn_layout_matches_the_original_index_dict():
    layout = Layout.of(build_model("cnn", in_channels=1))
    starts = [layout[f"{n}.weight"].offset for n in ("conv1", "conv2", "conv3", "fc1", "fc2")]
    assert starts == [0, 208, 1414, 1514, 2254]  # the original index_dict.json of the small CNN
    assert [e.name for e in layout.entries][:4] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    medium = Layout.of(build_model("cnn_m", in_channels=3))
    assert [medium[f"{n}.weight"].offset for n in ("conv1", "conv2", "conv3", "fc1", "fc2")] == [
        0, 448, 5088, 9423, 10643]


def test_resnet_layout_has_bn_buffers_and_no_integer_buffers():
    layout = Layout.of(build_model("resnet18", in_channels=3, num_classes=10, activation="relu"))
    kinds = {e.kind for e in layout.entries}
    assert kinds == {"parameter", "buffer"}
    assert layout.size - layout.num_parameters == 9600
    assert not any("num_batches_tracked" in e.name for e in layout.entries)
    assert layout["conv1.weight"].shape == (64, 3, 3, 3)


def test_names_do_not_depend_on_dropout():
    a = Layout.of(build_model("cnn", in_channels=1, dropout=0.0))
    b = Layout.of(build_model("cnn", in_channels=1, dropout=0.5))
    assert a == b


@pytest.mark.parametrize("init", list(INITS))
def test_init_schemes_and_bias(init):
    model = build_model("cnn", in_channels=1, init=init, seed=3)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == BIAS_INIT)
    w = model.conv1.weight
    if init == "uniform":
        assert w.min() >= 0 and w.max() < 1
    elif init == "kaiming_uniform":
        bound = (6 / 25) ** 0.5
        assert w.abs().max() <= bound
    elif init == "normal":
        assert 0.5 < model.fc1.weight.std() < 1.5


def test_seed_fixes_init_regardless_of_activation_and_dropout():
    a = build_model("cnn", in_channels=1, activation="tanh", init="normal", seed=7)
    b = build_model("cnn", in_channels=1, activation="gelu", dropout=0.5, init="normal", seed=7)
    c = build_model("cnn", in_channels=1, activation="tanh", init="normal", seed=8)
    la = Layout.of(a)
    assert torch.equal(la.flatten(a.state_dict()), la.flatten(b.state_dict()))
    assert not torch.equal(la.flatten(a.state_dict()), la.flatten(c.state_dict()))


def test_flatten_unflatten_round_trip():
    model = build_model("cnn_m", in_channels=3, seed=1, init="kaiming_normal")
    layout = Layout.of(model)
    flat = layout.flatten(model.state_dict())
    assert flat.shape == (10853,)
    fresh = layout.load_into(build_model("cnn_m", in_channels=3), flat)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model.eval()(x), fresh.eval()(x))
    assert Layout.from_json(layout.to_json()) == layout


def test_bad_names_raise():
    with pytest.raises(ValueError, match="activation 'swish'"):
        build_model("cnn", in_channels=1, activation="swish")
    with pytest.raises(ValueError, match="architecture"):
        build_model("vgg", in_channels=1)
    assert set(ACTIVATIONS) == {"tanh", "sigmoid", "relu", "gelu"}


@pytest.mark.parametrize(("arch", "channels", "classes"), [
    ("cnn", 1, 10), ("cnn", 3, 10), ("cnn_m", 3, 10), ("resnet18", 3, 10), ("resnet18", 3, 100),
    ("resnet18", 3, 200), ("resnet18", 1, 10),
])
def test_layouts_from_shapes_equal_the_built_networks(arch, channels, classes):
    """``layout.LAYOUTS`` (torch-free, what the catalogue and the formats use) is the built network's layout."""
    from modelzoos.layout import LAYOUTS

    model = build_model(arch, in_channels=channels, num_classes=classes, activation="relu")
    assert LAYOUTS[arch](channels, classes) == Layout.of(model)
