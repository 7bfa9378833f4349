"""How the tune stage searches: the search space as Ray Tune domains, Optuna's TPE, ASHA's rungs.

ASHA's rungs count from the end of the adversarial warm-up (train.adv_warmup_epochs): before it,
every trial trains the same supervised loss, whatever its λ_adv, and cutting trials then would
compare nothing the search is about.
"""

from __future__ import annotations

import math

from ganseg.config import Params, SearchDimension
from ganseg.dotted import get_dotted
from ganseg.errors import ParamsError

REDUCTION_FACTOR = 4  # ASHA keeps the top quarter at each rung; its rungs are 4x apart
WARMUP_KEY = "train.adv_warmup_epochs"
LAMBDA_KEY = "train.lambda_adv"


def to_domain(dimension: SearchDimension):
    from ray import tune

    if dimension.type == "choice":
        return tune.choice(dimension.values)
    if dimension.type == "uniform":
        return tune.uniform(dimension.low, dimension.high)
    if dimension.type == "loguniform":
        return tune.loguniform(dimension.low, dimension.high)
    return tune.randint(int(dimension.low), int(dimension.high))


def longest_warmup(params: Params) -> int:
    """The most supervised-only epochs a trial may have: train.adv_warmup_epochs, or the largest
    value the search space may give it."""
    dimension = params.tune.search_space.get(WARMUP_KEY)
    if dimension is None:
        return params.train.adv_warmup_epochs
    if dimension.type == "choice":
        numbers = [v for v in dimension.values if isinstance(v, (int, float))]
        return math.ceil(max(numbers, default=params.train.adv_warmup_epochs))
    return math.ceil(dimension.high) - (dimension.type == "randint")  # randint's high is left out


def first_rung(params: Params) -> int:
    """The epoch of ASHA's first rung (its grace period): tune.grace_period epochs after the warm-up."""
    return longest_warmup(params) + params.tune.grace_period


def asha_max_t(params: Params) -> int:
    """One past the last epoch: ASHA still stops weak trials early, but never kills a trial that
    is finishing on its own before its last epoch is logged."""
    return params.tune.epochs + 1


def check_rungs(params: Params) -> None:
    """Refuse a search whose first rung no trial reaches: ASHA would never compare trials."""
    first = first_rung(params)
    if first > params.tune.epochs:
        searched = " (the largest in tune.search_space)" if WARMUP_KEY in params.tune.search_space else ""
        raise ParamsError(
            f"tune.grace_period counts from the end of the adversarial warm-up: {WARMUP_KEY}"
            f" {longest_warmup(params)}{searched} + tune.grace_period {params.tune.grace_period} puts ASHA's"
            f" first comparison at epoch {first}, after the last of tune.epochs {params.tune.epochs};"
            " raise tune.epochs or lower tune.grace_period"
        )


def make_scheduler(params: Params):
    from ray.tune.schedulers import ASHAScheduler

    # time_attr epoch, not Tune's count of reports: the rungs are epochs, like the warm-up
    return ASHAScheduler(time_attr="epoch", max_t=asha_max_t(params), grace_period=first_rung(params),
                         reduction_factor=REDUCTION_FACTOR)


def first_points(params: Params) -> list[dict]:
    """The search's first trials: one for each λ_adv the space offers as a choice, every other
    dimension at its params value (brought into its range), so that each adversarial weight is
    tried at least once under the same settings; TPE proposes the trials after them."""
    space = params.tune.search_space
    weights = space.get(LAMBDA_KEY)
    if weights is None or weights.type != "choice":
        return []
    raw = params.model_dump()
    fixed = {key: _inside(get_dotted(raw, key), dim) for key, dim in space.items() if key != LAMBDA_KEY}
    return [fixed | {LAMBDA_KEY: weight} for weight in weights.values][: params.tune.num_samples]


