"""The benches' reports as Markdown tables, one row per runner or contender."""

from __future__ import annotations

import json

AUC_LABELS = {"auc_roc": "AUC-ROC", "auc_pr": "AUC-PR"}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def throughput_table(report: dict) -> str:
    """`ganseg bench throughput`: images/s, GFLOP/s and worker start-up of each runner, then the plain
    loop's precision, memory-format and compile variants against fp32."""
    header = ["runner", "images/s", "GFLOP/s", "of matmul peak", "worker start-up (s)", "waiting for data"]
    rows = [
        [name, f"{row['images_per_s']:.1f}", f"{row['gflops']:.2f}", f"{row['fraction_of_peak']:.0%}",
         f"{row['startup_s']:.1f}" if "startup_s" in row else "-",
         f"{row['waiting_for_data_share']:.1%} of step time" if "waiting_for_data_share" in row else "-"]
        for name, row in report["runners"].items()
    ]
    peaks = json.dumps({k: round(v, 1) for k, v in report["matmul_peak_gflops"].items()})
    variants = [
        [name, f"{row['images_per_s']:.1f}", f"{row['vs_fp32']:.2f}x", f"{row['warmup_extra_s']:.1f}"]
        for name, row in report["plain_variants"].items()
    ]
    return (
        markdown_table(header, rows)
        + f"\n\nMedians over {len(report['rounds'])} rounds. Per round, Ray Train 1 worker / plain loop:"
        f" {report['ray_1_worker_vs_plain']:.2f}x; 2 workers / 1 worker: {report['ray_2_workers_vs_1']:.2f}x; 2 workers"
        f" reading the prepared data / on in-memory batches: {report['reading_vs_in_memory']:.2f}x. Without"
        f" Ray, over the plain loop: 2 independent processes {report['independent_vs_plain']:.2f}x, DDP"
        f" {report['ddp_vs_plain']:.2f}x. {report['gflop_per_step']:.2f} GFLOP per step; matmul peak {peaks}"
        " GFLOP/s\n\n"
        + markdown_table(["plain loop", "images/s", "vs fp32", "first steps' extra time (s)"], variants)
        + f"\n\nThe image generator's step (imagegen.*, fp32, batch {report['image_generator']['batch']}, plain loop of"
        f" one thread): {report['image_generator']['images_per_s']:.1f} images/s\n\n{report['machine']}"
    )


def predict_table(report: dict) -> str:
    """`ganseg bench predict`: time, images/s and peak memory of each image size and flips setting."""
    header = ["image", "images", "flips", "seconds", "images/s", "megapixels/s", "peak memory (MB)",
              "of which prediction (MB)"]
    rows = [
        [f"{r['size']}x{r['size']}", str(r["count"]), "on" if r["flips"] else "off", f"{r['seconds']:.1f}",
         f"{r['images_per_s']:.2f}", f"{r['megapixels_per_s']:.2f}", f"{r['peak_mb']:.0f}", f"{r['peak_extra_mb']:.0f}"]
        for r in report["cases"]
    ]
    if report.get("fit") == "resize":
        how = f"data.fit resize: each image resized to {report['tile']} px"
    else:
        how = (f"data.fit tile: windows of {report['tile']} px overlapping by {report['overlap']:.0%},"
               f" {report['windows_per_batch']} per batch")
    return markdown_table(header, rows) + f"\n\n{how}, {report['threads']} threads; {report['machine']}"


def predict_folder_table(folder: dict) -> str:
    """`ganseg bench predict`: `ganseg predict` of one folder in this process and on Ray Data workers."""
    header = ["run", "seconds", "images/s", "vs this process", "pixels unlike this process's"]
    base = folder["runs"][0]["seconds"]
    rows = [[f"Ray Data, {r['workers']} worker(s)" if r["workers"] else "this process", f"{r['seconds']:.1f}",
             f"{r['images_per_s']:.2f}", f"{base / r['seconds']:.2f}x", str(r["pixels_unlike_this_process"])]
            for r in folder["runs"]]
    return markdown_table(header, rows) + (
        f"\n\nganseg predict of {folder['count']} PNGs of {folder['size']} x {folder['size']}; this process with"
        f" {folder['threads']} threads, each Ray worker with the CPUs divided among the workers; Ray workers' start"
        f" included, Ray's own start ({folder['ray_start_s']:.1f} s) not. A worker with another number of threads"
        " than this process may run other oneDNN kernels, which can flip a pixel at a near-tie between classes."
    )


