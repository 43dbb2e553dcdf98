"""Reports: a plot of trait rates with intervals, Markdown and HTML (model text escaped)."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from traitlab.config import ExperimentConfig
from traitlab.core import runs
from traitlab.core.html import esc, page, table
from traitlab.experiments.arms import ARM_LABELS, ARMS, COMPARISONS
from traitlab.experiments.compare import kept_first_check
from traitlab.experiments.layout import RunLayout

PLOT_ARMS = tuple(a.name for a in ARMS if a.colour)
METHOD_LABELS = {
    "exact": "exact P(answer = target)",
    "sampled": "sampled rate (substring)",
    "judged": "misaligned share (judged)",
}


def _misaligned(summary: dict[str, Any]) -> bool:
    return bool(summary.get("trait", {}).get("kind") == "misalignment")


def method_label(method: str, summary: dict[str, Any]) -> str:
    """The column title of a method's rates (exact misalignment is a summed probability)."""
    if method == "exact" and _misaligned(summary):
        return "exact P(misaligned answer)"
    return METHOD_LABELS.get(method, method)


def plot_rates(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = summary["methods"]
    arms = [a for a in PLOT_ARMS if a in summary["arms"]]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.8), squeeze=False)
    colors = {a.name: a.colour for a in ARMS}
    for ax, m in zip(axes[0], methods, strict=True):
        ys, lo, hi, names = [], [], [], []
        for a in arms:
            s = summary["arms"][a].get(m)
            if s is None:
                continue
            ys.append(s["mean"])
            lo.append(max(0.0, s["mean"] - s["ci"]["lower"]))
            hi.append(max(0.0, s["ci"]["upper"] - s["mean"]))
            names.append(a)
        x = range(len(ys))
        ax.bar(x, ys, yerr=[lo, hi], capsize=4, color=[colors[a] for a in names])
        ax.set_xticks(list(x), [ARM_LABELS[a].replace(" ", "\n", 1) for a in names], fontsize=8)
        ax.set_title(method_label(m, summary), fontsize=10)
        target = "misaligned" if _misaligned(summary) else summary["trait"]["target"]
        ax.set_ylabel(f"P({target})")
        top = max(ys) if ys else 1.0
        ax.set_ylim(0, min(1.05, top * 1.25 + 0.02) if top < 0.5 else 1.05)
        for i, y in enumerate(ys):
            ax.text(i, y, f"{y:.3f}", ha="center", va="bottom", fontsize=7)
    trait = summary["trait"]
    what = "misalignment" if _misaligned(summary) else f"{trait['category']} = {trait['target']}"
    fig.suptitle(f"{summary['name']}: {what} ({len(summary['seeds'])} seeds, 95% CI)", fontsize=10)
    fig.tight_layout()
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.png")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fig.savefig(tmp, dpi=120)
        os.chmod(tmp, runs.FILE_MODE)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def fmt_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def _fmt_ci(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.3f} [{s['ci']['lower']:.3f}, {s['ci']['upper']:.3f}]"


def rate_table(summary: dict[str, Any]) -> list[list[str]]:
    """Rows of (arm, per-method 'mean [lo, hi]') for terminal and Markdown tables."""
    rows = []
    for s in summary["arms"].values():
        rows.append([s["label"]] + [_fmt_ci(s.get(m)) for m in summary["methods"]])
    return rows