def _inside(value, dimension: SearchDimension):
    """`value` if the dimension can take it, else the nearest value it can."""
    if dimension.type == "choice":
        return value if value in dimension.values else dimension.values[0]
    high = dimension.high - 1 if dimension.type == "randint" else dimension.high
    return min(max(value, dimension.low), high)


def startup_trials(params: Params) -> int:
    """Trials that TPE samples at random before its model proposes the rest: the first half, at
    most Optuna's own default of 10 (which would leave a small search all random)."""
    return min(10, max(1, params.tune.num_samples // 2))


def make_searcher(params: Params):
    """Optuna's TPE, seeded with params.seed; None for an empty search space, where every trial
    runs the params as they are."""
    if not params.tune.search_space:
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    quiet_optuna()
    sampler = optuna.samplers.TPESampler(seed=params.seed, n_startup_trials=startup_trials(params))
    return OptunaSearch(points_to_evaluate=first_points(params) or None, sampler=sampler)


def quiet_optuna() -> None:
    """No line per study on the console, from a new searcher or one Tune restores."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def max_concurrent(params: Params, use_gpu: bool) -> int:
    """Trials at a time: tune.max_concurrent_trials, or ("auto") as many as the cluster's GPUs (or
    CPUs) hold trials of tune.workers_per_trial workers."""
    import ray

    if params.tune.max_concurrent_trials != "auto":
        return params.tune.max_concurrent_trials
    available = ray.cluster_resources().get("GPU" if use_gpu else "CPU", 1)
    return max(1, int(available // params.tune.workers_per_trial))


def pick_best(scored: list[tuple[dict, float]], params: Params) -> int:
    """The index of the (config, score) the search picks: of the trials whose score lies within
    tune.tie_margin of the best, the one with the smallest λ_adv (a difference that small is noise,
    and the supervised baseline trains fastest), then the one with the best score."""
    sign = 1 if params.tune.mode == "max" else -1
    best = max(sign * score for _, score in scored)
    ties = [i for i, (_, score) in enumerate(scored) if sign * score >= best - params.tune.tie_margin]
    return min(ties, key=lambda i: (scored[i][0].get(LAMBDA_KEY, 0), -sign * scored[i][1]))


def search_space_record(params: Params) -> dict:
    """The search space as the parent run records it, beside the fixed settings of the search."""
    searcher = {"type": "none: empty search space, every trial runs the params as they are"}
    if params.tune.search_space:
        searcher = {"type": "optuna TPE", "seed": params.seed, "n_startup_trials": startup_trials(params),
                    "first_trials": first_points(params)}
    return {
        "search_space": {key: dim.model_dump(exclude_none=True) for key, dim in params.tune.search_space.items()},
        "num_samples": params.tune.num_samples,
        "epochs_per_trial": params.tune.epochs,
        "metric": params.tune.metric,
        "mode": params.tune.mode,
        "searcher": searcher,
        "scheduler": {"type": "ASHA", "time_attr": "epoch", "grace_period": first_rung(params),
                      "max_t": asha_max_t(params), "reduction_factor": REDUCTION_FACTOR},
    }


def summary(params: Params) -> str:
    """'4 trials: train.lambda_adv 0.0, 0.01, 0.03, 0.1, the rest as in params; ASHA compares trials
    from epoch 4', or with more trials than weights 'each train.lambda_adv of the space first (4
    trials), then optuna TPE (seed 42, the first 5 trial(s) at random); ...'."""
    searcher = "no search space"
    if params.tune.search_space:
        searcher = f"optuna TPE (seed {params.seed}, the first {startup_trials(params)} trial(s) at random)"
        points = first_points(params)
        if len(points) >= params.tune.num_samples:
            weights = ", ".join(str(point[LAMBDA_KEY]) for point in points)
            searcher = f"{len(points)} trials: {LAMBDA_KEY} {weights}, the rest as in params"
        elif points:
            searcher = f"each {LAMBDA_KEY} of the space first ({len(points)} trials), then {searcher}"
    return f"{searcher}; ASHA compares trials from epoch {first_rung(params)}"