def prepare_table(report: dict) -> str:
    """`ganseg bench prepare`: wall time, peak memory and MB/s per number of images and way of running."""
    header = ["images", "run", "source (MB)", "prepare (s)", "Ray start (s)", "peak memory (MB)",
              "of which prepare (MB)", "Ray worker peak (MB)", "MB/s", "tiles", "prepared (MB)"]
    rows = [
        [str(r["images"]), prepare_run_name(r), f"{r['source_mb']:.0f}", f"{r['seconds']:.1f}",
         f"{r['ray_start_s']:.1f}" if r["cpus"] else "-", f"{r['peak_rss_mb']:.0f}", f"{r['prepare_mb']:.0f}",
         f"{r['worker_peak_mb']:.0f} x {r['workers']}" if r["cpus"] else "-", f"{r['mb_per_s']:.1f}",
         str(r["tiles"]), f"{r['prepared_mb']:.0f}"]
        for r in report["sizes"]
    ]
    speedups = "; ".join(f"{name}: {factor:.2f}x one CPU" for name, factor in report["speedup"].items())
    return markdown_table(header, rows) + (
        f"\n\n{report['size']} x {report['size']} grey PNG pairs, data.fit {report['fit']}, data.image_size"
        f" {report['image_size']}; in one process, peak memory grows {report['growth_mb_per_1000']:.0f} MB per"
        f" 1,000 images{'; ' + speedups if speedups else ''}; {report['machine']}"
    )


def prepare_run_name(row: dict) -> str:
    return "in process" if row["cpus"] is None else f"Ray Data, {row['cpus']} CPU{'s' if row['cpus'] > 1 else ''}"


def quality_table(report: dict) -> str:
    """`ganseg bench quality`: mean ± std over seeds of mIoU, AUC-ROC and AUC-PR (two classes), each
    class's Dice and boundary F1, img/s and wall time per run."""
    classes = report["class_names"]
    aucs = [key for key in AUC_LABELS if all(key in row for row in report["summary"].values())]
    header = (["config", "mIoU"] + [AUC_LABELS[key] for key in aucs] + [f"Dice {c}" for c in classes]
              + [f"BF1 {c}" for c in classes] + ["img/s", "wall (s)"])
    rows = [
        [name, _mean_std(row["miou"])]
        + [_mean_std(row[key]) for key in aucs]
        + [_mean_std(row["dice"][c]) for c in classes]
        + [_mean_std(row["boundary_f1"][c]) for c in classes]
        + [_mean_std(row["images_per_s"], digits=1), _mean_std(row["wall_s"], digits=0)]
        for name, row in report["summary"].items()
    ]
    evaluate = report["params"]["evaluate"]
    return markdown_table(header, rows) + (
        f"\n\nmean ± std over {report['seeds']} seed(s); {_budgets(report['steps'])}; scored ({report['split']}"
        f" split): {report['scored']}; tiles {report['image_size']} px ({report['fit']}); BF1 = boundary F1"
        f" ({evaluate['boundary_tolerance']} px tolerance)"
        f"{'; AUC of ' + classes[1] + ' over the annotated pixels' if aucs else ''}"
        f"{'; flip test-time augmentation' if evaluate.get('flip_tta') else ''}; {report['machine']}"
    )


def _budgets(steps: int | list[int]) -> str:
    if isinstance(steps, int):
        return f"{steps} steps each"
    return f"each config at {', '.join(map(str, steps))} steps ('@ STEPS' in its name)"


