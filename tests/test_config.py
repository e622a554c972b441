import subprocess
import sys

import pytest

from edge_svp.config import (
    METHODS,
    MODEL_OPTIONS,
    SVP_CHOICES,
    SVP_SCHEDULES,
    OptimConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    dump_toml,
    load_profile,
    override,
    parse_settings,
    profile_names,
    tomllib,
)
from edge_svp.errors import DataWarning, EdgeSVPError


def test_every_shipped_profile_loads_and_round_trips_through_toml():
    names = profile_names()
    assert {"digits-mlp", "mnist-mlp", "cifar10-cnn", "cifar10-vit"} <= set(names)
    for name in names:
        config = load_profile(name)
        assert config.profile == name
        again = config_from_dict(tomllib.loads(dump_toml(config_to_dict(config))))
        assert config_to_dict(again) == config_to_dict(config)


def test_defaults_come_from_the_dataclasses():
    assert config_to_dict(config_from_dict({})) == config_to_dict(RunConfig())


def test_unknown_key_names_the_closest_one():
    with pytest.raises(EdgeSVPError, match="unknown key 'lamda' .*did you mean 'lam'"):
        config_from_dict({"svp": {"lamda": 0.1}})


def test_unknown_model_option_is_rejected():
    with pytest.raises(EdgeSVPError, match="unknown key 'width'.*did you mean 'widths'"):
        config_from_dict({"model": {"kind": "mlp", "width": [3]}})


def test_wrong_type_is_rejected():
    with pytest.raises(EdgeSVPError, match="wrong type"):
        config_from_dict({"train": {"epochs": "ten"}})


def test_int_is_accepted_where_float_is_expected():
    assert config_from_dict({"svp": {"beta": 1}}).svp.beta == 1.0


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"svp": {"divergence": "kld"}}, "unknown divergence 'kld'"),
        ({"train": {"schedule": "greedy"}}, "unknown schedule"),
        ({"train": {"epochs": 0}}, "epochs must be positive"),
        ({"svp": {"proj_dropout": 1.0}}, "proj_dropout"),
        ({"model": {"kind": "resnet"}}, "unknown model kind"),
        ({"optim": {"state_precision": "int4"}}, "unknown state_precision"),
        ({"optim": {"name": "sgd", "state_precision": "fp8"}}, "SGD keeps fp32 momentum"),
        (
            {"optim": {"step_in_backward": "on"}, "train": {"precision": "fp16"}},
            "cannot run with precision fp16",
        ),  # fmt: skip
        ({"optim": {"state_on_host": "yes"}}, "unknown state_on_host"),
        ({"train": {"block_epochs": [3, 0]}}, "block_epochs must be positive"),
        ({"train": {"block_epochs": [3, 1]}}, r"must end with 10 and stay at or below it"),
        ({"train": {"epochs": 3, "block_epochs": [4, 3]}}, r"\[4, 3\] must end with 3"),
        (
            {"train": {"method": "bp", "schedule": "layerwise", "block_epochs": [3]}},
            "block_epochs is for SVP's blocks",
        ),
        (
            {"svp": {"store_projection": "sometimes"}},
            "store_projection must be true, false or auto",
        ),
        (
            {"optim": {"state_on_host": "on", "state_precision": "bf16"}},
            "state_on_host = on cannot run with optim.state_precision = bf16",
        ),
        (
            {"optim": {"state_on_host": "on", "step_in_backward": "on"}},
            "state_on_host = on cannot run with optim.step_in_backward = on",
        ),
        (
            {"optim": {"state_on_host": "on"}, "train": {"precision": "fp16"}},
            "state_on_host = on cannot run with precision fp16",
        ),
    ],
)
def test_invalid_values_are_rejected(raw, message):
    with pytest.raises(EdgeSVPError, match=message):
        config_from_dict(raw)


def test_the_optimizer_levers_a_configuration_turns_on_are_named():
    assert OptimConfig().explicit_levers() == []
    assert OptimConfig(state_precision="fp32", step_in_backward="off").explicit_levers() == []
    turned_on = OptimConfig(state_precision="bf16", state_on_host="on").explicit_levers()
    assert turned_on == ["optim.state_precision", "optim.state_on_host"]


def test_a_layerwise_block_trains_its_own_epochs_the_last_for_deeper_blocks():
    train = TrainConfig(schedule="layerwise", epochs=7, block_epochs=[4, 2])
    assert [train.epochs_of(block) for block in (1, 2, 3)] == [4, 2, 2]
    assert [TrainConfig(epochs=7).epochs_of(block) for block in (1, 5)] == [7, 7]


def test_override_and_settings():
    config = load_profile("digits-mlp")
    changed = override(
        config,
        **{"train.epochs": 3, "train.seed": None},
        **parse_settings(["svp.divergence=kl", "model.widths=[8, 4]"]),
    )
    assert changed.train.epochs == 3
    assert changed.train.seed == config.train.seed
    assert changed.svp.divergence == "kl"
    assert changed.model.options.widths == [8, 4]


