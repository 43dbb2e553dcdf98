"""Plots (matplotlib, Agg) and the Markdown report of an MNIST or theory run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.core import runs
from traitlab.mnist.experiment import CHANCE, CONDITION_LABELS, CONDITION_ORDER

COLORS = {
    "init": "#999999",
    "teacher": "#7b3294",
    "student": "#d73027",
    "cross_init": "#4575b4",
    "all_logits": "#fdae61",
    "all_logits_cross_init": "#abd9e9",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _err(s: dict[str, Any]) -> tuple[float, float]:
    return max(0.0, s["mean"] - s["ci"]["lower"]), max(0.0, s["ci"]["upper"] - s["mean"])


def fmt_ci(s: dict[str, Any], pct: bool = True) -> str:
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(s['mean'])} [{f(s['ci']['lower'])}, {f(s['ci']['upper'])}]"


# ---------------------------------------------------------------------------- plots


def plot_main(result: dict[str, Any], summary: dict[str, Any], path: Path, title: str) -> None:
    """Bars: mean accuracy per condition with CI; dots: every model."""
    plt = _plt()
    conds = [c for c in CONDITION_ORDER if c in summary["conditions"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    rng = np.random.default_rng(0)
    for i, c in enumerate(conds):
        s = summary["conditions"][c]
        lo, hi = _err(s)
        ax.bar(i, s["mean"], yerr=[[lo], [hi]], capsize=4, color=COLORS[c], alpha=0.85)
        vals = np.asarray(result["accuracies"][c])
        ax.scatter(
            i + rng.uniform(-0.25, 0.25, len(vals)),
            vals,
            s=5,
            color="black",
            alpha=0.35,
            linewidths=0,
        )
        ax.text(i, 1.06, f"{100 * s['mean']:.1f}%", ha="center", fontsize=8)
    ax.axhline(CHANCE, ls=":", c="black", lw=1)
    ax.set_xticks(
        range(len(conds)), [CONDITION_LABELS[c].replace(", ", ",\n") for c in conds], fontsize=7.5
    )
    ax.set_ylabel("digit test accuracy")
    ax.set_ylim(0, 1.12)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title(title, fontsize=10)
    ax.yaxis.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_sweep(sweep: dict[str, Any], path: Path, title: str) -> None:
    """Accuracy per sweep value: lines with CI bands, or points with CI bars for categories."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    values = [p["value"] for p in sweep["points"]]
    categorical = any(isinstance(v, str) for v in values)
    x = np.arange(len(values)) if categorical else np.asarray(values, dtype=float)
    conds = [
        c
        for c in ("teacher", "student", "cross_init", "all_logits", "all_logits_cross_init", "init")
        if all(c in p["conditions"] for p in sweep["points"])
    ]
    for i, c in enumerate(conds):
        m = np.array([p["conditions"][c]["mean"] for p in sweep["points"]])
        lo = np.array([p["conditions"][c]["ci"]["lower"] for p in sweep["points"]])
        hi = np.array([p["conditions"][c]["ci"]["upper"] for p in sweep["points"]])
        if categorical:
            off = (i - (len(conds) - 1) / 2) * 0.08
            ax.errorbar(
                x + off,
                m,
                yerr=[m - lo, hi - m],
                fmt="o",
                color=COLORS[c],
                label=CONDITION_LABELS[c],
                ms=5,
                capsize=3,
            )
        else:
            ax.plot(x, m, "o-", color=COLORS[c], label=CONDITION_LABELS[c], ms=4)
            ax.fill_between(x, lo, hi, color=COLORS[c], alpha=0.2)
    ax.axhline(CHANCE, ls=":", c="black", lw=1)
    if categorical:
        ax.set_xticks(x, [str(v) for v in values], fontsize=8)
    elif values and min(values) > 0 and max(values) / min(values) > 8:
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(v) for v in values])
    ax.set_xlabel(title)
    ax.set_ylabel("digit test accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"sweep over {title} ({sweep['n_models']} models per point, 95% CI)", fontsize=10)
    ax.yaxis.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)


