import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ganseg.data.datasets import to_input
from ganseg.segmenter.export import export_model
from ganseg.segmenter.inference import (
    image_logits,
    logit_strips,
    segment_image,
    window_starts,
)
from ganseg.segmenter.training import build_networks
from tests.conftest import model_card, predict_in_process


def test_predict_any_size_and_report_unreadable(tmp_path, tiny_params):
    generator, _ = build_networks(tiny_params, 1, 3)
    export_model(tmp_path / "model", generator.state_dict(), model_card(tiny_params))
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in {"small": (13, 21), "big": (70, 45, 3)}.items():
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(inputs / f"{name}.png")
    (inputs / "broken.png").write_bytes(b"not an image")
    summary = predict_in_process(tmp_path / "model", inputs, tmp_path / "out", overlays=True)
    assert summary["written"] == 2 and "broken.png" in summary["failed"]
    small = np.asarray(Image.open(tmp_path / "out" / "small.png"))
    assert small.shape == (13, 21) and small.max() <= 2
    assert np.asarray(Image.open(tmp_path / "out" / "big.png")).shape == (70, 45)
    assert (tmp_path / "out" / "big_overlay.png").is_file()


@pytest.mark.parametrize("length, tile, stride", [(100, 32, 24), (32, 32, 24), (33, 32, 24), (10, 32, 24), (97, 16, 1)])
def test_windows_cover_every_pixel_and_stay_inside(length, tile, stride):
    starts = window_starts(length, tile, stride)
    covered = np.zeros(max(length, tile), bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered[:length].all()
    assert starts[0] == 0 and starts[-1] == max(0, length - tile)
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


class ConstantLogits(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values).view(1, -1, 1, 1)

    def forward(self, x):
        return self.values.expand(x.shape[0], -1, *x.shape[-2:]).clone()


def test_constant_model_output_is_stitched_without_seams():
    x = torch.rand(1, 1, 150, 97) * 2 - 1
    logits = image_logits(ConstantLogits([0.1, 0.7, -0.3]), x, tile=32)
    assert logits.shape == (1, 3, 150, 97)
    expected = torch.tensor([0.1, 0.7, -0.3]).view(1, 3, 1, 1).expand_as(logits)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_pixelwise_model_gives_the_same_logits_as_one_whole_pass():
    # A 1x1 convolution sees no context, so however the windows fall, their average must equal
    # the whole image in one pass: any gap, double count or misplaced window would show.
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, kernel_size=1)
    x = torch.rand(1, 3, 131, 77)
    with torch.no_grad():
        whole = model(x)
    torch.testing.assert_close(image_logits(model, x, tile=32), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("height", [32, 33, 150, 10])
def test_strips_follow_each_other_and_hold_at_most_one_window_row(height):
    # Prediction memory must not grow with the image: every strip is handed out before the next
    # window row is summed, so none is taller than a tile, and together they tile the image exactly.
    x = torch.randint(0, 256, (1, 1, height, 70), dtype=torch.uint8)
    strips = list(logit_strips(ConstantLogits([0.5, -0.5]), x, tile=32))
    assert [top for top, _ in strips] == list(np.cumsum([0] + [s.shape[1] for _, s in strips[:-1]]))
    assert sum(s.shape[1] for _, s in strips) == height and all(s.shape[1] <= 32 for _, s in strips)
    assert all(s.shape[0] == 2 and s.shape[2] == 70 for _, s in strips)


def test_uint8_and_float_inputs_give_the_same_logits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))
    image = torch.randint(0, 256, (1, 1, 90, 70), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(image_logits(model, image, 32), image_logits(model, to_input(image), 32))


def test_segment_image_matches_the_argmax_of_the_joined_logits(tiny_params):
    generator, _ = build_networks(tiny_params, 1, 3)
    generator.eval()
    image = np.random.default_rng(2).integers(0, 255, (140, 75, 1), dtype=np.uint8)
    x = to_input(torch.from_numpy(image).permute(2, 0, 1)[None])
    for flips in (False, True):
        with torch.no_grad():
            expected = image_logits(generator, x, 32, flips=flips)[0].argmax(0).numpy()
        np.testing.assert_array_equal(segment_image(generator, image, tile=32, flips=flips), expected)


def test_large_image_keeps_its_shape_with_the_real_generator(tiny_params):
    generator, _ = build_networks(tiny_params, 3, 3)
    image = np.random.default_rng(1).integers(0, 255, (203, 150, 3), dtype=np.uint8)
    mask = segment_image(generator.eval(), image, tile=32)
    assert mask.shape == (203, 150) and mask.dtype == np.uint8 and mask.max() <= 2


class WidthRamp(nn.Module):
    """Scales each column by its position, 0 at the left edge to 1 at the right: not mirror-symmetric."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # segment_image reads the device from the parameters

    def forward(self, x):
        return x * torch.linspace(0, 1, x.shape[-1])


@pytest.mark.parametrize("fit", ["tile", "resize"])
def test_flips_average_the_mirror_images(fit):
    x = torch.rand(1, 2, 40, 40)
    plain = image_logits(WidthRamp(), x, tile=40, fit=fit)
    torch.testing.assert_close(plain, x * torch.linspace(0, 1, 40), rtol=1e-5, atol=1e-5)
    # left-right mirrors see the ramp reversed, so the four-way average scales every column by 1/2
    torch.testing.assert_close(image_logits(WidthRamp(), x, tile=40, fit=fit, flips=True), x / 2, rtol=1e-5, atol=1e-5)


def test_flips_leave_a_mirror_symmetric_model_unchanged():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 3, kernel_size=1)
    x = torch.rand(1, 1, 70, 45)
    with torch.no_grad():
        flipped, plain = image_logits(model, x, 32, flips=True), image_logits(model, x, 32)
        torch.testing.assert_close(flipped, plain, rtol=1e-5, atol=1e-5)


def test_predict_folder_with_flips_writes_masks(tmp_path, tiny_params):
    generator, _ = build_networks(tiny_params, 1, 2)
    export_model(tmp_path / "model", generator.state_dict(), model_card(tiny_params, class_names=("a", "b")))
    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 37), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    assert predict_in_process(tmp_path / "model", tmp_path / "in", tmp_path / "out", flips=True)["written"] == 1
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (50, 37)
