"""Weight-space augmentations: function-preserving permutations, noise, erasing, tokens, windows, workers."""

import pickle

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from modelzoos.architectures import Layout, build_model
from modelzoos.transforms import (
    Augment,
    Compose,
    GaussianNoise,
    Permutation,
    PermutationSpec,
    RandomErasing,
    RandomWindow,
    Tokens,
    chunk_tokens,
    permutation_index,
    tokens_per_neuron,
)

INPUT_SIZE = {"cnn": 28, "cnn_m": 32, "resnet18": 32}
OUTPUT_LAYER = {"cnn": "fc2", "cnn_m": "fc2", "resnet18": "fc"}


def _model(arch, channels=3, activation="relu", dropout=0.0, seed=1):
    model = build_model(arch, in_channels=channels, activation=activation, dropout=dropout, seed=seed)
    with torch.no_grad():  # non-trivial batch norm parameters and running statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = _model("resnet18")
    layout = Layout.of(model)
    return model, layout, layout.flatten(model.state_dict()).numpy()


@pytest.fixture(scope="module")
def cnn_layout():
    return Layout.of(build_model("cnn", in_channels=1))


def _flat_cnn(n=4, seed=0):
    layout = Layout.of(build_model("cnn", in_channels=1))
    return layout, np.random.default_rng(seed).standard_normal((n, layout.size)).astype(np.float32)


def _assert_same_function(arch, channels, activation, dropout, model, layout, permuted_vectors):
    """Rebuild the network from each permuted flat vector; its outputs must equal the original's."""
    x = torch.randn(2, channels, INPUT_SIZE[arch], INPUT_SIZE[arch], generator=torch.Generator().manual_seed(0))
    rebuilt = build_model(arch, in_channels=channels, activation=activation, dropout=dropout).eval()
    with torch.no_grad():
        expected = model(x)
        for permuted in permuted_vectors:
            layout.load_into(rebuilt, torch.from_numpy(np.ascontiguousarray(permuted)))
            assert (rebuilt(x) - expected).abs().max().item() <= 1e-5


def _assert_output_layer_not_permuted(layout, arch, flat, permuted):
    head = layout.unflatten(torch.from_numpy(flat))
    moved = layout.unflatten(torch.from_numpy(np.ascontiguousarray(permuted)))
    name = OUTPUT_LAYER[arch]
    assert torch.equal(moved[f"{name}.bias"], head[f"{name}.bias"])
    # rows stay in order (only their inputs move): each row holds the same multiset of weights
    assert torch.equal(moved[f"{name}.weight"].sort(dim=1).values, head[f"{name}.weight"].sort(dim=1).values)


# ---------------------------------------------------------------------------------------------------------
# Permutations
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "channels", "activation", "dropout"), [
    ("cnn", 1, "tanh", 0.0), ("cnn", 3, "relu", 0.5), ("cnn", 1, "relu", 0.3), ("cnn_m", 3, "tanh", 0.2),
    ("cnn_m", 3, "relu", 0.0),
])
def test_cnn_permutations_preserve_the_function(arch, channels, activation, dropout):
    model = _model(arch, channels, activation, dropout)
    layout = Layout.of(model)
    flat = layout.flatten(model.state_dict()).numpy()
    spec = PermutationSpec.of(layout, arch)
    batch = Permutation(spec, n_precomputed=16, seed=3)(np.tile(flat, (4, 1)), np.random.default_rng(0))
    _assert_same_function(arch, channels, activation, dropout, model, layout, batch)
    for permuted in batch:
        _assert_output_layer_not_permuted(layout, arch, flat, permuted)
        assert (permuted != flat).mean() > 0.5
    for group in spec.groups:  # every group's weights moved in some sample
        entry = group.members[0].entry
        part = slice(entry.offset, entry.offset + entry.numel)
        assert any(not np.array_equal(p[part], flat[part]) for p in batch), group.name


