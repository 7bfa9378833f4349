"""Checkpoints and model folders: a clear error for another architecture, and weights-only loading."""

import ast
import os

import pytest
import torch

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.errors import CheckpointError
from ganseg.segmenter.evaluation import check_model_fits_data
from ganseg.segmenter.export import export_model, load_model
from ganseg.segmenter.training import build_networks, build_training_state
from tests.conftest import ROOT, model_card, prepared_stats


def export(folder, params, card=None):
    card = card or model_card(params)
    generator, _ = build_networks(params, card.in_channels, card.num_classes)
    export_model(folder, generator.state_dict(), card)
    return folder


def test_weights_of_another_width_name_the_file_and_the_shapes(tmp_path, tiny_params):
    export(tmp_path / "model", tiny_params)
    wider, _ = build_networks(tiny_params.with_overrides({"model.base_channels": 16}), 1, 3)
    torch.save(wider.state_dict(), tmp_path / "model" / "segmenter.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "model")
    message = str(err.value)
    assert f"{tmp_path / 'model' / 'segmenter.pt'}: the segmenter weights are for another architecture" in message
    assert "of another shape (e.g. down.0.0.weight: (16, 1, 3, 3) in the file, (8, 1, 3, 3) in the model)" in message
    assert "model.json describes a U-Net of depth 2, base_channels 8" in message


def test_weights_of_another_depth_list_missing_and_unexpected_tensors(tmp_path, tiny_params):
    export(tmp_path / "model", tiny_params.with_overrides({"model.depth": 3}))
    shallow, _ = build_networks(tiny_params, 1, 3)
    torch.save(shallow.state_dict(), tmp_path / "model" / "segmenter.pt")
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \(down\.3\.0\.weight"):
        load_model(tmp_path / "model")


def test_training_checkpoint_of_another_architecture(tmp_path, tiny_params):
    torch.save(checkpoint_of(build_training_state(tiny_params, 1, 3), 2, []), tmp_path / "state.pt")
    other = build_training_state(tiny_params.with_overrides({"model.disc_channels": 16}), 1, 3)
    with pytest.raises(CheckpointError, match=r"state.pt: the discriminator weights are for another architecture"):
        restore_checkpoint(other, tmp_path / "state.pt")


def test_a_file_that_is_not_a_checkpoint(tmp_path, tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    (tmp_path / "state.pt").write_bytes(b"just some bytes")
    with pytest.raises(CheckpointError, match="state.pt: not a readable PyTorch weights file"):
        restore_checkpoint(state, tmp_path / "state.pt")
    torch.save({"epoch": 1}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="not a ganseg training checkpoint .*no segmenter"):
        restore_checkpoint(state, tmp_path / "partial.pt")


class CodeOnLoad:
    """Pickles to a call of os.mkdir: a full unpickler would run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_pickled_code_in_a_model_is_refused_and_never_run(tmp_path, tiny_params):
    export(tmp_path / "model", tiny_params)
    marker = tmp_path / "code_ran"
    torch.save({"head.weight": CodeOnLoad(marker)}, tmp_path / "model" / "segmenter.pt")
    with pytest.raises(CheckpointError, match="segmenter.pt: refused: it holds Python objects.*GLOBAL posix.mkdir"):
        load_model(tmp_path / "model")
    assert not marker.exists()


def test_a_broken_model_card_is_named(tmp_path, tiny_params):
    export(tmp_path / "model", tiny_params)
    (tmp_path / "model" / "model.json").write_text('{"model": {"depth": "deep"}}')
    with pytest.raises(CheckpointError, match="model.json: not a valid model card"):
        load_model(tmp_path / "model")


def test_a_model_for_other_classes_is_not_evaluated(tmp_path, tiny_params):
    card = model_card(tiny_params, class_names=("x", "y"))
    with pytest.raises(CheckpointError, match=r"trained for classes \['x', 'y'\] .* holds classes \['a', 'b', 'c'\]"):
        check_model_fits_data(card, prepared_stats(), tmp_path / "models", tmp_path / "prepared")
    check_model_fits_data(model_card(tiny_params), prepared_stats(), tmp_path, tmp_path)


def loader_calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in {
                ("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("np", "load"), ("numpy", "load"),
            }:
                yield owner.id, node


def test_every_loader_in_the_code_is_weights_only():
    sources = sorted((ROOT / "ganseg").rglob("*.py")) + sorted((ROOT / "pipeline").glob("*.py"))
    seen = 0
    for path in sources:
        for module, call in loader_calls(ast.parse(path.read_text())):
            seen += 1
            keywords = {k.arg: k.value for k in call.keywords}
            where = f"{path.name}:{call.lineno}"
            assert module != "pickle", f"{where}: pickle can run code from a file"
            if module == "torch":
                assert isinstance(keywords.get("weights_only"), ast.Constant), where
                assert keywords["weights_only"].value is True, where
            else:
                assert "allow_pickle" not in keywords, where
    assert seen >= 3  # torch.load in checkpoints, np.load in data: the scan does find the loaders


def test_a_model_folder_of_older_code_loads_from_generator_pt(tmp_path, tiny_params):
    folder = export(tmp_path / "model", tiny_params)
    os.rename(folder / "segmenter.pt", folder / "generator.pt")
    segmenter, _ = load_model(folder)
    expected, _ = build_networks(tiny_params, 1, 3)
    assert all(torch.equal(a, b) for a, b in zip(segmenter.state_dict().values(), expected.state_dict().values()))


def test_a_segmenter_checkpoint_of_older_code_restores(tmp_path, tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    saved = checkpoint_of(state, 2, [{"epoch": 2}])
    saved["generator"], saved["ema_generator"] = saved.pop("segmenter"), saved.pop("ema_segmenter")
    torch.save(saved, tmp_path / "state.pt")
    fresh = build_training_state(tiny_params.with_overrides({"seed": 1}), 1, 3)
    assert restore_checkpoint(fresh, tmp_path / "state.pt")["epoch"] == 2
    assert all(torch.equal(a, b) for a, b in zip(fresh.segmenter.state_dict().values(),
                                                  state.segmenter.state_dict().values()))


def test_an_image_generator_checkpoint_of_older_code_restores_its_patchgans(tmp_path):
    """Older code built each PatchGAN scale as stages: [Sequential(conv, LeakyReLU)] * layers + [conv]."""
    from torch import nn
    from torch.nn.utils.parametrizations import spectral_norm

    from ganseg.config import ImagegenConfig
    from ganseg.imagegen.training import build_state

    cfg = ImagegenConfig(base_channels=8, disc_channels=8, depth=2)
    state = build_state(cfg, 3, 1)

    def old_critic(channels):
        stages = []
        for i in range(cfg.disc_layers):
            out = cfg.disc_channels * 2 ** min(i, 3)
            stages.append(nn.Sequential(spectral_norm(nn.Conv2d(channels, out, 4, 2, 1)), nn.LeakyReLU(0.2)))
            channels = out
        critic = nn.Module()
        critic.stages = nn.ModuleList([*stages, spectral_norm(nn.Conv2d(channels, 1, 3, padding=1))])
        return critic

    old = nn.Module()
    old.critics = nn.ModuleList(old_critic(1 + 3 + 1) for _ in range(cfg.disc_scales))
    saved = checkpoint_of(state, 1, [])
    saved["discriminator"] = old.state_dict()
    torch.save(saved, tmp_path / "state.pt")
    restore_checkpoint(state, tmp_path / "state.pt")
    assert all(torch.equal(a, b) for a, b in zip(state.discriminator.state_dict().values(), old.state_dict().values()))
