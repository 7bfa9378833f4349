"""A registered ganseg model as MLflow serves it (`mlflow models serve -m models:/...`), also loaded by
`mlflow.pyfunc.load_model`. This file is the model's code (MLflow's models-from-code): it is stored
in every logged model beside the model folder and the `ganseg` package, and needs nothing else of
this project, so nothing is unpickled.

The segmenter takes images as file bytes (PNG, TIFF, JPEG, ...; in JSON, base64) in a column
`image`, and answers a column `mask`: each mask the PNG that `ganseg predict` writes for that
image, byte for byte (the model card's intensity rule, windows or resize, and test-time flips when
the `flips` param is true). The image generator takes masks as file bytes in a column `mask`, and
params `seed` and `samples`; it answers one row per drawn image (`mask_row`, `sample`, `image`), the
same images for the same seed.

Both run on the first GPU when there is one, unless GANSEG_CPU=1 is set in the server's environment.
An input that cannot be used (not an image, a channel count the model does not take, more pixels
than `max_image_pixels`) is answered with HTTP 400 and a message that names the row and the reason.
"""

from __future__ import annotations

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from ganseg.data.sources import BadFileError
from ganseg.devices import inference_device
from ganseg.fileio import png_bytes
from ganseg.imagegen.export import load_image_generator
from ganseg.imagegen.generate import generate_encoded
from ganseg.segmenter.segment_folder import FileSegmenter


class ServedModel(PythonModel):
    """The model folder in the artifact `model`; the model config's `kind` says which model it is."""

    def load_context(self, context) -> None:
        self.kind = context.model_config["kind"]
        self.max_image_pixels = int(context.model_config["max_image_pixels"])
        folder = context.artifacts["model"]
        if self.kind == "segmenter":
            self.segmenter = FileSegmenter(folder, self.max_image_pixels)
        else:
            generator, self.card = load_image_generator(folder)
            self.generator = generator.to(inference_device())

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        if self.kind == "segmenter":
            return pd.DataFrame({"mask": self._each("image", model_input, self._segment, params)})
        drawn = self._each("mask", model_input, self._draw, params)
        return pd.DataFrame([{"mask_row": row, "sample": k, "image": image}
                             for row, images in enumerate(drawn) for k, image in enumerate(images)])

    def _segment(self, image: bytes, params: dict) -> bytes:
        return png_bytes(self.segmenter.segment(image, bool(params.get("flips")))[1])

    def _draw(self, mask: bytes, params: dict) -> list[bytes]:
        samples, seed = int(params.get("samples", 1)), int(params.get("seed", 0))
        if samples < 1:
            raise MlflowException(f"samples must be at least 1, got {samples}", INVALID_PARAMETER_VALUE)
        return generate_encoded(self.generator, self.card, mask, samples, seed, self.max_image_pixels)

    @staticmethod
    def _each(column: str, model_input: pd.DataFrame, answer, params: dict) -> list:
        """`answer(value, params)` for the value of `column` in every row; a row that cannot be used
        stops the request with what is wrong with it."""
        if column not in model_input.columns:
            raise MlflowException(f"the input needs a column '{column}' (file bytes; base64 in JSON), got "
                                  f"{list(model_input.columns)}", INVALID_PARAMETER_VALUE)
        answers = []
        for row, value in enumerate(model_input[column]):
            try:
                answers.append(answer(bytes(value), params))
            except BadFileError as err:
                raise MlflowException(f"row {row}: {err.reason}", INVALID_PARAMETER_VALUE) from None
        return answers


set_model(ServedModel())
