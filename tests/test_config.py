import math

import pytest

from odin.config import (
    PRESETS,
    Blueprint,
    ConfigError,
    ModelConfig,
    RunConfig,
    TrainConfig,
    describe,
    load_config,
    preset_config,
)


def _formula(config: ModelConfig) -> int:
    V, C, L, T = config.vocab_size, config.d_model, config.n_layer, config.context
    if config.arch == "rwkv":  # emb, ln0, ln_out; per layer 7 matrices (2 of them C x F) and 11 vectors
        F = config.d_ffn or 4 * C
        return V * C + 4 * C + L * (5 * C * C + 2 * F * C + 11 * C)
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C + config.abacus * C  # + the Abacus table


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_param_count_matches_shapes(name):
    config = preset_config(name)
    blueprint = Blueprint(config.model)
    total_from_shapes = sum(math.prod(shape) for _, shape in blueprint.param_shapes())
    assert blueprint.n_params == total_from_shapes == _formula(config.model)
    assert "total" in describe(blueprint, batch=2, seq_len=min(16, config.model.context))


def test_param_shapes_order_and_names():
    blueprint = Blueprint(ModelConfig(n_layer=2, d_model=8, n_head=2, context=5, vocab_size=11))
    names = [name for name, _ in blueprint.param_shapes()]
    layer = ["ln1_w", "ln1_b", "qkv_w", "qkv_b", "attproj_w", "attproj_b",
             "ln2_w", "ln2_b", "fc_w", "fc_b", "fcproj_w", "fcproj_b"]
    assert names == ["wte", "wpe", *[f"h.{i}.{n}" for i in range(2) for n in layer], "lnf_w", "lnf_b"]
    shapes = dict(blueprint.param_shapes())
    assert shapes["wte"] == (11, 8) and shapes["wpe"] == (5, 8)
    assert shapes["h.1.qkv_w"] == (24, 8) and shapes["h.0.fcproj_w"] == (8, 32)
    offsets = blueprint.param_offsets()
    assert offsets["wpe"][0] == 88 and offsets["h.0.ln1_w"][0] == 88 + 40
    last_offset, last_shape = offsets["lnf_b"]
    assert last_offset + last_shape[0] == blueprint.n_params


def test_preset_sizes():
    assert 0.35e6 < Blueprint(preset_config("tiny").model).n_params < 0.5e6
    assert 85e6 < Blueprint(preset_config("odin-100m").model).n_params < 130e6
    arith = preset_config("arith-3digit").model
    assert arith.context >= 15  # "999*999=998001": 1 + 8 + 6 + 1 tokens need T = 15