def test_resnet_permutation_preserves_the_function(resnet, one_thread):
    model, layout, flat = resnet
    spec = PermutationSpec.of(layout, "resnet18")
    permuted_vectors = (flat[permutation_index(spec, np.random.default_rng(0))],
                        Permutation(spec, n_precomputed=1, seed=1)(flat, np.random.default_rng(0)),
                        Permutation(spec, n_precomputed=None)(flat, np.random.default_rng(0)))  # axis by axis
    assert np.array_equal(permuted_vectors[0], permuted_vectors[2])  # same draws, same permutation
    _assert_same_function("resnet18", 3, "relu", 0.0, model, layout, permuted_vectors)
    for permuted in permuted_vectors:
        _assert_output_layer_not_permuted(layout, "resnet18", flat, permuted)
        assert (permuted != flat).mean() > 0.9


def test_cnn_spec_groups_and_flatten_blocks():
    for arch, channels, sizes, block in [("cnn", 1, [8, 6, 4, 20], 9), ("cnn", 3, [8, 6, 4, 20], 9),
                                         ("cnn_m", 3, [16, 32, 15, 20], 4)]:
        spec = PermutationSpec.of(Layout.of(build_model(arch, in_channels=channels)), arch)
        assert [g.name for g in spec.groups] == ["conv1", "conv2", "conv3", "fc1"]
        assert [g.size for g in spec.groups] == sizes
        fc1_input = [m for m in spec.groups[2].members if m.entry.name == "fc1.weight"]
        assert [(m.axis, m.block) for m in fc1_input] == [(1, block)]  # conv → flatten → fc rule


def test_resnet_spec_ties_residual_channels_and_batch_norm(resnet):
    _, layout, _ = resnet
    spec = PermutationSpec.of(layout, "resnet18")
    assert len(spec.groups) == 12
    groups = {g.name: g for g in spec.groups}
    stem = groups["conv1+layer1.0.conv2+layer1.1.conv2"]
    names = {(m.entry.name, m.axis) for m in stem.members}
    assert {("bn1.running_var", 0), ("layer1.1.bn2.weight", 0), ("layer2.0.downsample.0.weight", 1)} <= names
    last = groups["layer4.0.conv2+layer4.0.downsample.0+layer4.1.conv2"]
    assert ("fc.weight", 1) in {(m.entry.name, m.axis) for m in last.members}
    inner = groups["layer3.1.conv1"]
    assert inner.size == 256
    assert {m.entry.name for m in inner.members} == {
        "layer3.1.conv1.weight", "layer3.1.bn1.weight", "layer3.1.bn1.bias", "layer3.1.bn1.running_mean",
        "layer3.1.bn1.running_var", "layer3.1.conv2.weight"}
    every = [(m.entry.name, m.axis) for g in spec.groups for m in g.members]
    assert len(every) == len(set(every))  # each axis belongs to one group
    assert ("conv1.weight", 1) not in every and ("fc.weight", 0) not in every and ("fc.bias", 0) not in every


def test_spec_rejects_unknown_or_mismatched_architectures(cnn_layout, resnet):
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        PermutationSpec.of(cnn_layout, "vgg")
    with pytest.raises(ValueError, match="lacks residual blocks"):
        PermutationSpec.of(cnn_layout, "resnet18")
    with pytest.raises(ValueError, match="has residual blocks"):
        PermutationSpec.of(resnet[1], "cnn")


def test_permutation_table_is_a_seeded_set_of_bijections(cnn_layout, resnet):
    spec = PermutationSpec.of(cnn_layout, "cnn")
    a, b = Permutation(spec, n_precomputed=50, seed=7), Permutation(spec, n_precomputed=50, seed=7)
    assert a.indices.shape == (50, cnn_layout.size) and a.indices.dtype == np.int32
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, Permutation(spec, n_precomputed=50, seed=8).indices)
    assert (np.sort(a.indices, axis=1) == np.arange(cnn_layout.size)).all()
    assert len({row.tobytes() for row in a.indices}) == 50
    with pytest.raises(ValueError, match="n_precomputed=None"):
        Permutation(PermutationSpec.of(resnet[1], "resnet18"), n_precomputed=100)


