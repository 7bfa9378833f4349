import pytest
import yaml

from ganseg.config import Params, ParamsError, load_params, validate_params
from ganseg.dotted import parse_override
from tests.conftest import ROOT


def test_repository_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "data/synthetic"
    assert params.data.num_classes == len(params.data.class_names)


def test_schema_defaults_are_the_values_of_the_params_file():
    """A key left out of a params file gets the value params.yaml documents."""
    assert Params().model_dump() == load_params(ROOT / "params.yaml").model_dump()


def write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"train\.learning_rate: unknown key"):
        load_params(write(tmp_path, {"train": {"learning_rate": 0.1}}))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ParamsError, match=r"train\.epochs: .*integer.*\(got 'many'\)"):
        load_params(write(tmp_path, {"train": {"epochs": "many"}}))


def test_negative_learning_rate_rejected(tmp_path):
    with pytest.raises(ParamsError, match=r"train\.lr_g: Input should be greater than 0"):
        load_params(write(tmp_path, {"train": {"lr_g": -1e-3}}))


def test_image_size_must_divide_by_depth(tmp_path):
    with pytest.raises(ParamsError, match="not divisible by 2\\*\\*model.depth = 16"):
        load_params(write(tmp_path, {"data": {"image_size": 72}, "model": {"depth": 4}}))


def test_every_error_is_listed_at_once(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, {"train": {"epochs": 0, "bogus": 1}, "tune": {"num_samples": -2}}))
    text = str(err.value)
    assert "train.epochs" in text and "train.bogus" in text and "tune.num_samples" in text


def test_overrides_are_applied_and_validated(tmp_path):
    path = write(tmp_path, {})
    params = load_params(path, ["train.epochs=3", "train.lambda_adv=0", "data.class_names=[a, b]"])
    assert (params.train.epochs, params.train.lambda_adv, params.data.class_names) == (3, 0.0, ["a", "b"])
    with pytest.raises(ParamsError, match="unknown key"):
        load_params(path, ["train.nope=1"])
    with pytest.raises(ParamsError, match="expects dotted.key=value"):
        load_params(path, ["train.epochs"])


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)
    assert parse_override("a.b=auto") == ("a.b", "auto")
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])


def test_search_space_keys_must_exist():
    with pytest.raises(ParamsError, match="train.nothing"):
        validate_params({"tune": {"search_space": {"train.nothing": {"type": "choice", "values": [1]}}}})
    with pytest.raises(ParamsError, match="'low' < 'high'"):
        validate_params({"tune": {"search_space": {"train.lr_g": {"type": "uniform", "low": 2, "high": 1}}}})


def test_with_overrides_returns_validated_copy():
    base = Params()
    tuned = base.with_overrides({"train.lr_g": 0.01, "model.depth": 2})
    assert tuned.train.lr_g == 0.01 and tuned.model.depth == 2
    assert base.train.lr_g != 0.01
    with pytest.raises(ParamsError):
        base.with_overrides({"train.lr_g": -1})


def test_rgb_masks_need_a_palette():
    with pytest.raises(ParamsError, match="needs a palette"):
        validate_params({"data": {"mask_format": "rgb"}})
    with pytest.raises(ParamsError, match="outside 0..2"):
        validate_params({"data": {"mask_format": "rgb", "palette": {"255,0,0": 7}}})


def test_negative_discriminator_learning_rate_rejected():
    with pytest.raises(ParamsError, match=r"train\.lr_d: Input should be greater than 0 \(got -0\.5\)"):
        validate_params({"train": {"lr_d": -0.5}})


def test_bad_file_policy_and_pixel_limit_are_named():
    with pytest.raises(ParamsError, match=r"data\.on_error: Input should be 'fail' or 'skip' \(got 'ignore'\)"):
        validate_params({"data": {"on_error": "ignore"}})
    with pytest.raises(ParamsError, match=r"data\.max_image_pixels: Input should be greater than or equal to 1"):
        validate_params({"data": {"max_image_pixels": 0}})
    assert validate_params({"data": {"on_error": "skip"}}).data.on_error == "skip"


def test_registered_model_name_must_fit_in_a_models_uri(tmp_path):
    with pytest.raises(ParamsError, match=r"mlflow\.registered_model"):
        load_params(write(tmp_path, {"mlflow": {"registered_model": "a/b@champion"}}))


def test_a_check_across_keys_names_the_clashing_values_not_the_whole_params():
    with pytest.raises(ParamsError) as err:
        validate_params({"data": {"image_size": 72}, "model": {"depth": 4}, "seed": 1})
    assert str(err.value) == "params.yaml is not valid:\n  data.image_size 72 is not divisible by 2**model.depth = 16"


def test_semi_supervised_start_epoch_must_come_after_the_warmup():
    """The self-taught loss needs the discriminator, which starts after the warm-up epochs."""
    semi = {"train": {"adv_warmup_epochs": 2, "semi": {"label_fraction": 0.5, "start_epoch": 2}}}
    with pytest.raises(ParamsError) as err:
        validate_params(semi)
    assert str(err.value) == (
        "params.yaml is not valid:\n  train.semi.start_epoch 2 must come after train.adv_warmup_epochs (2):"
        " the self-taught loss needs the discriminator; set it to 3 or later"
    )
    assert validate_params({"train": {"semi": {"label_fraction": 0.5}}}).train.semi.start_epoch == 3  # the default
    inactive = [{"label_fraction": 1.0, "start_epoch": 1}, {"label_fraction": 0.5, "start_epoch": 1}]
    validate_params({"train": {"semi": inactive[0]}})  # every image labelled: no self-taught loss
    validate_params({"train": {"lambda_adv": 0.0, "semi": inactive[1]}})  # no discriminator: supervised baseline