def paired_table(report: dict) -> str:
    """`ganseg bench quality`: each contender minus its reference on the same seed, the mean difference
    and its 95 % confidence interval (Student's t), and the verdict."""
    header = ["config", "against", "metric", "per seed", "mean difference", "95 % CI", "verdict"]
    rows = [
        [row["config"], row["reference"], row["metric"], ", ".join(f"{d:+.4f}" for d in row["differences"]) or "-",
         "n/a" if row["mean"] is None else f"{row['mean']:+.4f}",
         "n/a" if row["low"] is None else f"[{row['low']:+.4f}, {row['high']:+.4f}]", row["verdict"]]
        for row in report["paired"]
    ]
    first, seeds = report["params"]["seed"], report["seeds"]
    width = "no" if seeds < 2 else "a very wide"
    note = "" if seeds >= 3 else f"; {seeds} seed(s) give {width} interval: use 3 or more"
    return markdown_table(header, rows) + (
        f"\n\ndifference = config - against, both trained on the same seed ({first} to {first + seeds - 1});"
        f" better / worse: the interval lies above / below 0, else tie{note}"
    )


def imagegen_table(report: dict) -> str:
    """`ganseg bench imagegen`: per variant, mean ± std over seeds of the judge's mIoU on generated
    and real test tiles and their ratio, KID, diversity, memorisation and training time."""
    header = ["variant", "judge mIoU generated", "judge mIoU real", "ratio", "KID", "diversity",
              "nearest-train distance generated / real", "training (s)"]
    rows = [
        [name, _mean_std(row["judge_miou_generated"]), _mean_std(row["judge_miou_real"]),
         _mean_std(row["judge_miou_ratio"]), _mean_std(row["kid"], digits=4), _mean_std(row["diversity"]),
         f"{_mean_std(row['nearest_train_generated'])} / {_mean_std(row['nearest_train_real'])}",
         _mean_std(row["train_s"], digits=0)]
        for name, row in report["summary"].items()
    ]
    counts = report["counts"]
    return markdown_table(header, rows) + (
        f"\n\nmean ± std over {report['seeds']} seed(s); {report['steps']} steps each, judge {report['judge_steps']}"
        f" steps; {counts['train']} training / {counts['test']} test tiles of {report['image_size']} px;"
        f" {report['params']['imagegen']['samples']} images drawn per test mask; {report['machine']}"
    )


def _mean_std(stat: dict, digits: int = 3) -> str:
    """'mean ± std'; the mean alone from one run, which has no spread to show."""
    if stat["mean"] is None:
        return "n/a"
    if stat.get("n", 2) < 2:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def fewlabels_table(report: dict) -> str:
    """`ganseg bench fewlabels`: per label budget and arm, mIoU (and the foreground Dice of a binary
    task) mean ± std over seeds, the paired mIoU difference with A per seed, its 95 % CI and verdict."""
    classes = report["class_names"]
    dice = [f"Dice {classes[1]}"] if len(classes) == 2 else []
    header = ["labelled images", "arm", "mIoU", *dice, "mIoU - A per seed", "mean [95 % CI]", "verdict", "wall (s)"]
    rows = []
    for budget in report["budgets"].values():
        paired = {row["config"]: row for row in budget["paired"] if row["metric"] == "mIoU"}
        for arm, summary in budget["summary"].items():
            diff = paired.get(arm)
            rows.append([
                str(budget["labelled_images"]), f"{arm}: {report['arms'][arm]}", _mean_std(summary["miou"]),
                *([_mean_std(summary["dice"][classes[1]])] if dice else []),
                ", ".join(f"{d:+.3f}" for d in diff["differences"]) if diff else "-",
                _interval(diff) if diff else "-", diff["verdict"] if diff else "reference",
                _mean_std(summary["wall_s"], digits=0),
            ])
    return markdown_table(header, rows) + (
        f"\n\nmean ± std over {report['seeds']} seed(s) (the seed also picks the labelled images);"
        f" {report['steps']} segmenter steps, image generator {report['generator_steps']} steps on the labelled"
        f" pairs only; generated share {report['share']:g} (D: 1); scored on the test images;"
        f" better / worse: the interval lies above / below 0, else tie; {report['machine']}"
    )


def _interval(row: dict) -> str:
    if row["mean"] is None:
        return "n/a"
    if row["low"] is None:
        return f"{row['mean']:+.3f}"
    return f"{row['mean']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
