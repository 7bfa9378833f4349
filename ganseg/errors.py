"""Mistakes a user can fix: the CLI prints their message alone, no traceback."""

from __future__ import annotations

from pydantic import ValidationError


class GansegError(Exception):
    """Bad params, data, model files or cluster size: the message says what is wrong and where."""


class ParamsError(GansegError, ValueError):
    """params.yaml (or an override) is not valid; the message names every offending key."""


class DataError(GansegError, ValueError):
    """The dataset folder, the split file or one of the files cannot be used; the message says which and why."""


class CheckpointError(GansegError, ValueError):
    """A checkpoint or model file cannot be loaded: the message names the file and what differs."""


SEGMENTER_ADVICE = "lower train.lr_g or train.lr_d, or train.lambda_adv"


class NonFiniteLossError(GansegError, ArithmeticError):
    """A loss became NaN or infinite; raised before the optimiser step it would ruin.

    The discriminator steps first: when its loss is the bad one, no weight has changed in that
    training step; when a generator loss is, the discriminator has already taken its step and only
    the generator's weights are spared.
    """

    def __init__(self, loss: str, value: float, epoch: int | None = None, step: int | None = None, note: str = "",
                 advice: str = SEGMENTER_ADVICE):
        super().__init__(loss, value, epoch, step, note, advice)  # all in args, so the error pickles back whole
        self.loss, self.value, self.epoch, self.step, self.note = loss, value, epoch, step, note
        self.advice = advice

    def __str__(self) -> str:
        where = ", ".join(f"{name} {n}" for name, n in (("epoch", self.epoch), ("step", self.step)) if n is not None)
        text = f"training stopped: {self.loss} is {self.value} at {where or 'a training step'} ({self.advice})"
        return f"{text}; {self.note}" if self.note else text


def require_finite(advice: str = SEGMENTER_ADVICE, step: int | None = None, **losses) -> None:
    """NonFiniteLossError for the first of `losses` (scalar tensors) that is NaN or infinite."""
    for name, loss in losses.items():
        if not bool(loss.isfinite().all()):
            raise NonFiniteLossError(name, loss.item(), step=step, advice=advice)


def invalid_fields(err: ValidationError) -> str:
    """One indented line per invalid key of a pydantic model: its dotted name, what is wrong, the value it got."""
    lines = []
    for e in err.errors():
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown key"
        # A check across a section names the values that clash; its input is the whole section.
        section_check = e["type"] == "value_error" and isinstance(e.get("input"), dict)
        if e["type"] != "missing" and not section_check:
            message += f" (got {e['input']!r})"
        key = ".".join(str(p) for p in e["loc"])
        lines.append(f"  {key}: {message}" if key else f"  {message}")
    return "\n".join(lines)