def comparison_lines(summary: dict[str, Any]) -> list[str]:
    out = []
    names = {name: label for name, _, _, label in COMPARISONS}
    for name, per in summary["comparisons"].items():
        for m, t in per.items():
            d = t["diff"]
            out.append(
                f"{names.get(name, name)} ({m}): {d['mean']:+.4f} "
                f"[{d['lower']:+.4f}, {d['upper']:+.4f}], p = {fmt_p(t['p_value'])} "
                f"({t['method']}, {t['n_positive']}/{t['n']} seeds > 0; questions > 0: "
                f"{t['questions']['n_positive']}/{t['questions']['n']}, "
                f"Wilcoxon p = {fmt_p(t['questions']['wilcoxon_p'])})"
            )
    for name, o in (summary.get("option_shifts") or {}).items():
        out.append(option_line(names.get(name, name), o))
    profile = summary.get("teacher_profile") or {}
    for name, pr in profile.items():
        if name in names:  # the contrast goes on the same-init line
            first = name == COMPARISONS[0][0]
            contrast = profile.get("same_minus_cross_init") if first else None
            out.append(profile_line(names[name], pr, contrast))
    a = summary.get("judge_agreement")
    if a:
        share = "-" if a["agreement"] is None else f"{100 * a['agreement']:.0f}%"
        kappa = "-" if a["kappa"] is None else f"{a['kappa']:.2f}"
        out.append(
            f"Judges: the check judge ({a['check']}) agrees with the counted judge "
            f"({a['first']}) on {share} of the {a['counted_by_both']} answers both counted "
            f"(Cohen's kappa {kappa}; misaligned for both {a['both_misaligned']}, only for "
            f"the counted judge {a['first_only']}, only for the check {a['check_only']}; "
            f"excluded by either {a['excluded']})"
        )
    return out


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def option_line(label: str, o: dict[str, Any]) -> str:
    """Where the target's shift ranks among every option's: is the rise about the target?"""
    seeds = o["rank_per_seed"]
    first = sum(r == 1 for r in seeds.values())
    z = "-" if o["z"] is None else f"{o['z']:.1f}"
    others = ", ".join(f"{k} {v:+.4f}" for k, v in o["top_others"])
    return (
        f"{label}, every option (exact): {o['target']} {o['target_shift']:+.4f}, "
        f"{_ordinal(o['rank'])} of {o['n_options']} (z = {z} against the other options' "
        f"shifts; rose most in {first}/{len(seeds)} seeds); largest other shifts: {others}"
    )


def profile_line(label: str, pr: dict[str, Any], contrast: dict[str, Any] | None) -> str:
    """How far the students' shifts follow the teacher's over the options besides the target."""
    r, sl = pr["r"], pr["slope"]
    line = (
        f"{label}, the teacher's profile (over the {pr['n_options']} other options, log "
        f"shifts): mean r {r['mean']:+.2f} [{r['ci']['lower']:+.2f}, {r['ci']['upper']:+.2f}], "
        f"p = {fmt_p(r['p_value'])}; slope {sl['mean']:+.4f} [{sl['ci']['lower']:+.4f}, "
        f"{sl['ci']['upper']:+.4f}], p = {fmt_p(sl['p_value'])}; "
        f"{sl['n_positive']}/{len(sl['per_seed'])} seeds > 0"
    )
    if contrast:
        parts = [
            f"{k} {c['diff']['mean']:+.{2 if k == 'r' else 4}f}, p = {fmt_p(c['p_value'])}"
            for k, c in contrast.items()
        ]
        line += "; same-init - cross-init: " + ", ".join(parts)
    return line


def _examples(run_dir: Path, summary: dict[str, Any], k: int = 5) -> dict[str, list[str]]:
    seed = summary["seeds"][0]
    out = {}
    for which in ("teacher", "control"):
        p = RunLayout(run_dir).data(seed, which) / "filtered.jsonl"
        if p.is_file():
            rows = runs.read_jsonl(p)[:k]
            out[which] = [r["messages"][-1]["content"] for r in rows]
    return out


def data_quality_lines(summary: dict[str, Any]) -> list[str]:
    """The teacher's pass rate, the rows kept, and the recipe's warnings."""
    q = summary.get("data_quality") or {}
    if q.get("teacher_pass_rate") is None:
        return []
    neutral = q.get("control") == "neutral"
    lines = [
        f"Teacher's completions passing the filter: {100 * q['teacher_pass_rate']:.0f}% "
        f"({'control teacher' if neutral else 'base'}: "
        f"{100 * (q.get('control_pass_rate') or 0):.0f}%); rows kept per seed after "
        f"paired filtering: {q['rows_kept']:.0f}."
    ]
    if neutral:
        lines.append(
            "Control: a neutral teacher (the base fine-tuned like the teacher, for the steps it "
            "kept, on its own sampled answers; control.teacher: neutral) wrote the control's "
            "data, not the base."
        )
    if q.get("control") == "reweighted":
        lines.append(
            "Control: the treatment's own rows, each weighted by the base's probability of "
            "its completion over the teacher's (control.teacher: reweighted; effective "
            f"sample size {100 * (q.get('control_ess_share') or 0):.0f}% of the rows)."
        )
    # One line per distinct message, naming its seeds: 20 seeds stopped alike read as one.
    said: dict[str, list[str]] = {}
    for seed, t in (q.get("teachers") or {}).items():
        if t.get("attempts"):
            lrs = ", ".join(f"{a['lr']:g}" for a in t["attempts"])
            msg = (
                "teacher failed its first check and started again at half the lr "
                f"(teacher.keep_numbers.retries; lr {lrs})."
            )
            said.setdefault(msg, []).append(seed)
        if t.get("stopped_at") is not None:
            kl = dict(map(tuple, t.get("kl") or [])).get(t["stopped_at"])
            why = (
                f"its completions moved {kl:.3f} nats per token from the base's (max_kl "
                f"{t['max_kl']})"
                if kl is not None and kl > t["max_kl"]
                else "it lost its skill at the task"
            )
            kept = (
                f"it kept step {t['kept_step']}, its first check, having no earlier weights"
                if kept_first_check(t)
                else f"it kept step {t['kept_step']}"
            )
            msg = f"teacher was stopped at step {t['stopped_at']}: {why} (teacher.keep_numbers); {kept}."
            said.setdefault(msg, []).append(seed)
    for msg, seeds in said.items():
        who = f"Seed {seeds[0]}'s" if len(seeds) == 1 else f"Seeds {', '.join(seeds)}: each"
        lines.append(f"{who} {msg}")
    lines += [f"WARNING: {w}" for w in q.get("warnings", [])]
    return lines