def test_unknown_key_suggests_closest(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[model]\nn_layers = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'n_layers' in \[model\]; did you mean 'n_layer'\?"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key 'lr_min' in \[train\]"):
        TrainConfig.from_dict({"lr_min": 0.1})
    with pytest.raises(ConfigError, match="unknown key 'modle' at the top level; did you mean 'model'"):
        RunConfig.from_dict({"modle": {}})
    with pytest.raises(ConfigError, match="unknown preset 'tinny'; did you mean 'tiny'"):
        preset_config("tinny")


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("model", "n_layer", 0, r"\[model\].n_layer must be an integer in \[1, 1024\], got 0"),
        ("model", "d_model", 12.5, r"\[model\].d_model must be an integer"),
        ("model", "arch", "lstm", r"\[model\].arch must be one of 'gpt', 'rwkv'"),
        ("model", "ln_eps", 0.0, r"\[model\].ln_eps must be a number in \(0.0, 1.0\]"),
        ("train", "lr", -1.0, r"\[train\].lr must be a number in \(0.0, 10.0\], got -1.0"),
        ("train", "beta2", 1.0, r"\[train\].beta2 must be a number in \[0.0, 1.0\)"),
        ("train", "batch_size", True, r"\[train\].batch_size must be an integer"),
        ("train", "loss_on", "prompt", r"\[train\].loss_on must be one of 'answer', 'all'"),
    ],
)
def test_bad_values_name_key_and_range(table, key, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({table: {key: value}})


def test_toml_preset_overrides_and_json_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'preset = "arith-3digit"\n[model]\nn_layer = 2\n[train]\nsteps = 123\nlr = 1\n', encoding="utf-8"
    )
    config = load_config(path)
    assert config.preset == "arith-3digit"
    assert config.model.n_layer == 2 and config.model.d_model == PRESETS["arith-3digit"]["model"]["d_model"]
    assert config.train.steps == 123
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert RunConfig.from_dict(config.to_dict()) == config


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    path = tmp_path / "broken.toml"
    path.write_text("[model\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_blueprint_validation():
    with pytest.raises(ValueError, match=r"d_model \(100\) must be divisible by \[model\].n_head \(3\)"):
        Blueprint(ModelConfig(d_model=100, n_head=3))
    blueprint = Blueprint(ModelConfig(context=32))
    assert blueprint.head_size == 32
    blueprint.check_sequence_length(32)
    with pytest.raises(ValueError, match=r"context must be >= the longest example \(40 tokens\)"):
        blueprint.check_sequence_length(40)
    with pytest.raises(NotImplementedError, match="known: 'gpt', 'rwkv'"):
        Blueprint(_Arch("lstm"))


class _Arch:
    """A config-like object with an arch the validated ModelConfig would refuse."""

    def __init__(self, arch: str) -> None:
        self.arch = arch


def test_rwkv_blueprint_layout_and_rules():
    blueprint = Blueprint(ModelConfig(arch="rwkv", n_layer=2, d_model=8, n_head=1, context=5, vocab_size=11,
                                      d_ffn=12))
    names = [name for name, _ in blueprint.param_shapes()]
    assert names[:3] == ["emb", "ln0_w", "ln0_b"] and names[-2:] == ["ln_out_w", "ln_out_b"]
    shapes = dict(blueprint.param_shapes())
    assert shapes["h.1.ffn_key_w"] == (12, 8) and shapes["h.1.ffn_value_w"] == (8, 12)
    assert shapes["h.0.att_time_decay"] == (8,) and shapes["h.0.att_output_w"] == (8, 8)
    assert blueprint.n_params == sum(math.prod(s) for s in shapes.values())
    assert blueprint.state_bytes(3) == 3 * 2 * 5 * 8 * 4
    with pytest.raises(ValueError, match="abacus"):
        Blueprint(ModelConfig(arch="rwkv", abacus=12))
    with pytest.raises(ValueError, match="d_ffn"):
        Blueprint(ModelConfig(d_model=8, n_head=2, d_ffn=12))  # GPT's MLP is fixed at 4 x d_model


def test_memory_estimate_formula():
    blueprint = Blueprint(ModelConfig(n_layer=1, d_model=8, n_head=2, context=4, vocab_size=10))
    memory = blueprint.memory_estimate(batch=2, seq_len=4)
    B, T, C, V, NH = 2, 4, 8, 10, 2
    # the workspace csrc/gpt.c allocates: per layer 16 activations of C floats a token, two
    # (mean, rstd) pairs, attention probabilities; then the final norm, logits, losses and the
    # backward buffers (14 C + V a token, attention scratch for T padded to 16)
    per_layer = 16 * B * T * C + 4 * B * T + B * NH * T * T
    backward = B * T * (14 * C + V) + 16 * (4 * (C // NH) + 2)
    expected = 4 * (B * T * C + per_layer + B * T * C + 2 * B * T + B * T * V + 2 * B * T + backward)
    assert memory.activations == expected
    assert memory.parameters == memory.gradients == 4 * blueprint.n_params
    assert memory.adam_moments == 8 * blueprint.n_params
    assert memory.total == memory.parameters * 4 + expected
    text = describe(blueprint, 2, 4)
    assert "formula-based estimate" in text and "KiB" in text
    assert "positions learned (wpe)" in text


def test_describe_names_the_position_scheme():
    for positions, words in (("none", "wpe held at zero)"), ("alibi", "ALiBi biases")):
        config = ModelConfig(n_layer=1, d_model=8, n_head=2, context=4, vocab_size=10, positions=positions)
        text = describe(Blueprint(config), 1, 4)
        assert f"positions {positions} (" in text and words in text
    assert "positions alibi" in describe(Blueprint(preset_config("code-exec").model), 1, 4)
