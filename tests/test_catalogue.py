"""The catalogue: totals, grids, seeds, name lookup and spec validation."""

import dataclasses
import itertools
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from modelzoos import catalogue
from modelzoos.catalogue import SpecError, get_zoo, list_zoos, totals
from modelzoos.data import load_image_data

PUBLISHED = list_zoos(published=True)


def test_published_totals_match_the_paper():
    t = totals(PUBLISHED)
    assert t["zoos"] == 27
    assert t["models"] == 50_360
    assert t["states"] == 2_585_360
    assert t["states_with_twins"] == 3_844_360
    # ResNet-18 epoch 0 is stored but not counted: 3 × 1,000 extra stored states
    assert t["stored_states"] == 2_585_360 + 3_000


@pytest.mark.parametrize(("name", "models"), [
    ("mnist_cnn_seed", 1000), ("mnist_cnn_hyp_rand", 2560), ("svhn_cnn_hyp_fix", 4320), ("usps_cnn_hyp_rand", 2560),
    ("cifar10_cnn_hyp_fix", 1280), ("cifar10_cnn_m_hyp_rand", 1280), ("stl10_cnn_m_hyp_fix", 2560),
    ("cifar100_resnet18_seed", 1000), ("digits_cnn_hyp_fix", 2560),
])
def test_model_counts(name, models):
    zoo = get_zoo(name)
    assert zoo.num_models == models == len(zoo.models())


@pytest.mark.parametrize(("name", "params"), [
    ("mnist_cnn_seed", 2464), ("cifar10_cnn_seed", 2864), ("stl10_cnn_seed", 2864), ("svhn_cnn_seed", 2464),
    ("cifar10_cnn_m_seed", 10853), ("cifar10_resnet18_seed", 11_173_962), ("cifar100_resnet18_seed", 11_220_132),
    ("tinyimagenet_resnet18_seed", 11_271_432),
])
def test_parameter_counts(name, params):
    assert get_zoo(name).parameters == params


def test_names_follow_the_grammar_and_every_zoo_is_listed():
    names = catalogue.zoo_names()
    assert len(names) == 30
    assert {"digits_cnn_seed", "digits_cnn_hyp_rand", "digits_cnn_hyp_fix"} <= set(names)
    for z in PUBLISHED:
        assert z.name == f"{z.dataset}_{z.architecture}_{z.config}"


def test_seed_zoo_enumeration():
    models = get_zoo("mnist_cnn_seed").models()
    assert [m.seed for m in models] == list(range(1, 1001))
    m = models[0]
    assert (m.init, m.activation, m.optimizer, m.lr, m.weight_decay, m.dropout, m.batch_size, m.epochs) == (
        "uniform", "tanh", "adam", 3e-4, 0.0, 0.0, 10, 50)


def test_hyp_fix_grid_is_the_full_product_times_seeds_1_to_10():
    models = get_zoo("svhn_cnn_hyp_fix").models()
    combos = {(m.init, m.activation, m.optimizer, m.lr, m.weight_decay, m.dropout) for m in models}
    assert len(combos) == 4 * 4 * 1 * 3 * 3 * 3
    assert {m.seed for m in models} == set(range(1, 11))
    assert {m.optimizer for m in models} == {"sgd"}  # the generator's grid, not the poster's


def test_hyp_rand_seeds_are_per_model_and_reproducible():
    a = get_zoo("mnist_cnn_hyp_rand").models()
    catalogue._get_named.cache_clear()
    b = get_zoo("mnist_cnn_hyp_rand").models()
    assert a == b
    seeds = [m.seed for m in a]
    assert all(0 <= s < 1_000_000 for s in seeds)
    assert len(set(seeds)) > 2400  # every model draws its own seed (a few collide by chance)
    fix = get_zoo("mnist_cnn_hyp_fix").models()
    assert [(m.init, m.lr, m.dropout) for m in a] == [(m.init, m.lr, m.dropout) for m in fix]


