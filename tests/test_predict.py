import numpy as np
from PIL import Image

from ganseg.engine import build_networks, export_model
from ganseg.predict import predict_folder


def test_predict_any_size_and_report_unreadable(tmp_path, tiny_params):
    generator, _ = build_networks(tiny_params, 1, 3)
    stats = {"channels": 1, "num_classes": 3, "class_names": ["a", "b", "c"], "image_size": 32}
    export_model(tmp_path / "model", generator.state_dict(), tiny_params.model, stats, {})
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in {"small": (13, 21), "big": (70, 45, 3)}.items():
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(inputs / f"{name}.png")
    (inputs / "broken.png").write_bytes(b"not an image")
    summary = predict_folder(tmp_path / "model", inputs, tmp_path / "out", overlays=True)
    assert summary["written"] == 2 and "broken.png" in summary["failed"]
    small = np.asarray(Image.open(tmp_path / "out" / "small.png"))
    assert small.shape == (13, 21) and small.max() <= 2
    assert np.asarray(Image.open(tmp_path / "out" / "big.png")).shape == (70, 45)
    assert (tmp_path / "out" / "big_overlay.png").is_file()