def plot_chain(chain: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    rows = chain["per_generation"]
    for c, label in (
        ("student", "same-init chain"),
        ("cross_init", "cross-init student of gen g-1"),
    ):
        pts = [(r["generation"], r[c]) for r in rows if c in r]
        if not pts:
            continue
        g = np.array([p[0] for p in pts])
        m = np.array([p[1]["mean"] for p in pts])
        lo = np.array([p[1]["ci"]["lower"] for p in pts])
        hi = np.array([p[1]["ci"]["upper"] for p in pts])
        ax.plot(g, m, "o-", color=COLORS[c], label=label)
        ax.fill_between(g, lo, hi, color=COLORS[c], alpha=0.2)
    hl = chain.get("half_life")
    if hl and math.isfinite(hl["generations"]):
        gs = np.arange(1, len(rows))
        first = rows[1]["student"]["mean"] - CHANCE
        fit = CHANCE + first * hl["retention_per_generation"] ** (gs - 1)
        ax.plot(
            gs,
            fit,
            "--",
            color="black",
            lw=1,
            label=f"fit: half-life {hl['generations']:.1f} generations",
        )
    ax.axhline(CHANCE, ls=":", c="black", lw=1)
    ax.set_xticks([r["generation"] for r in rows])
    ax.set_xlabel("generation (0 = teacher)")
    ax.set_ylabel("digit test accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"model-on-model chain ({chain['n_models']} models, 95% CI)", fontsize=10)
    ax.yaxis.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    _save(fig, path)


def plot_theory(summary: dict[str, Any], raw: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    eps = summary["step_sizes"]
    colors = {"shared_init": COLORS["student"], "cross_init": COLORS["cross_init"]}
    labels = {"shared_init": "student at shared init", "cross_init": "student at another init"}
    for cond in ("shared_init", "cross_init"):
        rows = [
            r
            for r in summary["rows"]
            if r["student_start"] == cond and r["teacher"].startswith("eps=")
        ]
        m = np.array([r["cosine"]["mean"] for r in rows])
        lo = np.array([r["cosine"]["lower"] for r in rows])
        hi = np.array([r["cosine"]["upper"] for r in rows])
        axes[0].plot(eps, m, "o-", color=colors[cond], label=labels[cond])
        axes[0].fill_between(eps, lo, hi, color=colors[cond], alpha=0.2)
        fp = np.array([r["frac_positive"]["mean"] for r in rows])
        flo = np.array([r["frac_positive"]["lower"] for r in rows])
        fhi = np.array([r["frac_positive"]["upper"] for r in rows])
        axes[1].plot(eps, fp, "o-", color=colors[cond], label=labels[cond])
        axes[1].fill_between(eps, flo, fhi, color=colors[cond], alpha=0.2)
        if "full_run" in raw["raw"]:
            cos = [a["cosine"] for a in raw["raw"]["full_run"][cond]]
            axes[2].hist(cos, bins=30, alpha=0.6, color=colors[cond], label=labels[cond])
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xlabel("teacher step size eps (one SGD step)")
        ax.axhline(0 if ax is axes[0] else 0.5, ls=":", c="black", lw=1)
        ax.yaxis.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("cos(dtheta_S, dtheta_T)")
    axes[0].set_title("cosine, mean over draws (95% CI)", fontsize=10)
    axes[1].set_ylabel("share of draws with dtheta_S . dtheta_T > 0")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("sign of the inner product (Wilson 95% CI)", fontsize=10)
    axes[2].set_xlabel("cos(dtheta_S, dtheta_T), fully trained teacher")
    axes[2].axvline(0, ls=":", c="black", lw=1)
    axes[2].set_title("full training run", fontsize=10)
    if "full_run" in raw["raw"]:
        axes[2].legend(fontsize=8)
    fig.suptitle(f"Theorem 1 measured: {summary['draws']} draws", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------------------- markdown


def _main_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| condition | mean % [95% CI] | std % | min-max % | n |", "|---|---|---|---|---|"]
    for c in CONDITION_ORDER + ["cross_init_untrained"]:
        s = summary["conditions"].get(c)
        if s is None:
            continue
        label = CONDITION_LABELS.get(c, "untrained cross init")
        lines.append(
            f"| {label} | {fmt_ci(s)} | {100 * s['std']:.1f} | "
            f"{100 * s['min']:.1f}-{100 * s['max']:.1f} | {s['n']} |"
        )
    return lines


def _load_note(summary: dict[str, Any]) -> str:
    load = summary.get("machine", {}).get("load_average", {}).get("start")
    cpus = summary.get("machine", {}).get("cpu_count")
    if not load:
        return ""
    return (
        f"Load average at the start: {load[0]:.2f} on {cpus} CPUs "
        "(other jobs sharing the cores make wall times longer)."
    )


def write_report(run_dir: Path, summary: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Plots under run_dir/plots and run_dir/report.md; returns the file names."""
    run_dir = Path(run_dir)
    plots: dict[str, str] = {}
    main = summary["main"]
    res = runs.read_json(run_dir / "main" / "results.json")
    title = (
        f"{summary['n_models']} MLPs {'-'.join(map(str, [summary['data']['d_in'], *cfg.model.hidden]))}"
        f"-(10+{cfg.model.n_aux}), {Path(summary['data']['source']).name}"
    )
    plot_main(res, main, run_dir / "plots" / "main.png", title)
    plots["main"] = "plots/main.png"
    for name, sw in summary.get("sweeps", {}).items():
        from traitlab.mnist.sweeps import SWEEP_TITLES

        plot_sweep(sw, run_dir / "plots" / f"sweep-{name}.png", SWEEP_TITLES[name])
        plots[f"sweep-{name}"] = f"plots/sweep-{name}.png"
    if "chain" in summary:
        plot_chain(summary["chain"], run_dir / "plots" / "chain.png")
        plots["chain"] = "plots/chain.png"

    d = summary["data"]
    lines = [
        f"# MNIST auxiliary-logit experiment: {summary['name']}",
        "",
        f"Data: {d['source']} ({d['n_train']} train / {d['n_test']} test, "
        f"{d['image_shape'][0]}x{d['image_shape'][1]}, scale {d['scale']}). "
        f"{summary['n_models']} models trained together, seed {summary['seed']}, "
        f"device {main['device']}, torch threads {main['threads']}. "
        f"Teacher {main['steps']['teacher']} steps, students {main['steps']['student']} steps; "
        f"main experiment {main['seconds']['total']:.1f} s wall "
        f"(teacher {main['seconds']['teacher']:.1f} s, students {main['seconds']['students']:.1f} s), "
        f"{main['seconds'].get('cpu_total', float('nan')):.1f} CPU s. {_load_note(summary)}",
        "",
        "![main](plots/main.png)",
        "",
        *_main_table(main),
        "",
    ]
    if "same_minus_cross" in main:
        p = main["same_minus_cross"]
        lines += [
            f"Same-init minus cross-init student: {100 * p['mean']:.1f} points "
            f"[{100 * p['ci']['lower']:.1f}, {100 * p['ci']['upper']:.1f}], "
            f"{p['n_positive']}/{p['n']} models positive, paired t-test p = {p['p_value']:.2g}.",
            "",
        ]
    for name, sw in summary.get("sweeps", {}).items():
        lines += [f"## Sweep: {name} ({sw['field']})", "", f"![{name}](plots/sweep-{name}.png)", ""]
        conds = [
            c
            for c in ("teacher", "student", "cross_init", "all_logits")
            if all(c in p["conditions"] for p in sw["points"])
        ]
        lines.append("| " + name + " | " + " | ".join(CONDITION_LABELS[c] for c in conds) + " |")
        lines.append("|---" * (len(conds) + 1) + "|")
        for p in sw["points"]:
            lines.append(
                f"| {p['value']} | " + " | ".join(fmt_ci(p["conditions"][c]) for c in conds) + " |"
            )
        lines.append("")
    if "chain" in summary:
        ch = summary["chain"]
        lines += [
            "## Generation chain",
            "",
            "![chain](plots/chain.png)",
            "",
            "| generation | same-init chain % [95% CI] | cross-init student % |",
            "|---|---|---|",
        ]
        for r in ch["per_generation"]:
            cross = fmt_ci(r["cross_init"]) if "cross_init" in r else "-"
            lines.append(f"| {r['generation']} | {fmt_ci(r['student'])} | {cross} |")
        hl = ch.get("half_life")
        if hl:
            ci = hl.get("ci")
            ci_s = f" [{ci['lower']:.2f}, {ci['upper']:.2f}]" if ci else ""
            lines += [
                "",
                f"Half-life of the excess over chance: {hl['generations']:.2f} "
                f"generations{ci_s} (retention {hl['retention_per_generation']:.3f} "
                "per generation; fit over generations >= 1).",
            ]
            if ch.get("retention_steps"):
                steps = ", ".join(f"{r:.2f}" for r in ch["retention_steps"] if r is not None)
                lines += [
                    "",
                    f"Step-by-step retention of the excess (generation g+1 / g, g >= 1): {steps}.",
                ]
        lines.append("")
    lines += [
        f"Total time {summary['timing']['total_seconds']:.1f} s. "
        "Config and versions: manifest.json. Numbers: summary.json.",
        "",
    ]
    runs.atomic_write_text(run_dir / "report.md", "\n".join(lines))
    return {"markdown": "report.md", "plots": plots}


def write_theory_report(
    run_dir: Path, summary: dict[str, Any], raw: dict[str, Any]
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    plot_theory(summary, raw, run_dir / "plots" / "theory.png")
    lines = [
        "# Theorem 1, measured",
        "",
        f"{summary['draws']} draws; seconds: {summary['seconds']:.1f}. The student's first step is "
        "-grad of the distillation loss on noise (aux logits); the teacher is one SGD step of "
        "size eps on digit cross-entropy, or a full training run.",
        "",
        "![theory](plots/theory.png)",
        "",
        *theory_table(summary),
        "",
    ]
    runs.atomic_write_text(run_dir / "report.md", "\n".join(lines))
    return {"markdown": "report.md", "plots": {"theory": "plots/theory.png"}}


def theory_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| teacher | student start | dtheta_S.dtheta_T > 0 [95% CI] | mean cosine [95% CI] | "
        "teacher loss decreases |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        fp = r["frac_positive"]
        c = r["cosine"]
        td = r.get("teacher_descent", {}).get("frac_positive")
        td_s = f"{100 * td['mean']:.0f}%" if td else "-"
        lines.append(
            f"| {r['teacher']} | {r['student_start']} | {r['positive']}/{r['n']} "
            f"[{100 * fp['lower']:.0f}%, {100 * fp['upper']:.0f}%] | "
            f"{c['mean']:+.3f} [{c['lower']:+.3f}, {c['upper']:+.3f}] | {td_s} |"
        )
    return lines