def test_resnet_protocol():
    z = get_zoo("cifar10_resnet18_seed")
    m = z.models()[0]
    assert (m.optimizer, m.lr, m.weight_decay, m.batch_size, m.epochs, m.schedule) == (
        "sgd", 0.05, 5e-4, 256, 50, "onecycle")
    assert z.states == 50_000 and z.stored_states == 51_000
    assert get_zoo("tinyimagenet_resnet18_seed").data.train_size is None


def test_unknown_zoo_suggests_close_names():
    with pytest.raises(SpecError, match="mnist_cnn_seed"):
        get_zoo("mnist_cnn_sed")


def _write(tmp_path, text):
    path = tmp_path / "my_zoo.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_user_spec_file_with_extends(tmp_path):
    path = _write(tmp_path, """
        extends = "digits_cnn_seed"
        name = "my_zoo"
        [grid]
        lr = [0.001, 0.0001]
        [seeds]
        range = [1, 3]
    """)
    zoo = get_zoo(path)
    assert zoo.num_models == 6
    assert {m.lr for m in zoo.models()} == {1e-3, 1e-4}
    assert zoo.data.dataset == "digits"


@pytest.mark.parametrize(("override", "message"), [
    ('[grid]\nactivation = ["swish"]', "activation value 'swish' unknown"),
    ("[grid]\nlr = [-0.1]", "grid.lr value -0.1 invalid"),
    ("[grid]\ndropout = [1.5]", "grid.dropout"),
    ("epochs = 0", r"epochs must be an integer in 1\.\.10,000, got 0"),
    ("epochs = 100000000000000000000", r"epochs must be an integer in 1\.\.10,000"),  # TOML reads 1e20 as int
    ("batch_size = -1", r"batch_size must be an integer in 1\.\."),
    ('architecture = "vgg"', "architecture 'vgg' unknown"),
    ("[seeds]\nrange = [5, 1]", "seeds"),
    ("[seeds]\nrange = [1, 1000000000000]", r"last <= 4294967295"),
    ("[seeds]\nrandom = 1000000000000\nlow = 0\nhigh = 10\ndraw_seed = 1", r"1 <= R <= 100,000,000"),
    ("[seeds]\nrange = [0, 100000000]", r"100,000,001 models .*at most 100,000,000 per zoo"),
    ('notes = "a string"', "notes must be a list of strings"),
    ("description = 3", "description must be a string"),
    ("colour = 3", "unknown field"),
])
def test_invalid_spec_values_give_clear_errors(tmp_path, override, message):
    path = _write(tmp_path, f'extends = "digits_cnn_seed"\nname = "my_zoo"\n{override}\n')
    with pytest.raises(SpecError, match=message) as err:
        get_zoo(path)
    assert str(path) in str(err.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = _write(tmp_path, "name = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        get_zoo(path)


def test_spec_round_trips_through_json():
    zoo = get_zoo("cifar10_resnet18_seed")
    again = catalogue.Zoo.from_dict(json.loads(json.dumps(zoo.to_dict())))
    assert again == zoo


def test_extends_stays_in_the_catalogue_or_the_spec_folder(tmp_path):
    outside = tmp_path / "elsewhere.toml"
    outside.write_text((catalogue.SPEC_DIR / "digits_cnn_seed.toml").read_text())
    (tmp_path / "specs").mkdir()
    for base, message in [("../elsewhere.toml", "points outside the folder"), ("/etc/hosts.toml", "points outside"),
                          ("../../etc/passwd", "neither a catalogue"), (3, "neither a catalogue")]:
        path = tmp_path / "specs" / "child.toml"
        path.write_text(f'extends = {json.dumps(base)}\nname = "child"\n')
        with pytest.raises(SpecError, match=message):
            get_zoo(path)
    sibling = tmp_path / "specs" / "base.toml"  # a .toml file beside the spec is fine
    sibling.write_text('extends = "digits_cnn_seed"\nname = "base"\nepochs = 2\n')
    (tmp_path / "specs" / "child.toml").write_text('extends = "base.toml"\nname = "child"\n')
    assert get_zoo(tmp_path / "specs" / "child.toml").epochs == 2


def test_extends_cycles_are_errors(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "a.toml"\nname = "a"\n')
    with pytest.raises(SpecError, match=r"`extends` forms a cycle: a\.toml → a\.toml"):
        get_zoo(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('extends = "c.toml"\nname = "b"\n')
    (tmp_path / "c.toml").write_text('extends = "b.toml"\nname = "c"\n')
    with pytest.raises(SpecError, match=r"cycle: b\.toml → c\.toml → b\.toml"):
        get_zoo(tmp_path / "b.toml")


def test_a_derived_spec_does_not_inherit_the_description(tmp_path):
    path = _write(tmp_path, 'extends = "mnist_cnn_seed"\nname = "mine"\n[seeds]\nrange = [1, 3]\n')
    zoo, parent = get_zoo(path), get_zoo("mnist_cnn_seed")
    assert parent.description in get_zoo("mnist_cnn_seed").description and parent.source
    assert zoo.description == "derived from mnist_cnn_seed (own: seeds)"
    assert zoo.source == parent.source  # the original experiment folder it can be imported from
    assert zoo.notes == parent.notes  # notes (documented deviations) still hold
    assert get_zoo("mnist_cnn_hyp_rand").source == "tune_zoo_mnist_hyperparameter_10_random_seeds"  # its own


@pytest.mark.parametrize("name", ["mnist_cnn_hyp_rand", "svhn_cnn_hyp_fix", "digits_cnn_seed"])
def test_lazy_enumeration_is_the_documented_product(name):
    zoo = get_zoo(name)
    combos = list(itertools.product(range(zoo.replicates), *(zoo.grid[a] for a in catalogue.GRID_AXES)))
    if "range" in zoo.seeds:
        seeds = [zoo.seeds["range"][0] + c[0] for c in combos]
    else:
        seeds = np.random.default_rng(zoo.seeds["draw_seed"]).integers(
            zoo.seeds["low"], zoo.seeds["high"], size=len(combos)).tolist()
    expected = [catalogue.ModelConfig(i, s, *c[1:4], float(c[4]), float(c[5]), float(c[6]), zoo.batch_size,
                                      zoo.epochs, zoo.schedule)
                for i, (s, c) in enumerate(zip(seeds, combos, strict=True))]
    models = zoo.models()
    assert list(models) == expected and models == expected and len(models) == len(expected)
    assert models[-1] == expected[-1] and models[5:9] == expected[5:9]
    assert get_zoo(name).models()[7] == expected[7]  # a fresh sequence: the 8th model without the first seven


def test_the_first_models_of_a_huge_zoo_need_no_enumeration(tmp_path):
    path = _write(tmp_path, 'extends = "digits_cnn_seed"\nname = "huge"\n[seeds]\nrange = [1, 3000000]\n')
    zoo = get_zoo(path)
    models = zoo.models()
    assert len(models) == 3_000_000 and zoo.num_models == 3_000_000
    assert [m.seed for m in models[:2]] == [1, 2] and models[2_999_999].seed == 3_000_000
    assert models._drawn.size == 0  # range seeds: nothing drawn, nothing enumerated


BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.toml")), ids=lambda p: p.name)
def test_benchmark_specs_parse_under_their_file_names(path):
    zoo = get_zoo(path)
    assert zoo.name == path.stem
    assert zoo.num_models >= 100


def test_long_digits_zoo_is_the_mnist_seed_recipe_on_digits():
    """benchmarks/digits_cnn_seed_u_long.toml: every model's hyperparameters are the MNIST seed zoo's (init
    U[0, 1) included) but the epoch count, for ≥ 100,000 optimizer steps per model, and digits are normalised
    by their own mean and std as MNIST by its own."""
    long, mnist = get_zoo(BENCHMARKS / "digits_cnn_seed_u_long.toml"), get_zoo("mnist_cnn_seed")
    assert all(dataclasses.replace(a, epochs=b.epochs) == b for a, b in zip(long.models()[:5], mnist.models()[:5],
                                                                           strict=True))
    data = load_image_data(long.data)
    assert long.epochs * math.ceil(len(data.train.labels) / long.batch_size) >= 100_000
    images = torch.cat([data.train.images, data.test.images])
    assert abs(images.mean().item()) < 0.02 and abs(images.std().item() - 1) < 0.02