def test_permutation_on_the_fly_and_torch_match_numpy(cnn_layout):
    spec = PermutationSpec.of(cnn_layout, "cnn")
    _, x = _flat_cnn(6)
    axis_by_axis = Permutation(spec, n_precomputed=None)
    axis_by_axis.axis_by_axis_above = 0  # the path long vectors take
    fly = Permutation(spec, n_precomputed=None)
    assert np.array_equal(fly(x, np.random.default_rng(1)), axis_by_axis(x, np.random.default_rng(1)))
    assert np.array_equal(fly(x, np.random.default_rng(1)), np.take_along_axis(
        x, permutation_index(spec, np.random.default_rng(1), count=6), 1))
    for transform in (Permutation(spec, n_precomputed=20, seed=0), fly, axis_by_axis):
        out = transform(x, np.random.default_rng(1))
        out_t = transform(torch.from_numpy(x), np.random.default_rng(1))
        assert np.array_equal(out, out_t.numpy())
        assert transform(x[0], np.random.default_rng(1)).shape == (cnn_layout.size,)
        assert not np.array_equal(out[0], out[1])  # a permutation per sample
    with pytest.raises(ValueError, match="length 5"):
        Permutation(spec, n_precomputed=2)(np.zeros(5, np.float32), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------
# Noise and erasing
# ---------------------------------------------------------------------------------------------------------


def test_additive_and_multiplicative_noise_statistics():
    _, x = _flat_cnn(64)
    before = x.copy()
    diff = GaussianNoise(0.05)(x, np.random.default_rng(0)) - x
    assert abs(diff.mean()) < 1e-3 and abs(diff.std() / 0.05 - 1) < 0.02
    positive = np.abs(x) + 0.5
    ratio = GaussianNoise(0.1, multiplicative=True)(positive, np.random.default_rng(0)) / positive - 1
    assert abs(ratio.mean()) < 2e-3 and abs(ratio.std() / 0.1 - 1) < 0.02
    assert np.array_equal(x, before)  # inputs are never modified
    assert np.array_equal(GaussianNoise(0.0)(x, np.random.default_rng(0)), x)
    out_t = GaussianNoise(0.05)(torch.from_numpy(x), np.random.default_rng(0))
    assert np.allclose(out_t.numpy(), x + diff, atol=1e-7)


def test_block_erasing_length_and_placement():
    _, x = _flat_cnn(300)
    size = x.shape[1]
    out = RandomErasing(p=1.0, value=np.nan)(x, np.random.default_rng(0))
    lengths = []
    for row in out:
        erased = np.flatnonzero(np.isnan(row))
        assert len(erased) > 0
        assert erased[-1] - erased[0] + 1 == len(erased)  # one contiguous block
        assert int(size * 0.02) <= len(erased) <= int(size * 0.33)
        assert erased[-1] + 1 < size  # start + n < D
        lengths.append(len(erased))
    assert np.mean(lengths) == pytest.approx(size * (0.02 + 0.33) / 2, rel=0.1)
    assert not np.isnan(x).any()
    random_fill = RandomErasing(p=1.0, value="random")(x, np.random.default_rng(0))
    assert np.isfinite(random_fill).all() and not np.array_equal(random_fill, x)


def test_block_erasing_gives_up_after_ten_attempts_and_p_zero_is_a_no_op():
    _, x = _flat_cnn(20)
    assert np.array_equal(RandomErasing(p=1.0, scale=(1.0, 1.0))(x, np.random.default_rng(0)), x)
    assert np.array_equal(RandomErasing(p=0.0)(x, np.random.default_rng(0)), x)
    applied = np.isnan(RandomErasing(p=0.5, value=np.nan)(np.tile(x, (10, 1)), np.random.default_rng(0))).any(1)
    assert 0.35 < applied.mean() < 0.65


def test_scatter_erasing_draws_floor_d_s_indices_with_replacement():
    _, x = _flat_cnn(1)
    size = x.shape[1]
    out = RandomErasing(p=1.0, value=np.nan, mode="scatter")(x[0], np.random.default_rng(5))
    mirror = np.random.default_rng(5)  # the same draws, in the documented order
    mirror.random()
    n = int(size * mirror.uniform(0.02, 0.33))
    indices = mirror.integers(0, size, size=n)
    assert set(np.flatnonzero(np.isnan(out))) == set(indices.tolist())
    assert len(set(indices.tolist())) < n  # with replacement: some indices repeat
    out_t = RandomErasing(p=1.0, value=np.nan, mode="scatter")(torch.from_numpy(x[0]), np.random.default_rng(5))
    assert np.array_equal(np.isnan(out_t.numpy()), np.isnan(out))


def test_erasing_rejects_bad_arguments():
    for kwargs in ({"p": 1.5}, {"scale": (0.5, 0.2)}, {"value": "noise"}, {"mode": "rows"}):
        with pytest.raises(ValueError):
            RandomErasing(**kwargs)
    with pytest.raises(TypeError, match="before tokenising"):
        GaussianNoise(0.1)(Tokens(np.zeros((2, 2)), np.ones((2, 2), bool), np.zeros((2, 3))), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------
# Tokens and windows
# ---------------------------------------------------------------------------------------------------------


def test_tokens_per_neuron_cnn_contents_and_positions(cnn_layout):
    tokenizer = tokens_per_neuron(cnn_layout)
    rows = [8, 6, 4, 20, 10]
    assert (tokenizer.num_tokens, tokenizer.token_size) == (48, 201)
    assert np.array_equal(tokenizer.positions[:, 0], np.arange(48))
    assert np.array_equal(tokenizer.positions[:, 1], np.repeat(np.arange(5), rows))
    assert np.array_equal(tokenizer.positions[:, 2], np.concatenate([np.arange(n) for n in rows]))
    assert np.array_equal(tokenizer.mask.sum(1), np.repeat([26, 201, 25, 37, 21], rows))
    _, x = _flat_cnn(3)
    tokens = tokenizer.tokenize(x)
    state = cnn_layout.unflatten(torch.from_numpy(x[1]))
    expected = torch.cat([state["conv2.weight"][4].flatten(), state["conv2.bias"][4:5]]).numpy()
    assert np.array_equal(tokens.values[1, 8 + 4], expected)  # conv2, row 4: incoming weights + bias
    assert (tokens.values[~tokens.mask] == 0).all()
    assert np.array_equal(tokenizer.detokenize(tokens), x)
    assert np.array_equal(tokenizer.detokenize(tokens.values), x)
    assert np.array_equal(tokenizer.detokenize(tokenizer.tokenize(x[0])), x[0])


def test_chunk_tokens_cnn_follow_sane(cnn_layout):
    tokenizer = chunk_tokens(cnn_layout, 64)
    chunks = [1, 4, 1, 1, 1]  # row lengths 26, 201, 25, 37, 21
    rows = [8, 6, 4, 20, 10]
    assert (tokenizer.num_tokens, tokenizer.token_size) == (66, 64)
    assert np.array_equal(tokenizer.positions[:, 1], np.repeat(np.arange(5), np.multiply(rows, chunks)))
    conv2 = tokenizer.positions[tokenizer.positions[:, 1] == 1]
    assert np.array_equal(conv2[:, 2], np.repeat(np.arange(6), 4))  # chunks of one row share its index
    assert tokenizer.mask[8:12].sum() == 201 and tokenizer.mask[11].sum() == 201 - 3 * 64
    _, x = _flat_cnn(3)
    assert np.array_equal(tokenizer.detokenize(tokenizer.tokenize(x)), x)
    with pytest.raises(ValueError, match="token_size"):
        chunk_tokens(cnn_layout, 0)


def test_resnet_tokenisation_round_trips_exactly(resnet):
    _, layout, flat = resnet
    per_neuron = tokens_per_neuron(layout)
    assert (per_neuron.num_tokens, per_neuron.token_size) == (4810, 512 * 9 + 4)  # conv row + 4 BN values
    assert np.array_equal(per_neuron.detokenize(per_neuron.tokenize(flat)), flat)
    sane = chunk_tokens(layout, 288)
    assert sane.positions[:, 1].max() + 1 == 81  # 20 convs, 20 BN × (affine, mean, var), fc
    assert per_neuron.covered.all() and sane.covered.all()
    assert np.array_equal(sane.detokenize(sane.tokenize(flat)), flat)
    no_bn = chunk_tokens(layout, 288, ignore_bn=True)
    assert no_bn.positions[:, 1].max() + 1 == 21
    assert layout.size - no_bn.covered.sum() == 4800 * 4  # weight, bias, running mean, running var
    assert np.array_equal(no_bn.detokenize(no_bn.tokenize(flat), base=flat), flat)
    back = no_bn.detokenize(no_bn.tokenize(flat))
    assert np.array_equal(back[no_bn.covered], flat[no_bn.covered]) and (back[~no_bn.covered] == 0).all()


def test_tokenize_torch_matches_numpy(cnn_layout):
    tokenizer = chunk_tokens(cnn_layout, 64)
    _, x = _flat_cnn(3)
    tokens, tokens_t = tokenizer.tokenize(x), tokenizer.tokenize(torch.from_numpy(x))
    assert np.array_equal(tokens.values, tokens_t.values.numpy())
    assert np.array_equal(tokens.positions, tokens_t.positions.numpy())
    assert torch.equal(tokenizer.detokenize(tokens_t), torch.from_numpy(x))


def test_random_window_shapes_bounds_and_contents(cnn_layout):
    tokenizer = chunk_tokens(cnn_layout, 64)
    _, x = _flat_cnn(32)
    tokens = tokenizer.tokenize(x)
    window = RandomWindow(12)(tokens, np.random.default_rng(0))
    assert window.values.shape == (32, 12, 64) and window.mask.shape == (32, 12, 64)
    assert window.positions.shape == (32, 12, 3)
    starts = window.positions[:, 0, 0]
    assert (starts >= 0).all() and (starts <= 66 - 12).all() and len(set(starts.tolist())) > 5
    assert np.array_equal(window.positions[..., 0], starts[:, None] + np.arange(12))
    for row, start in enumerate(starts):
        assert np.array_equal(window.values[row], tokens.values[row, start : start + 12])
        assert np.array_equal(window.mask[row], tokenizer.mask[start : start + 12])
    restored = tokenizer.detokenize(window)  # a window restores its part of the vector
    for row, start in enumerate(starts[:4]):
        part = np.unique(tokenizer.index[start : start + 12][tokenizer.mask[start : start + 12]])
        assert np.array_equal(restored[row, part], x[row, part])
        assert np.count_nonzero(restored[row]) == np.count_nonzero(x[row, part])
    whole = RandomWindow(66)(tokens, np.random.default_rng(0))
    assert np.array_equal(whole.values, tokens.values)
    single = RandomWindow(5)(tokenizer.tokenize(x[0]), np.random.default_rng(0))
    assert single.values.shape == (5, 64) and single.positions.shape == (5, 3)
    window_t = RandomWindow(12)(tokenizer.tokenize(torch.from_numpy(x)), np.random.default_rng(0))
    assert np.array_equal(window_t.values.numpy(), window.values)
    assert np.array_equal(window_t.positions.numpy(), window.positions)
    with pytest.raises(ValueError, match="longer than the sequence"):
        RandomWindow(67)(tokens, np.random.default_rng(0))
    with pytest.raises(TypeError, match="tokenise first"):
        RandomWindow(3)(x, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------
# Composition, determinism, workers, Hugging Face adapters
# ---------------------------------------------------------------------------------------------------------


def _pipeline(layout):
    return Compose([Permutation(PermutationSpec.of(layout, "cnn"), n_precomputed=20, seed=0),
                    GaussianNoise(0.1, multiplicative=True), RandomErasing(), chunk_tokens(layout, 64),
                    RandomWindow(12)])


def test_composition_is_sequential_and_seeded(cnn_layout):
    pipeline = _pipeline(cnn_layout)
    _, x = _flat_cnn(8)
    out = pipeline(x, np.random.default_rng(3))
    assert isinstance(out, Tokens) and out.values.shape == (8, 12, 64)
    rng, step = np.random.default_rng(3), x
    for transform in pipeline.transforms:
        step = transform(step, rng)
    assert np.array_equal(step.values, out.values) and np.array_equal(step.positions, out.positions)
    assert np.array_equal(pipeline(x, np.random.default_rng(3)).values, out.values)
    assert not np.array_equal(pipeline(x, np.random.default_rng(4)).values, out.values)


class _Repeated(Dataset):
    """The same weight vector n times, augmented in ``__getitem__``."""

    def __init__(self, vector, n, augment):
        self.vector, self.n, self.augment = vector, n, augment

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.augment(self.vector)


def _run(loader, seed):
    torch.manual_seed(seed)
    return [batch.numpy() if isinstance(batch, torch.Tensor) else batch["weights"].numpy() for batch in loader]


def test_dataloader_workers_are_independent_and_the_run_is_reproducible(cnn_layout):
    _, x = _flat_cnn(1)
    augment = Augment(Compose([Permutation(PermutationSpec.of(cnn_layout, "cnn"), n_precomputed=100, seed=0),
                               GaussianNoise(0.1)]))
    loader = DataLoader(_Repeated(x[0], 8, augment), batch_size=2, num_workers=2, multiprocessing_context="fork")
    first, again, other = _run(loader, 11), _run(loader, 11), _run(loader, 12)
    assert len(first) == 4
    assert not np.array_equal(first[0], first[1])  # batch 0 from worker 0, batch 1 from worker 1
    assert not np.array_equal(first[0][0], first[0][1])
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    # the same through collate_fn on dict samples: one augmentation per batch call
    samples = [{"weights": x[0], "model_id": i} for i in range(8)]
    collated = DataLoader(samples, batch_size=4, num_workers=2, collate_fn=augment.collate,
                          multiprocessing_context="fork")
    batches = _run(collated, 11)
    assert [b.shape for b in batches] == [(4, cnn_layout.size)] * 2 and not np.array_equal(*batches)
    assert all(np.array_equal(a, b) for a, b in zip(batches, _run(collated, 11), strict=True))


def test_augment_in_the_main_process_follows_the_torch_seed():
    _, x = _flat_cnn(2)
    augment = Augment(GaussianNoise(0.1), seed=3)
    torch.manual_seed(1)
    a, b = augment(x), augment(x)
    assert not np.array_equal(a, b)  # every call draws anew from the torch RNG
    torch.manual_seed(1)
    assert np.array_equal(augment(x), a) and np.array_equal(augment(x), b)
    torch.manual_seed(2)
    assert not np.array_equal(augment(x), a)
    torch.manual_seed(1)
    assert not np.array_equal(Augment(GaussianNoise(0.1), seed=4)(x), a)
    torch.manual_seed(1)
    clone = pickle.loads(pickle.dumps(augment))  # no state: a copy draws exactly as the original
    assert np.array_equal(clone(x), a)


def test_hugging_face_adapters(cnn_layout):
    _, x = _flat_cnn(6)
    ds = datasets.Dataset.from_dict({"weights": list(x), "model_id": list(range(6))})
    augment = Augment(GaussianNoise(0.1))
    # set_transform-style: a batch dict of Python lists
    batch = ds.with_transform(augment)[:3]
    assert batch["weights"].shape == (3, cnn_layout.size) and batch["model_id"] == [0, 1, 2]
    assert np.abs(batch["weights"] - x[:3]).max() > 0.01
    # IterableDataset.map(fn, batched=True)
    rows = list(ds.to_iterable_dataset().map(augment, batched=True, batch_size=4))
    assert [r["model_id"] for r in rows] == list(range(6))
    assert np.asarray(rows[5]["weights"]).shape == (cnn_layout.size,)
    assert not np.allclose(np.asarray(rows[5]["weights"]), x[5])
    # numpy format + collate_fn: one augmentation per batch, torch tensors out
    loader = DataLoader(ds.with_format("numpy"), batch_size=4, collate_fn=augment.collate)
    first = next(iter(loader))
    assert first["weights"].shape == (4, cnn_layout.size) and first["weights"].dtype == torch.float32
    assert torch.equal(first["model_id"], torch.arange(4))
    # tokens become three columns
    tokens = Augment(Compose([chunk_tokens(cnn_layout, 64), RandomWindow(8)]))(ds.with_format("numpy")[:2])
    assert tokens["weights"].shape == (2, 8, 64) and tokens["mask"].shape == (2, 8, 64)
    assert tokens["positions"].shape == (2, 8, 3)
    with pytest.raises(KeyError, match="no column 'params'"):
        Augment(GaussianNoise(0.1), column="params")({"weights": x})
