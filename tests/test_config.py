"""engines/config.py: defaults in code, YAML and `--set` overrides, and errors that name the key."""
from pathlib import Path

import pytest
import yaml

from engines.config import Config, load_config
from engines.errors import StudioError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = sorted((REPO / "assets" / "configs").glob("*.yaml"))


def error_of(*args, **kwargs) -> str:
    with pytest.raises(StudioError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


def test_every_default_passes_its_own_checks_and_survives_a_yaml_round_trip(tmp_path):
    """A config written out (e.g. a run's config.yaml) reads back as the same config: no default that its own
    check refuses, no value whose type YAML changes (a tuple read back as a list), no key the loader does not know."""
    written = tmp_path / "written.yaml"
    written.write_text(yaml.safe_dump(Config().to_dict(), sort_keys=False))
    assert load_config(written) == load_config() == Config()
    changed = load_config(overrides=["generation.sampling.autoregressive.temperature=1.1", "data.segment_bars=8"])
    written.write_text(yaml.safe_dump(changed.to_dict()))
    assert load_config(written) == changed != Config()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("generation:\n  sampling:\n    temperature: 0.9\n    top_k: 40\n"
                    "data:\n  segment_bars: 8\n")
    cfg = load_config(path, ["generation.sampling.temperature=0.7", "model.generative.type=diffusion"])
    assert cfg.generation.sampling.temperature == 0.7   # the override wins over the file
    assert cfg.generation.sampling.top_k == 40          # the file wins over the default
    assert cfg.data.segment_bars == 8
    assert cfg.model.generative.type == "diffusion"
    assert cfg.generation.sampling.autoregressive.top_p == 0.95  # untouched keys keep their defaults
    assert cfg.data.roll_steps == 8 * 4 * 4


def test_override_values_are_parsed_as_yaml():
    cfg = load_config(overrides=["studio.share=true", "generation.sampling.temperature=1",
                                 "data.collections=[bach, palestrina]", "render.soundfont="])
    assert cfg.studio.share is True
    assert isinstance(cfg.generation.sampling.temperature, float) and cfg.generation.sampling.temperature == 1.0
    assert cfg.data.collections == ["bach", "palestrina"]
    assert cfg.render.soundfont == ""
    # YAML 1.1 reads "4e-4" (no dot) as text; a number field takes it as the number it is
    assert load_config(overrides=["model.diffusion.learning_rate=4e-4"]).model.diffusion.learning_rate == 0.0004


def test_to_dict_round_trips_through_yaml(tmp_path):
    cfg = load_config(overrides=["model.vae.latent_dim=512", "data.hop_bars=2", "model.generative.type=autoregressive"])
    path = tmp_path / "dump.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(path) == cfg


def test_unknown_key_names_full_path_and_allowed_keys():
    message = error_of(overrides=["model.vae.nope=1"])
    assert "'model.vae.nope'" in message
    for allowed in ("latent_dim", "hidden_dim", "beta", "free_bits"):
        assert allowed in message


def test_unknown_top_level_section():
    message = error_of(overrides=["modle.vae.beta=1"])
    assert "'modle'" in message and "model" in message and "generation" in message


def test_bad_literal_lists_allowed_values():
    message = error_of(overrides=["model.generative.type=gan"])
    assert "'model.generative.type'" in message and "'gan'" in message
    assert "vae, diffusion, autoregressive" in message


def test_wrong_type_names_the_key():
    message = error_of(overrides=["data.segment_bars=four"])
    assert "'data.segment_bars'" in message and "integer" in message and "four" in message


@pytest.mark.parametrize("override, expected", [
    ("studio.share=maybe", "must be true or false"),
    ("generation.sampling.temperature=hot", "must be a number"),
    ("data.segment_bars=true", "must be an integer"),
    ("data.collections=bach", "must be a list"),
])
def test_type_errors(override, expected):
    message = error_of(overrides=[override])
    assert expected in message and f"'{override.split('=')[0]}'" in message


def test_range_check_message():
    message = error_of(overrides=["data.segment_bars=0"])
    assert message == "config key 'data.segment_bars' = 0 is not allowed; expected an integer from 1 to 16"


@pytest.mark.parametrize("override", ["generation.sampling.temperature=0",
                                      "generation.sampling.autoregressive.top_p=1.5",
                                      "data.steps_per_beat=5", "studio.port=70000", "render.sample_rate=100"])
def test_range_checks_reject(override):
    assert f"'{override.split('=')[0]}'" in error_of(overrides=[override])


def test_a_key_of_the_flat_sampling_section_names_where_it_moved(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("generation:\n  sampling:\n    num_steps: 25\n")
    assert error_of(path) == ("config key 'generation.sampling.num_steps' has moved: use "
                              "'generation.sampling.diffusion.steps'")
    assert "use 'generation.sampling.autoregressive.top_p'" in error_of(overrides=["generation.sampling.top_p=0.9"])


def test_shared_sampling_keys_reach_every_engine_that_has_them():
    from engines.generation import GENERATORS

    cfg = load_config(overrides=["generation.sampling.temperature=0.6", "generation.sampling.top_k=12"])
    assert GENERATORS["vae"].settings_for(cfg).temperature == 0.6
    gpt = GENERATORS["autoregressive"].settings_for(cfg)
    assert gpt.temperature == 0.6 and gpt.top_k == 12
    assert GENERATORS["autoregressive"].settings_for(cfg, {"top_k": 3}).top_k == 3   # a request's own wins
    with pytest.raises(StudioError, match="the vae engine has no setting 'steps'"):
        GENERATORS["vae"].settings_for(cfg, {"steps": 3})


def test_section_given_a_value():
    assert "'model.vae' is a section" in error_of(overrides=["model.vae=3"])


def test_override_into_a_value():
    message = error_of(overrides=["data.segment_bars=4", "data.segment_bars.x=1"])
    assert "'segment_bars' is a value, not a section" in message


@pytest.mark.parametrize("override", ["data.segment_bars", "=3"])
def test_malformed_override(override):
    assert "must look like key.path=value" in error_of(overrides=[override])


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert error_of(missing) == f"config file '{missing}' does not exist"


def test_non_mapping_yaml(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    message = error_of(path)
    assert str(path) in message and "mapping" in message and "list" in message


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    assert "is not valid YAML" in error_of(path)


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_analyzer_validate_runs_through_config():
    message = error_of(overrides=["analyzer.softmax_temperature=0"])
    assert message.startswith("config section 'analyzer':") and "softmax_temperature" in message
    message = error_of(overrides=["analyzer.prototypes={PINK: [0, 0, 0, 0, 0]}"])
    assert "config section 'analyzer'" in message and "exactly the modes" in message
    message = error_of(overrides=["analyzer.prototypes={BLACK: [0, 0, 0]}"])
    assert "analyzer.prototypes.BLACK must be 5 numbers" in message


def test_inverted_pitch_range_is_rejected():
    with pytest.raises(StudioError, match="pitch"):
        load_config(overrides=["data.pitch_low=100", "data.pitch_high=50"])


def assert_file_applied(path: Path) -> None:
    """Load `path` and check that every leaf value it sets is the value in the Config."""
    def leaves(node, prefix=()):
        for key, value in node.items():
            if isinstance(value, dict) and key != "prototypes":
                yield from leaves(value, prefix + (key,))
            else:
                yield prefix + (key,), value

    cfg = load_config(path)
    for keys, value in leaves(yaml.safe_load(path.read_text()) or {}):
        obj = cfg
        for key in keys:
            obj = getattr(obj, key)
        assert obj == value, f"{path.name}: {'.'.join(keys)}"


def test_file_values_take_effect(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("model:\n  vae:\n    beta: 0.25\n    beta_schedule: linear\n"
                    "render:\n  pool_size: 3\nanalyzer:\n  softmax_temperature: 0.05\n")
    assert_file_applied(path)
    assert load_config(path).model.vae.beta_schedule == "linear"


def test_example_configs_load():
    """Every assets/configs/*.yaml loads and each value it sets takes effect."""
    assert len(EXAMPLE_CONFIGS) >= 3
    for path in EXAMPLE_CONFIGS:
        assert_file_applied(path)


def test_one_prototype_can_be_overridden_alone():
    cfg = load_config(overrides=["analyzer.prototypes.RED=[0.9, 0.2, 0.8, 0.1, 0.9]"])
    assert cfg.analyzer.prototypes["RED"] == [0.9, 0.2, 0.8, 0.1, 0.9]
    assert cfg.analyzer.prototypes["BLUE"] == load_config().analyzer.prototypes["BLUE"]
    with pytest.raises(StudioError, match="analyzer.prototypes.PINK|prototypes must name exactly"):
        load_config(overrides=["analyzer.prototypes.PINK=[0.5, 0.5, 0.5, 0.5, 0.5]"])