def test_override_of_unknown_section_is_an_error():
    with pytest.raises(EdgeSVPError, match="unknown setting 'trian.epochs'.*did you mean 'train'"):
        override(RunConfig(), **{"trian.epochs": 3})


def test_unknown_profile_lists_the_choices():
    with pytest.raises(EdgeSVPError, match="unknown profile 'mnist-mpl'.*did you mean 'mnist-mlp'"):
        load_profile("mnist-mpl")


def test_profile_from_a_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[train]\nepochs = 2\n[model]\nkind = "cnn"\nchannels = [[4]]\n')
    config = load_profile(str(path))
    assert config.profile == "mine"
    assert config.model.options.channels == [[4]]


def test_invalid_toml_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\nepochs = 2\n")
    with pytest.raises(EdgeSVPError, match="not valid TOML"):
        load_profile(str(path))


def test_paper_profiles_and_their_gpu_sizes():
    assert {"fashion-mnist-mlp", "cifar10-cnn-full", "cifar10-vit-full"} <= set(profile_names())
    fashion, mnist = load_profile("fashion-mnist-mlp"), load_profile("mnist-mlp")
    assert fashion.data.dataset == "fashion-mnist"
    assert fashion.model.options.widths == mnist.model.options.widths == [1000, 1000, 1000]
    cnn, full = load_profile("cifar10-cnn"), load_profile("cifar10-cnn-full")
    assert full.data.augment and full.svp.proj_dim == cnn.svp.proj_dim  # inherited
    assert len(full.model.options.channels) > len(cnn.model.options.channels)
    for name in ("cifar10-vit", "cifar10-vit-full"):
        assert load_profile(name).svp.proj_dim == 10  # d0 = number of classes, as in the paper
    assert load_profile("cifar10-vit-full").model.options.dim > 128


def test_a_profile_extends_another_and_its_errors_name_the_bad_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "mnist-mlp"\n[train]\nepochs = 2\n')
    config = load_profile(str(path))
    assert config.profile == "mine" and config.train.epochs == 2
    assert config.model.options.widths == [1000, 1000, 1000]
    path.write_text('extends = "mnist-mlp"\n[train]\nepoch = 2\n')
    with pytest.raises(EdgeSVPError, match="unknown key 'epoch' .*did you mean 'epochs'"):
        load_profile(str(path))
    path.write_text('extends = "mine.toml"\n')
    with pytest.raises(EdgeSVPError, match="in a circle"):
        load_profile(str(path))
    path.write_text('extends = "mnist-mpl"\n')
    with pytest.raises(EdgeSVPError, match="did you mean 'mnist-mlp'"):
        load_profile(str(path))


def test_a_configuration_and_a_plan_are_read_without_torch():
    """Reading profiles and planning are plain Python: the CLI's help, a profile's errors and
    the planner's arithmetic do not wait for torch to import."""
    script = (
        "import sys, edge_svp.cli, edge_svp.config, edge_svp.memory.plan\n"
        "edge_svp.config.load_profile('cifar10-vit')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_names_a_configuration_accepts_are_the_registered_pieces():
    pytest.importorskip("torch", reason="the registries are the torch implementations")
    from edge_svp.models import MODELS
    from edge_svp.svp import ALIGNMENTS, DIVERGENCES, HEADS, PROJECTIONS

    registries = {"divergence": DIVERGENCES, "alignment": ALIGNMENTS, "head": HEADS,
                  "projection": PROJECTIONS}  # fmt: skip
    for name, registry in registries.items():
        assert set(SVP_CHOICES[name]) == set(registry), name
    assert set(MODEL_OPTIONS) == set(MODELS)


def test_the_methods_and_schedules_a_configuration_accepts_are_the_registered_schedules():
    pytest.importorskip("torch", reason="the schedules are torch training loops")
    from edge_svp.training import SCHEDULES, schedule_of

    assert set(METHODS) == {s.method for s in SCHEDULES.values()}
    local = {s.name for s in SCHEDULES.values() if s.method == METHODS[0]}
    assert set(SVP_SCHEDULES) == local
    for method in METHODS:
        for name in SVP_SCHEDULES:
            schedule = schedule_of(RunConfig().train.__class__(method=method, schedule=name))
            assert schedule.method == method and schedule in SCHEDULES.values()


def test_any_description_survives_config_toml():
    config = load_profile("digits-mlp")
    config.description = 'two lines,\n"quoted" and a \\ backslash'
    again = config_from_dict(tomllib.loads(dump_toml(config_to_dict(config))))
    assert again.description == config.description


def test_a_renamed_key_is_read_under_its_new_name_with_a_warning():
    with pytest.warns(DataWarning, match="'checkpointing' is now 'recompute_activations'"):
        config = config_from_dict({"train": {"checkpointing": True}})
    assert config.train.recompute_activations is True
    assert "checkpointing" not in config_to_dict(config)["train"]
