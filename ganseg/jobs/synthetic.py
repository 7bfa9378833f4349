"""The segmenter trained on real and generated pairs (the train_synthetic stage): the segmenter's
job with the last train.synthetic.share of every batch drawn by an image generator, one trained
before or (with joint) one trained alongside, whose state is then checkpointed too."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ganseg.config import Params
from ganseg.imagegen.evaluation import check_image_generator_fits_data
from ganseg.imagegen.export import load_image_generator
from ganseg.imagegen.training import build_state
from ganseg.jobs.segmenter import SegmenterJob
from ganseg.segmenter.evaluation import check_model_fits_data
from ganseg.segmenter.export import load_model

if TYPE_CHECKING:
    from ganseg.synthetic_pairs import GeneratedPairs

JOINT_FILE = "joint_image_generator.pt"  # train.synthetic.joint: the image generator trained alongside


class SyntheticJob(SegmenterJob):
    stage = "train_synthetic"

    def __init__(self, params: Params, data_dir: Path, options: dict):
        """options: image_generator and judge, the folders of the image generator and the judge segmenter."""
        super().__init__(params, data_dir)
        self.image_generator_dir, self.judge_dir = Path(options["image_generator"]), Path(options["judge"])

    def check_inputs(self) -> None:
        """The image generator and the judge were trained for this data's classes and channels."""
        check_model_fits_data(load_model(self.judge_dir)[1], self.stats, self.judge_dir, self.data_dir)
        check_image_generator_fits_data(load_image_generator(self.image_generator_dir)[1], self.stats,
                                        self.image_generator_dir, self.data_dir)

    def start(self, worker) -> dict:
        states = super().start(worker)
        joint = self.mixer.joint if self.mixer else None
        return ({JOINT_FILE: joint} if joint is not None else {}) | states  # the main state last: its RNG state counts

    def generated_pairs(self) -> GeneratedPairs | None:
        cfg, device = self.params.train.synthetic, self.worker.device
        if cfg.share == 0:
            return None
        from ganseg.synthetic_pairs import GeneratedPairs  # torchvision: 2 s to import, for the workers only

        judge = load_model(self.judge_dir)[0].to(device) if cfg.drop_disagreeing else None
        if cfg.joint:
            torch.manual_seed(self.params.seed)
            joint = build_state(self.params.imagegen, self.stats.num_classes, self.stats.channels, self.worker.place)
            return GeneratedPairs(cfg, self.stats.num_classes, joint=joint, imagegen=self.params.imagegen, judge=judge)
        generator = load_image_generator(self.image_generator_dir)[0].to(device)
        return GeneratedPairs(cfg, self.stats.num_classes, generator=generator, judge=judge)

    def run_key_parts(self) -> list:
        """The MLflow runs behind the image generator and the judge."""
        return [self.stage, {"image_generator": load_image_generator(self.image_generator_dir)[1].mlflow_run_id,
                             "judge": load_model(self.judge_dir)[1].mlflow_run_id}]