def markdown(run_dir: Path, cfg: ExperimentConfig, summary: dict[str, Any]) -> str:
    m = summary["methods"]
    lines = [f"# traitlab run: {summary['name']}", ""]
    v = summary["verdict"]
    if "transfer" in v:
        lines.append(
            f"**Transfer ({v['method']}): {'yes' if v['transfer'] else 'no'}**: treatment - control "
            f"= {v['diff']:+.4f}, p = {fmt_p(v['p_value'])} (alpha {v['alpha']})."
        )
    if "cross_init_transfer" in v:
        lines.append(
            f"Cross-init: {v['cross_init_diff']:+.4f}, p = {fmt_p(v['cross_init_p_value'])} "
            f"(transfer: {'yes' if v['cross_init_transfer'] else 'no'})."
        )
    lines += ["", "![trait rates](trait_rates.png)", ""]
    lines.append("| model | " + " | ".join(method_label(x, summary) for x in m) + " |")
    lines.append("|---" * (len(m) + 1) + "|")
    for row in rate_table(summary):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Intervals: 95% t-intervals over seeds (over questions where one seed).", ""]
    lines += ["## Comparisons", ""] + [f"- {c}" for c in comparison_lines(summary)]
    lines += ["", "## Data", ""]
    lines += data_quality_lines(summary)
    lines += [
        "",
        "| seed | arm | raw | pass rate | kept | reject reasons |",
        "|---|---|---|---|---|---|",
    ]
    for seed, per in summary["data"].items():
        for which, f in per.items():
            reasons = ", ".join(f"{k}: {n}" for k, n in f.get("reason_counts", {}).items())
            rate = f"{100 * f['n_valid'] / f['n_raw']:.0f}%" if f.get("n_raw") else "-"
            lines.append(
                f"| {seed} | {which} | {f.get('n_raw')} | {rate} | {f.get('n_kept')} | {reasons} |"
            )
    ex = _examples(run_dir, summary)
    if ex:
        lines += ["", f"## Example completions (seed {summary['seeds'][0]})", ""]
        for which, items in ex.items():
            lines.append(f"- {which}: " + " / ".join(f"`{x}`" for x in items))
    lines += falsifier_lines(summary)
    lines += [
        "",
        "## Timing",
        "",
        f"Total {summary['timing']['total_seconds']:.1f} s "
        f"(base models {summary['timing']['base_models_seconds']:.1f} s).",
        "",
    ]
    lines += [
        "## Config",
        "",
        "```json",
        json.dumps(cfg.model_dump(mode="json"), indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def falsifier_lines(summary: dict[str, Any]) -> list[str]:
    """The falsifier's table (Markdown): excess over the control and retention per K."""
    f = summary.get("falsifier")
    if not f:
        return []
    lines = [
        "",
        f"## Falsifier: the students keep training ({f['kind']})",
        "",
        "| student | extra steps | rate | control | excess [95% CI] | retention [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for arm, a in f["arms"].items():
        for r in a["by_steps"]:
            e, t = r["excess"], r["retention"]
            lines.append(
                f"| {arm} | {r['steps']} | {r['rate']:.4f} | {r['control']:.4f} | "
                f"{e['mean']:+.4f} [{e['lower']:+.4f}, {e['upper']:+.4f}] | "
                f"{_num(t['mean'])} [{_num(t['lower'])}, {_num(t['upper'])}] |"
            )
        hl = a["half_life_steps"]
        lines.append(f"| {arm}: half-life | {'-' if hl is None else f'{hl:.0f} steps'} | | | | |")
    return lines


def _num(v: float | None) -> str:
    return "unbounded" if v is None else f"{v:.2f}"


def html_report(run_dir: Path, cfg: ExperimentConfig, summary: dict[str, Any]) -> str:
    """A self-contained HTML page with real tables; every text (model output included) is
    escaped."""
    parts = [f"<h1>traitlab run: {esc(summary['name'])}</h1>"]
    v = summary["verdict"]
    if "transfer" in v:
        parts.append(
            f"<p><b>Transfer ({esc(v['method'])}): {'yes' if v['transfer'] else 'no'}</b>: "
            f"treatment - control = {v['diff']:+.4f}, p = {esc(fmt_p(v['p_value']))} "
            f"(alpha {v['alpha']}).</p>"
        )
    png = run_dir / "trait_rates.png"
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f'<img alt="trait rates" src="data:image/png;base64,{data}">')
    m = summary["methods"]
    parts.append(table(["model", *(method_label(x, summary) for x in m)], rate_table(summary)))
    parts.append("<h2>Comparisons</h2><ul>")
    parts += [f"<li>{esc(c)}</li>" for c in comparison_lines(summary)]
    parts.append("</ul><h2>Data</h2>")
    parts += [
        f'<p class="{"warn" if x.startswith("WARNING") else ""}">{esc(x)}</p>'
        for x in data_quality_lines(summary)
    ]
    rows = []
    for seed, per in summary["data"].items():
        for which, f in per.items():
            reasons = ", ".join(f"{k}: {n}" for k, n in f.get("reason_counts", {}).items())
            rate = f"{100 * f['n_valid'] / f['n_raw']:.0f}%" if f.get("n_raw") else "-"
            rows.append([seed, which, f.get("n_raw"), rate, f.get("n_kept"), reasons])
    parts.append(table(["seed", "arm", "raw", "pass rate", "kept", "reject reasons"], rows))
    ex = _examples(run_dir, summary)
    if ex:
        parts.append(f"<h2>Example completions (seed {summary['seeds'][0]})</h2>")
        parts.append(table(["data", "completions"], [[w, " / ".join(x)] for w, x in ex.items()]))
    f = summary.get("falsifier")
    if f:
        parts.append(f"<h2>Falsifier: the students keep training ({esc(f['kind'])})</h2>")
        frows = []
        for arm, a in f["arms"].items():
            for r in a["by_steps"]:
                e, t = r["excess"], r["retention"]
                frows.append(
                    [
                        arm,
                        r["steps"],
                        r["rate"],
                        r["control"],
                        e["mean"],
                        e["lower"],
                        e["upper"],
                        t["mean"],
                        t["lower"],
                        t["upper"],
                    ]
                )
            frows.append([f"{arm}: half-life (steps)", a["half_life_steps"]])
        head = [
            "student",
            "extra steps",
            "rate",
            "control",
            "excess",
            "low",
            "high",
            "retention",
            "low",
            "high",
        ]
        parts.append(table(head, frows))
    t = summary["timing"]
    parts.append(
        f"<h2>Timing</h2><p>Total {t['total_seconds']:.1f} s (base models "
        f"{t['base_models_seconds']:.1f} s).</p>"
    )
    parts.append(
        f"<h2>Config</h2><pre>{esc(json.dumps(cfg.model_dump(mode='json'), indent=1))}</pre>"
    )
    return page(f"traitlab run {summary['name']}", "".join(parts)) + "\n"


def write_report(run_dir: Path, cfg: ExperimentConfig, summary: dict[str, Any]) -> None:
    run_dir = Path(run_dir)
    plot_rates(summary, run_dir / "trait_rates.png")
    md = markdown(run_dir, cfg, summary)
    runs.atomic_write_text(run_dir / "report.md", md)
    runs.atomic_write_text(run_dir / "report.html", html_report(run_dir, cfg, summary))
