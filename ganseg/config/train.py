"""params.yaml's model and train sections: the networks, their losses and how they are trained."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ganseg.config.base import Strict
from ganseg.errors import ParamsError


class ModelConfig(Strict):
    base_channels: int = Field(16, ge=4)
    depth: int = Field(3, ge=1, le=6, description="number of 2x down-samplings in the U-Net")
    norm: Literal["batch", "instance", "group", "none"] = "group"
    disc_channels: int = Field(32, ge=4)
    disc_layers: int = Field(3, ge=1, le=5)
    spectral_norm: bool = True
    disc_input: Literal["concat", "product"] = Field(
        "concat",
        description="concat: image ⊕ class probabilities; product: image × each class probability (Luc et al. 2016)",
    )


class SemiConfig(Strict):
    """Semi-supervised training (Hung et al. 2018): part of the training images is used without masks.

    On those images the discriminator's confidence map picks the pixels whose predicted class
    becomes a target for the segmenter. Active only with lambda_adv > 0 (it needs a discriminator).
    """

    label_fraction: float = Field(1.0, gt=0, le=1, description="share of training images whose masks are used")
    lambda_semi: float = Field(0.1, ge=0, description="weight of the self-taught cross-entropy")
    threshold: float = Field(0.2, ge=0, le=1, description="a pixel is trusted above this realness: the discriminator"
                             " score's place between its targets for predicted (0) and real (1) masks, in 0..1")
    start_epoch: int = Field(3, ge=1, description="first epoch with the self-taught loss; after adv_warmup_epochs")


class AugmentConfig(Strict):
    """Joint image/mask augmentation of training tiles (validation and test are never augmented)."""

    enabled: bool = True
    crop_scale: float = Field(1.0, gt=0, le=1, description="random crop of this share of the area or more, resized back")
    flips: bool = True
    rot90: bool = True
    affine_degrees: float = Field(0.0, ge=0, le=180)
    elastic_alpha: float = Field(0.0, ge=0, description="0 = no elastic deformation")
    brightness: float = Field(0.1, ge=0, le=1, description="image only")
    contrast: float = Field(0.1, ge=0, le=1, description="image only")


class MaskDeformConfig(Strict):
    """How labelled masks become new layouts for the image generator to draw (train.synthetic.masks deformed)."""

    affine_degrees: float = Field(20.0, ge=0, le=180, description="random rotation/shear (with 0.9-1.1 scale)")
    elastic_alpha: float = Field(30.0, ge=0, description="elastic warp strength; 0 = off")
    crop_scale: float = Field(1.0, gt=0, le=1, description="random crop of this share of the area or more, resized back"
                              " (1 = off: a zoom would change the width of structures)")
    mix: float = Field(0.5, ge=0, le=1, description="chance that a rectangle of another mask of the batch is pasted in")


class GeneratedPairsConfig(Strict):
    """Generated (image, mask) pairs in the segmenter's batches: masks from the labelled tiles (as they
    are, or deformed into new layouts), images drawn from them by the mask -> image generator."""

    share: float = Field(0.0, ge=0, le=1, description="share of each batch that is generated; 0 = off, 1 = generated only")
    weight: float = Field(1.0, ge=0, description="loss weight of the generated pairs against the real ones")
    masks: Literal["labelled", "deformed"] = Field("deformed", description="labelled: the batch's own masks;"
                                                   " deformed: warped, cropped and mixed with each other")
    deform: MaskDeformConfig = Field(default_factory=MaskDeformConfig)
    drop_disagreeing: bool = Field(False, description="void the pixels of a generated pair where the judge"
                                   " segmenter's class differs from the mask")
    joint: bool = Field(False, description="train the image generator with the segmenter, end to end (GenSeg-style),"
                        " instead of using a generator trained before")
    joint_lambda: float = Field(0.1, ge=0, description="joint: weight of the segmenter's cross-entropy on the"
                                " generated images in the generator's loss")
    start_epoch: int = Field(1, ge=1, description="first epoch with generated pairs (joint: the generator trains"
                             " from epoch 1 regardless)")


class FaultInjection(Strict):
    """Kill one worker process once, to exercise recovery (tests and drills, not production)."""

    kill_rank: int = Field(0, ge=0)
    at_epoch: int = Field(2, ge=2, description="killed as this epoch starts; the one before is checkpointed")


class RuntimeConfig(Strict):
    """How the training stages run, for the segmenter and the image generator alike. None of it changes
    what a stage produces, so no DVC stage depends on this section."""

    storage_path: str = Field("runs/ray", description="Ray Train storage (local folder, shared mount or URI)")
    checkpoints_to_keep: int = Field(2, ge=1, description="best k by validation score, plus the latest")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint; -1 = no limit")
    resume: bool = Field(True, description="continue an unfinished run of the same config (killed or interrupted)"
                         " instead of starting over")
    resume_failed: bool = Field(False, description="also continue a run of the same config that ended FAILED; it"
                                " restarts from its last checkpoint with the same random draws, so an error that"
                                " training raised (a non-finite loss) tends to come back")
    fault_injection: FaultInjection | None = None


class TrainConfig(Strict):
    epochs: int = Field(16, ge=1)
    batch_size: int = Field(8, ge=1, description="per worker")
    lr_g: float = Field(2e-3, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    lambda_adv: float = Field(0.05, ge=0, description="0 trains the supervised baseline")
    adv_loss: Literal["hinge", "vanilla", "lsgan", "segan"] = Field(
        "lsgan", description="hinge | vanilla | lsgan: patch scores; segan: multi-scale L1 feature critic (Xue et al.)"
    )
    adv_mask: Literal["soft", "straight_through", "gumbel"] = Field(
        "straight_through",
        description="the prediction the discriminator sees: softmax, one-hot of its classes (straight-through "
        "gradient) or a Gumbel-softmax draw",
    )
    real_noise: float = Field(0.0, ge=0, description="true masks: one-hot + U(0, real_noise) per class, renormalised")
    instance_noise: float = Field(
        0.0, ge=0, description="std of Gaussian noise on both masks the discriminator sees, annealed to 0"
    )
    dice_weight: float = Field(1.0, ge=0)
    adv_warmup_epochs: int = Field(2, ge=0, description="supervised-only epochs before the adversarial term starts")
    class_weights: Literal["none", "inverse_sqrt"] | list[float] = Field(
        "none",
        description="cross-entropy and Dice weight per class: none, inverse_sqrt (of the training pixel share), or a list",
    )
    ema_decay: float = Field(
        0.99, ge=0, lt=1,
        description="exponential moving average of the segmenter (warmed up: min(decay, (1 + n) / (10 + n))"
        " after n updates); 0 = off",
    )
    semi: SemiConfig = Field(default_factory=SemiConfig)
    synthetic: GeneratedPairsConfig = Field(default_factory=GeneratedPairsConfig)
    num_workers: int | Literal["auto"] = Field("auto", description="Ray Train workers; auto = GPUs or CPUs")
    use_gpu: bool | Literal["auto"] = "auto"
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp16 needs a GPU")
    channels_last: bool = Field(False, description="channels_last memory format; on CPUs often slower (the train"
                                " stage probes and warns)")
    compile: bool = Field(False, description="torch.compile both networks: compile time at the start of every"
                          " run (ganseg bench throughput measures both)")

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, value):
        if isinstance(value, list) and (not value or any(w < 0 for w in value) or not any(w > 0 for w in value)):
            raise ValueError("a list of class weights must hold one non-negative number per class, not all 0")
        return value

    @model_validator(mode="after")
    def _semi_needs_patch_scores(self) -> "TrainConfig":
        if self.adv_loss == "segan" and self.semi.label_fraction < 1 and self.lambda_adv > 0:
            raise ValueError(
                "train.semi needs a discriminator that scores patches (adv_loss hinge, vanilla or lsgan), not segan"
            )
        return self

    @field_validator("num_workers")
    @classmethod
    def _positive_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 (or 'auto')")
        return value

    def check_device(self, use_gpu: bool) -> None:
        """precision fp16 needs GPU workers (`use_gpu`: as resolved against the cluster)."""
        if self.precision == "fp16" and not use_gpu:
            raise ParamsError("train.precision: fp16 needs GPU workers; use bf16 or fp32 on CPUs")
