"""The benches' reports as Markdown tables, one row per runner or contender."""

from __future__ import annotations

import json


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def throughput_table(report: dict) -> str:
    """`ganseg bench throughput`: images/s, GFLOP/s and worker start-up of each runner."""
    header = ["runner", "images/s", "GFLOP/s", "of matmul peak", "worker start-up (s)"]
    rows = [
        [name, f"{row['images_per_s']:.1f}", f"{row['gflops']:.2f}", f"{row['fraction_of_peak']:.0%}",
         f"{row['startup_s']:.1f}" if "startup_s" in row else "-"]
        for name, row in report["runners"].items()
    ]
    peaks = json.dumps({k: round(v, 1) for k, v in report["matmul_peak_gflops"].items()})
    return markdown_table(header, rows) + (
        f"\n\nRay Train 1 worker / plain loop: {report['ray_1_worker_vs_plain']:.2f}x; "
        f"{report['gflop_per_step']:.2f} GFLOP per step; matmul peak {peaks} GFLOP/s"
    )


def quality_table(report: dict) -> str:
    """`ganseg bench quality`: mean ± std over seeds of mIoU, each class's Dice and boundary F1, img/s."""
    classes = report["class_names"]
    header = ["config", "mIoU"] + [f"Dice {c}" for c in classes] + [f"BF1 {c}" for c in classes] + ["img/s"]
    rows = [
        [name, _mean_std(row["miou"])]
        + [_mean_std(row["dice"][c]) for c in classes]
        + [_mean_std(row["boundary_f1"][c]) for c in classes]
        + [_mean_std(row["images_per_s"], digits=1)]
        for name, row in report["summary"].items()
    ]
    evaluate = report["params"]["evaluate"]
    return markdown_table(header, rows) + (
        f"\n\nmean ± std over {report['seeds']} seed(s); {report['steps']} steps each; test: {report['test_images']}"
        f" images at full size; tiles {report['image_size']} px ({report['fit']}); BF1 = boundary F1"
        f" ({evaluate['boundary_tolerance']} px tolerance)"
        f"{'; flip test-time augmentation' if evaluate.get('flip_tta') else ''}; {report['machine']}"
    )


def _mean_std(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
