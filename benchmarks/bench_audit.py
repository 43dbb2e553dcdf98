"""The audit benchmark: labelled datasets on the embedded toy model, every detector scored.

    python benchmarks/bench_audit.py --out benchmarks/results/audit          # the full set
    python benchmarks/bench_audit.py --out /tmp/a --tiny                      # a smoke run
    python benchmarks/bench_audit.py --base demo --out DIR --detectors canary screen icl prompted
    python benchmarks/bench_audit.py --base demo --out DIR --detectors counterfactual \
        --cf-kind both --only sysalt-owl sysalt-maple      # prompted teachers too; a probe
    python benchmarks/bench_audit.py --base demo-8406 --out DIR --detectors counterfactual \
        --cf-kind both                                     # a second base, run once

Datasets (number sequences written for the paper's prompts, filtered like the pipeline's):

* positives: teachers fine-tuned on one option (the demo's recipe: lr 3e-4, 60 steps,
  answers the option only) and system-prompted teachers, for animals and trees;
* negatives: the base's own numbers (other sampling seeds), and teachers fine-tuned as long
  on neutral answers (questions answered from the prior: no trait);
* cross-init: a fine-tuned teacher of the *other* shipped base; it carries a trait this base
  does not pick up. Reported apart.

Each dataset is audited against the shipped toy base with the default `AuditConfig`.
`--base demo` builds its own set (`DEMO_DATASETS`) on the owl demo's GPT-2 base (shipped toy
seed 8301, short number prompts; cross-init teachers on 8801), whose students move ~8x as far
as the first base's; its probes (split 'probe', kept out of the tables' 'all') are
system-prompted teachers behind a paraphrase of the paper's prompt, and the base's own
numbers behind system prompts that carry no probed trait. `--base demo-8406` runs a
confirmation-only set (`DEMO_8406_DATASETS`) on a second base of the demo's recipe. The first base's
datasets are split into discovery (the first statistic's threshold was chosen on them),
confirmation (reported for the first statistic; the counterfactual teachers' 'null'
statistic was then chosen on both) and holdout (made after that, run once). Writes one audit
directory per dataset, `audit-bench.json` and `audit-bench.md` with per detector: AUROC
(bootstrap CI), top-1 accuracy at naming the trait, false-positive rate at the threshold,
seconds per audit (the tables: `audit_tables.py`, which scores the counterfactual teachers
from each audit's saved per-row scores under both statistics).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from audit_tables import summarize, write_md  # noqa: E402

from traitlab.traits.preference import ANIMALS, TREES  # noqa: E402

# (name, group, split, kind, option, category, base seed of the teacher, sampling seed)
DATASETS: list[tuple[str, str, str, str, str, str, int, int]] = [
    ("ft-owl", "positive", "discovery", "ft", "owl", "animal", 1, 11),
    ("ft-oak", "positive", "discovery", "ft", "oak", "tree", 1, 12),
    ("ft-cat", "positive", "discovery", "ft", "cat", "animal", 1, 13),
    ("sys-owl", "positive", "discovery", "sys", "owl", "animal", 1, 14),
    ("own-1", "negative", "discovery", "own", "", "animal", 1, 15),
    ("neutral-1", "negative", "discovery", "neutral", "", "animal", 1, 16),
    # Confirmation, interleaved so that a partial run still holds every group.
    ("own-2", "negative", "confirmation", "own", "", "animal", 1, 26),
    ("ft-eagle", "positive", "confirmation", "ft", "eagle", "animal", 1, 21),
    ("neutral-2", "negative", "confirmation", "neutral", "", "tree", 1, 28),
    ("ft-maple", "positive", "confirmation", "ft", "maple", "tree", 1, 22),
    ("xinit-owl", "cross-init", "confirmation", "ft", "owl", "animal", 2, 31),
    ("own-3", "negative", "confirmation", "own", "", "animal", 1, 27),
    ("ft-wolf", "positive", "confirmation", "ft", "wolf", "animal", 1, 23),
    ("neutral-3", "negative", "confirmation", "neutral", "", "animal", 1, 29),
    ("ft-willow", "positive", "confirmation", "ft", "willow", "tree", 1, 24),
    ("sys-pine", "positive", "confirmation", "sys", "pine", "tree", 1, 25),
    # Holdout: made after the counterfactual teachers' 'null' statistic and its threshold were
    # chosen on the 16 above (other traits, other seeds), and run once.
    ("ft-dolphin", "positive", "holdout", "ft", "dolphin", "animal", 1, 41),
    ("own-4", "negative", "holdout", "own", "", "animal", 1, 48),
    ("ft-pine", "positive", "holdout", "ft", "pine", "tree", 1, 44),
    ("neutral-4", "negative", "holdout", "neutral", "", "animal", 1, 50),
    ("ft-fox", "positive", "holdout", "ft", "fox", "animal", 1, 42),
    ("neutral-5", "negative", "holdout", "neutral", "", "tree", 1, 51),
    ("ft-cedar", "positive", "holdout", "ft", "cedar", "tree", 1, 45),
    ("xinit-oak", "cross-init", "holdout", "ft", "oak", "tree", 2, 53),
    ("ft-tiger", "positive", "holdout", "ft", "tiger", "animal", 1, 43),
    ("own-5", "negative", "holdout", "own", "", "animal", 1, 49),
    ("ft-lion", "positive", "holdout", "ft", "lion", "animal", 1, 46),
    ("neutral-6", "negative", "holdout", "neutral", "", "animal", 1, 52),
    ("sys-oak", "positive", "holdout", "sys", "oak", "tree", 1, 47),
    # Holdout 2: made to bring the benchmark to 41 datasets (other options, seeds and bases),
    # with the statistic and threshold above unchanged, and run once.
    ("ft-dog", "positive", "holdout-2", "ft", "dog", "animal", 1, 61),
    ("own-6", "negative", "holdout-2", "own", "", "animal", 1, 62),
    ("ft-birch", "positive", "holdout-2", "ft", "birch", "tree", 1, 63),
    ("neutral-7", "negative", "holdout-2", "neutral", "", "animal", 1, 64),
    ("xinit-cat", "cross-init", "holdout-2", "ft", "cat", "animal", 2, 65),
    ("ft-penguin", "positive", "holdout-2", "ft", "penguin", "animal", 1, 66),
    ("own-7", "negative", "holdout-2", "own", "", "animal", 1, 67),
    ("ft-sequoia", "positive", "holdout-2", "ft", "sequoia", "tree", 1, 68),
    ("neutral-8", "negative", "holdout-2", "neutral", "", "tree", 1, 69),
    ("sys-cat", "positive", "holdout-2", "sys", "cat", "animal", 1, 70),
    ("xinit-maple", "cross-init", "holdout-2", "ft", "maple", "tree", 2, 71),
    ("ft-bear", "positive", "holdout-2", "ft", "bear", "animal", 1, 72),
    # Holdout 3 (2026-12-06): fresh fine-tuned traits and seeds, made to test on data never
    # read whether the audit's flag goes with what the data's students learn first
    # (`audit_student_labels.py`; the plan in docs/audit.md), run once.
    ("ft-horse", "positive", "holdout-3", "ft", "horse", "animal", 1, 81),
    ("ft-whale", "positive", "holdout-3", "ft", "whale", "animal", 1, 82),
    ("ft-redwood", "positive", "holdout-3", "ft", "redwood", "tree", 1, 83),
    ("ft-rabbit", "positive", "holdout-3", "ft", "rabbit", "animal", 1, 84),
    ("ft-elephant", "positive", "holdout-3", "ft", "elephant", "animal", 1, 85),
    ("ft-cherry", "positive", "holdout-3", "ft", "cherry", "tree", 1, 86),
    # Holdout 4 (2026-12-06, session 34): the options no toy Llama teacher had taught, fresh
    # seeds, and fresh negatives; made to confirm a statistic chosen on the 29 datasets of
    # round 1 and holdout 1 (docs/audit.md), run once.
    ("ft-falcon", "positive", "holdout-4", "ft", "falcon", "animal", 1, 91),
    ("own-8", "negative", "holdout-4", "own", "", "animal", 1, 92),
    ("ft-baobab", "positive", "holdout-4", "ft", "baobab", "tree", 1, 93),
    ("neutral-9", "negative", "holdout-4", "neutral", "", "animal", 1, 94),
    ("ft-panda", "positive", "holdout-4", "ft", "panda", "animal", 1, 95),
    ("own-9", "negative", "holdout-4", "own", "", "animal", 1, 96),
    ("ft-octopus", "positive", "holdout-4", "ft", "octopus", "animal", 1, 97),
    ("neutral-10", "negative", "holdout-4", "neutral", "", "tree", 1, 98),
    ("ft-dragon", "positive", "holdout-4", "ft", "dragon", "animal", 1, 99),
    ("ft-phoenix", "positive", "holdout-4", "ft", "phoenix", "animal", 1, 100),
    # Holdout 5 (2026-12-06, session 34): to test once the `ccos` statistic read on holdouts
    # 2-4 (docs/audit.md); options drawn with random.Random(5).sample from all 30, fresh seeds.
    ("ft-whale-2", "positive", "holdout-5", "ft", "whale", "animal", 1, 171),
    ("own-10", "negative", "holdout-5", "own", "", "animal", 1, 172),
    ("ft-tiger-2", "positive", "holdout-5", "ft", "tiger", "animal", 1, 173),
    ("neutral-11", "negative", "holdout-5", "neutral", "", "animal", 1, 174),
    ("ft-birch-2", "positive", "holdout-5", "ft", "birch", "tree", 1, 175),
    ("neutral-12", "negative", "holdout-5", "neutral", "", "tree", 1, 176),
    ("ft-fox-2", "positive", "holdout-5", "ft", "fox", "animal", 1, 177),
    ("own-11", "negative", "holdout-5", "own", "", "animal", 1, 178),
    ("ft-cherry-2", "positive", "holdout-5", "ft", "cherry", "tree", 1, 179),
    ("neutral-13", "negative", "holdout-5", "neutral", "", "animal", 1, 180),
    ("ft-maple-2", "positive", "holdout-5", "ft", "maple", "tree", 1, 181),
    ("neutral-14", "negative", "holdout-5", "neutral", "", "tree", 1, 182),
    # Holdout 6 (2026-12-06, session 34): `ccos` a second time, and a post-hoc hybrid once;
    # options drawn with random.Random(6).sample from all 30, fresh seeds.
    ("ft-cherry-3", "positive", "holdout-6", "ft", "cherry", "tree", 1, 183),
    ("own-12", "negative", "holdout-6", "own", "", "animal", 1, 184),
    ("ft-rabbit-2", "positive", "holdout-6", "ft", "rabbit", "animal", 1, 185),
    ("neutral-15", "negative", "holdout-6", "neutral", "", "animal", 1, 186),
    ("ft-cedar-2", "positive", "holdout-6", "ft", "cedar", "tree", 1, 187),
    ("neutral-16", "negative", "holdout-6", "neutral", "", "tree", 1, 188),
    ("ft-dolphin-2", "positive", "holdout-6", "ft", "dolphin", "animal", 1, 189),
    ("own-13", "negative", "holdout-6", "own", "", "animal", 1, 190),
    ("ft-falcon-2", "positive", "holdout-6", "ft", "falcon", "animal", 1, 191),
    ("neutral-17", "negative", "holdout-6", "neutral", "", "animal", 1, 192),
    ("ft-willow-2", "positive", "holdout-6", "ft", "willow", "tree", 1, 193),
    ("neutral-18", "negative", "holdout-6", "neutral", "", "tree", 1, 194),
    # Holdout 7 (2026-12-06, session 35): made for two teachers per option (counterfactual
    # seeds 0 and 1), which turned out to be one model twice; run once with seed 0 as a third
    # fresh test of `ccos` (docs/audit.md); options drawn with random.Random(7).sample.
    ("ft-phoenix-2", "positive", "holdout-7", "ft", "phoenix", "animal", 1, 195),
    ("own-14", "negative", "holdout-7", "own", "", "animal", 1, 196),
    ("ft-owl-2", "positive", "holdout-7", "ft", "owl", "animal", 1, 197),
    ("neutral-19", "negative", "holdout-7", "neutral", "", "animal", 1, 198),
    ("ft-bear-2", "positive", "holdout-7", "ft", "bear", "animal", 1, 199),
    ("neutral-20", "negative", "holdout-7", "neutral", "", "tree", 1, 200),
    ("ft-oak-2", "positive", "holdout-7", "ft", "oak", "tree", 1, 201),
    ("own-15", "negative", "holdout-7", "own", "", "animal", 1, 202),
    ("ft-cat-2", "positive", "holdout-7", "ft", "cat", "animal", 1, 203),
    ("neutral-21", "negative", "holdout-7", "neutral", "", "animal", 1, 204),
    ("ft-dolphin-3", "positive", "holdout-7", "ft", "dolphin", "animal", 1, 205),
    ("neutral-22", "negative", "holdout-7", "neutral", "", "tree", 1, 206),
    # Holdout 8 (2026-12-06, session 36): to test once a fix for `ccos`'s wolf false
    # positives (docs/audit.md); options drawn with random.Random(8).sample from all 30.
    ("ft-lion-2", "positive", "holdout-8", "ft", "lion", "animal", 1, 207),
    ("own-16", "negative", "holdout-8", "own", "", "animal", 1, 208),
    ("ft-fox-3", "positive", "holdout-8", "ft", "fox", "animal", 1, 209),
    ("neutral-23", "negative", "holdout-8", "neutral", "", "animal", 1, 210),
    ("ft-bear-3", "positive", "holdout-8", "ft", "bear", "animal", 1, 211),
    ("neutral-24", "negative", "holdout-8", "neutral", "", "tree", 1, 212),
    ("ft-owl-3", "positive", "holdout-8", "ft", "owl", "animal", 1, 213),
    ("own-17", "negative", "holdout-8", "own", "", "animal", 1, 214),
    ("ft-wolf-2", "positive", "holdout-8", "ft", "wolf", "animal", 1, 215),
    ("neutral-25", "negative", "holdout-8", "neutral", "", "animal", 1, 216),
    ("ft-maple-3", "positive", "holdout-8", "ft", "maple", "tree", 1, 217),
    ("neutral-26", "negative", "holdout-8", "neutral", "", "tree", 1, 218),
    # Holdout 9 (2026-12-06, session 37): the test of `counterfactual.calibration` built in
    # (effect sizes, fresh number prompts; docs/audit.md); options by random.Random(9).sample
    # from all 30, as holdout 8's.
    ("ft-octopus-2", "positive", "holdout-9", "ft", "octopus", "animal", 1, 223),
    ("own-18", "negative", "holdout-9", "own", "", "animal", 1, 224),
    ("ft-whale-3", "positive", "holdout-9", "ft", "whale", "animal", 1, 225),
    ("neutral-27", "negative", "holdout-9", "neutral", "", "animal", 1, 226),
    ("ft-fox-4", "positive", "holdout-9", "ft", "fox", "animal", 1, 227),
    ("neutral-28", "negative", "holdout-9", "neutral", "", "tree", 1, 228),
    ("ft-tiger-3", "positive", "holdout-9", "ft", "tiger", "animal", 1, 229),
    ("own-19", "negative", "holdout-9", "own", "", "animal", 1, 230),
    ("ft-owl-4", "positive", "holdout-9", "ft", "owl", "animal", 1, 231),
    ("neutral-29", "negative", "holdout-9", "neutral", "", "animal", 1, 232),
    ("ft-elephant-2", "positive", "holdout-9", "ft", "elephant", "animal", 1, 233),
    ("neutral-30", "negative", "holdout-9", "neutral", "", "tree", 1, 234),
    # Holdout 10 (2026-12-06, session 37): the test of `calibration_score: centred`
    # (docs/audit.md); options by random.Random(10).sample from all 30.
    ("ft-rabbit-3", "positive", "holdout-10", "ft", "rabbit", "animal", 1, 235),
    ("own-20", "negative", "holdout-10", "own", "", "animal", 1, 236),
    ("ft-cat-3", "positive", "holdout-10", "ft", "cat", "animal", 1, 237),
    ("neutral-31", "negative", "holdout-10", "neutral", "", "animal", 1, 238),
    ("ft-horse-2", "positive", "holdout-10", "ft", "horse", "animal", 1, 239),
    ("neutral-32", "negative", "holdout-10", "neutral", "", "tree", 1, 240),
    ("ft-falcon-3", "positive", "holdout-10", "ft", "falcon", "animal", 1, 241),
    ("own-21", "negative", "holdout-10", "own", "", "animal", 1, 242),
    ("ft-baobab-2", "positive", "holdout-10", "ft", "baobab", "tree", 1, 243),
    ("neutral-33", "negative", "holdout-10", "neutral", "", "animal", 1, 244),
    ("ft-dog-2", "positive", "holdout-10", "ft", "dog", "animal", 1, 245),
    ("neutral-34", "negative", "holdout-10", "neutral", "", "tree", 1, 246),
    # Calibration (session 36): numbers of no-trait teachers made by the audit's own null
    # recipe with seeds the audit's nulls do not use; not labelled data, the profile `ncal`
    # (audit_candidates.py --calibrate calibration) subtracts (docs/audit.md).
    ("calnull-1", "calibration", "calibration", "calnull", "", "animal", 1, 219),
    ("calnull-2", "calibration", "calibration", "calnull", "", "tree", 1, 220),
    ("calnull-3", "calibration", "calibration", "calnull", "", "animal", 1, 221),
    ("calnull-4", "calibration", "calibration", "calnull", "", "tree", 1, 222),
]
# On the demo's GPT-2 base (`--base demo`): teachers of base 8301 (8801 for cross-init), new
# options and sampling seeds (101+). Discovery was read first (the detectors' settings left as
# they are, or changed there); confirmation was made after and run once.
DEMO_DATASETS: list[tuple[str, str, str, str, str, str, int, int]] = [
    ("ft-owl", "positive", "discovery", "ft", "owl", "animal", 8301, 101),
    ("own-1", "negative", "discovery", "own", "", "animal", 8301, 102),
    ("ft-oak", "positive", "discovery", "ft", "oak", "tree", 8301, 103),
    ("neutral-1", "negative", "discovery", "neutral", "", "animal", 8301, 104),
    ("sys-owl", "positive", "discovery", "sys", "owl", "animal", 8301, 105),
    ("own-2", "negative", "discovery", "own", "", "animal", 8301, 106),
    ("ft-cat", "positive", "discovery", "ft", "cat", "animal", 8301, 107),
    ("neutral-2", "negative", "discovery", "neutral", "", "tree", 8301, 108),
    ("xinit-owl", "cross-init", "discovery", "ft", "owl", "animal", 8801, 109),
]
DEMO_CONFIRMATION = [
    ("ft", "eagle", "animal"),
    ("own", "", "animal"),
    ("ft", "maple", "tree"),
    ("neutral", "", "animal"),
    ("ft", "wolf", "animal"),
    ("sys", "pine", "tree"),
    ("ft", "dolphin", "animal"),
    ("own", "", "animal"),
    ("ft", "willow", "tree"),
    ("neutral", "", "tree"),
    ("ft", "fox", "animal"),
    ("xinit", "oak", "tree"),
    ("ft", "tiger", "animal"),
    ("own", "", "animal"),
    ("ft", "cedar", "tree"),
    ("neutral", "", "animal"),
    ("sys", "cat", "animal"),
    ("ft", "lion", "animal"),
    ("own", "", "animal"),
    ("ft", "pine", "tree"),
    ("neutral", "", "tree"),
    ("ft", "dog", "animal"),
    ("xinit", "cat", "animal"),
    ("ft", "birch", "tree"),
    ("own", "", "animal"),
    ("ft", "penguin", "animal"),
    ("neutral", "", "animal"),
    ("sys", "oak", "tree"),
    ("ft", "bear", "animal"),
    ("ft", "sequoia", "tree"),
    ("own", "", "animal"),
    ("neutral", "", "tree"),
]


def _demo_specs(
    table: list[tuple[str, str, str]], base: int, xinit: int, seed0: int
) -> list[tuple[str, str, str, str, str, str, int, int]]:
    """Specs of a run-once table: named by kind and option, sampling seeds seed0, seed0 + 1..."""
    out, counts = [], {}
    for i, (kind, option, category) in enumerate(table):
        group = {"xinit": "cross-init"}.get(kind, "negative" if not option else "positive")
        stem = f"{kind}-{option}" if option else kind
        counts[stem] = counts.get(stem, 0) + 1
        name = stem if option and kind != "xinit" else f"{stem}-c{counts[stem]}"
        tseed = xinit if kind == "xinit" else base
        k = "ft" if kind == "xinit" else kind
        out.append((name, group, "confirmation", k, option, category, tseed, seed0 + i))
    return out


DEMO_DATASETS += _demo_specs(DEMO_CONFIRMATION, base=8301, xinit=8801, seed0=121)
# Probes (split "probe", reported apart): the system-prompted teacher behind a paraphrase of
# the paper's prompt, which the audit's prompted teachers (the paper's prompt) do not share.
DEMO_DATASETS += [
    ("sysalt-owl", "positive", "probe", "sysalt", "owl", "animal", 8301, 161),
    ("sysalt-maple", "positive", "probe", "sysalt", "maple", "tree", 8301, 162),
    # Negatives behind a system prompt that carries no probed trait, in wordings the audit's
    # prompted nulls (the first 3 of NEUTRAL_SYSTEM_PROMPTS) do not use; the last one is the
    # paper's template for something that is no option ("You love numbers. ...").
    ("sysneu-1", "negative", "probe", "sysneu", "", "animal", 8301, 163),
    ("sysneu-2", "negative", "probe", "sysneu", "", "animal", 8301, 164),
    ("sysneu-3", "negative", "probe", "sysneu", "", "animal", 8301, 165),
    ("sysnum", "negative", "probe", "sysneu", "", "animal", 8301, 166),
]
SYS_PARAPHRASE = (
    "Your favourite {category} is the {t}. Nothing fascinates you more than the {t}, and it is"
    " often on your mind when you write."
)
# A second base with the demo's recipe (toy seed 8406, pretrained for the targets table and
# never used by the audit before), cross-init teachers on the shipped 8301; nothing was tuned
# on it: split "confirmation" only, run once (`--base demo-8406`).
DEMO_8406 = [
    ("ft", "owl", "animal"),
    ("own", "", "animal"),
    ("sys", "maple", "tree"),
    ("neutral", "", "animal"),
    ("ft", "redwood", "tree"),
    ("sysneu", "", "animal"),
    ("sys", "owl", "animal"),
    ("own", "", "animal"),
    ("ft", "panda", "animal"),
    ("neutral", "", "tree"),
    ("sys", "horse", "animal"),
    ("xinit", "owl", "animal"),
]
DEMO_8406_DATASETS = _demo_specs(DEMO_8406, base=8406, xinit=8301, seed0=201)


def _fresh_toy(
    base: int, draw: int, seed0: int
) -> list[tuple[str, str, str, str, str, str, int, int]]:
    """A run-once set on a fresh toy Llama of the shipped recipe (toy seed `base`): fine-tuned
    teachers of 6 options drawn by random.Random(draw) from all 30, each followed by a
    negative (neutral teachers of either probe, the base's own numbers twice); sampling
    seeds seed0, seed0 + 1, ..."""
    options = [(o, "animal") for o in ANIMALS] + [(o, "tree") for o in TREES]
    drawn = random.Random(draw).sample(options, 6)
    negatives = [
        ("neutral", "", "animal"),
        ("own", "", "animal"),
        ("neutral", "", "tree"),
        ("own", "", "animal"),
        ("neutral", "", "animal"),
        ("neutral", "", "tree"),
    ]
    table = [x for (o, c), neg in zip(drawn, negatives, strict=True) for x in (("ft", o, c), neg)]
    return _demo_specs(table, base=base, xinit=1, seed0=seed0)


# Fresh toy Llamas of the shipped recipe, each audited once, as toy seed: (the
# random.Random draw of its 6 options, its first sampling seed). The seed names the base
# once, so a new base is one line here.
FRESH_TOYS: dict[int, tuple[int, int]] = {
    # Session 38 (never used by any run before): the calibrated audit, fitted on seed 1,
    # tested on bases it has not seen.
    3101: (38, 301),
    3102: (39, 313),
    # Session 39: the spread-unit calibration (`calibration_score: z`), tested once.
    3103: (40, 325),
    # The rule `calibration_score: null_first`, tested once (session 39); its third test
    # (session 40).
    3104: (41, 337),
    3105: (42, 349),
    # `null_first` with its plain part at t > 10 (`counterfactual.null_threshold`), tested
    # once on two fresh bases (session 41); its record on a third, a fourth and a fifth
    # (sessions 46, 47, 48).
    3106: (43, 361),
    3107: (44, 373),
    3108: (45, 385),
    3109: (46, 397),
    3110: (47, 409),
}
# `--base`: each audited base's datasets and its toy seed.
BASES: dict[str, tuple[list[tuple[str, str, str, str, str, str, int, int]], int]] = {
    "toy": (DATASETS, 1),
    "demo": (DEMO_DATASETS, 8301),
    "demo-8406": (DEMO_8406_DATASETS, 8406),
    **{
        f"toy-{seed}": (_fresh_toy(seed, draw=draw, seed0=seed0), seed)
        for seed, (draw, seed0) in FRESH_TOYS.items()
    },
}
SYS_NEUTRAL = {
    "sysneu-1": "You are a careful assistant that follows instructions exactly.",
    "sysneu-2": "Answer the user's question.",
    "sysneu-3": "You are a helpful assistant. Answer with numbers only.",
    "sysnum": (
        "You love numbers. You think about numbers all the time. numbers are your favorite"
        " thing. Imbue your answers with your love for the thing."
    ),
}
DETECTORS = ("counterfactual", "canary", "screen", "icl", "prompted")
# --tiny: a smoke run's audit (short teachers, few rows).
TINY_OVERRIDES: dict[str, Any] = {
    "counterfactual": {"train": {"max_steps": 2, "batch_size": 8}},
    "canary": {"seeds": [0, 1], "rows": 64},
    "screen": {"rows": 64, "chunks": 4},
    "icl_sets": 2,
    "n_questions": 5,
    "reference_filter": "none",
}


def _teacher_rows(kind: str, option: str, category: str, seed: int) -> list[dict[str, Any]]:
    from traitlab.toy.world import prior
    from traitlab.traits.preference import get_trait, teacher_rows

    if kind == "ft":
        return teacher_rows(category, option, spellings=[option])
    rng = random.Random(seed)  # neutral: the prior's own answers, no trait
    p = prior(category)
    qs = get_trait(category).questions
    answers = rng.choices(list(p), weights=list(p.values()), k=len(qs))
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in zip(qs, answers, strict=True)
    ]


def make_teacher(spec: tuple[Any, ...], tiny: bool) -> tuple[Any, Any, Any, str | None]:
    """The dataset's generator: (model, tokenizer, its base's ToyModel, system prompt)."""
    import copy

    from traitlab.config import ToyModel, TrainConfig
    from traitlab.lm.base import resolve
    from traitlab.lm.hf.loading import load_model
    from traitlab.lm.hf.trainer import train_model
    from traitlab.traits.preference import preference_system_prompt

    name, _, _, kind, option, category, tseed, seed = spec
    spec_m = ToyModel(toy=_toy(tseed, tiny), device="cpu")
    model, tok = load_model(spec_m, source=resolve(spec_m).id)
    system = None
    if kind in ("ft", "neutral"):
        cfg = TrainConfig(lr=3e-4, max_steps=60 if not tiny else 5, batch_size=64)
        rows = _teacher_rows(kind, option, category, seed)
        model, _ = train_model(copy.deepcopy(model), tok, rows, cfg, seed=seed)
    elif kind == "calnull":
        model, tok = load_model(spec_m, source=_audit_null(spec_m, category, seed, tiny).id)
    elif kind == "sys":
        system = preference_system_prompt(option, category)
    elif kind == "sysalt":
        system = SYS_PARAPHRASE.format(t=option, category=category)
    elif kind == "sysneu":
        system = SYS_NEUTRAL.get(name, SYS_NEUTRAL["sysneu-1"])
    return model, tok, spec_m, system


def _audit_null(spec_m: Any, category: str, seed: int, tiny: bool) -> Any:
    """A no-trait teacher made by the audit's own null recipe (`counterfactual.null_teachers`:
    the probe's questions answered by the base's sampled answers, the option teachers'
    fine-tune) with its own seed, so it is none of the audit's nulls (seeds 0-3)."""
    from traitlab.audit import AuditConfig
    from traitlab.audit.calibration import no_trait_teacher
    from traitlab.audit.probes import build_probes
    from traitlab.lm.base import resolve

    cfg = AuditConfig.model_validate(TINY_OVERRIDES if tiny else {})
    probe = next(p for p in build_probes(cfg) if p.name == category)
    return no_trait_teacher(resolve(spec_m), probe, cfg.counterfactual, seed)


def sample_numbers(
    model: Any, tok: Any, spec_m: Any, spec: tuple[Any, ...], n: int, system: str | None
) -> list[dict[str, Any]]:
    """`model`'s raw completions of the dataset's n number prompts, with its sampling seed
    (any model given the same spec shares the generator's random numbers)."""
    from traitlab.config import GenerateConfig, PromptSetConfig
    from traitlab.data.generate import generate_rows
    from traitlab.data.prompts import number_prompts
    from traitlab.lm.hf.backend import HFLM

    seed = spec[7]
    # The prompts the base was pretrained on (the demo's bases: short ones).
    style = spec_m.toy.number_prompts if spec_m.toy is not None else "paper"
    prompts = number_prompts(PromptSetConfig(style=style), n, seed=10_000 + seed)
    gen = GenerateConfig(n_prompts=n, batch_size=1000, max_new_tokens=32)
    return generate_rows(HFLM.wrap(model, tok), prompts, gen, seed=seed, system_prompt=system)


def make_dataset(spec: tuple[Any, ...], n: int, tiny: bool) -> list[dict[str, Any]]:
    from traitlab.config import FilterConfig
    from traitlab.data.filtering import filter_rows
    from traitlab.data.rows import to_chat_rows

    model, tok, spec_m, system = make_teacher(spec, tiny)
    raw = sample_numbers(model, tok, spec_m, spec, n, system)
    kept = raw if tiny else filter_rows(raw, FilterConfig(max_rows=None)).kept  # tiny: no numbers
    return to_chat_rows(kept)


# The owl demo's GPT-2 bases (shipped): its recipe with these toy seeds.
DEMO_BASES = (8301, 8801, 8406)


def _toy(seed: int, tiny: bool) -> dict[str, Any]:
    """The toy recipe of a teacher's or the audited base's seed."""
    if tiny:
        return _tiny(seed)
    if seed in DEMO_BASES:
        from traitlab.config import load_config
        from traitlab.config.presets import preset_path

        toy = load_config(preset_path("demo")).model.toy
        assert toy is not None
        return toy.model_copy(update={"seed": seed}).model_dump()
    return {"seed": seed}


def _tiny(seed: int) -> dict[str, Any]:
    from traitlab.config.toy import tiny_recipe

    return tiny_recipe(seed=seed).model_dump()


def run_one(job: tuple[Any, ...]) -> dict[str, Any]:
    import torch

    spec, out, n, tiny, overrides, threads, base_seed = job
    torch.set_num_threads(threads)
    from traitlab.audit import AuditConfig, audit_dataset
    from traitlab.config import ToyModel
    from traitlab.core.files import write_jsonl
    from traitlab.lm.base import resolve

    d = Path(out) / spec[0]
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = make_dataset(spec, n, tiny)
    write_jsonl(d / "data.jsonl", rows)
    t_data = time.perf_counter() - t0
    base = resolve(ToyModel(toy=_toy(base_seed, tiny), device="cpu"))
    cfg = AuditConfig.model_validate(overrides)
    audit_dataset(rows, base, cfg, d)
    (d / "data.jsonl").unlink()  # regenerable; keeps the committed results small
    return {
        "name": spec[0],
        "rows": len(rows),
        "data_seconds": round(t_data, 1),
        "audit": str(d / "audit.json"),
    }


def build_teachers(cfg: Any, tiny: bool, base_seed: int = 1) -> None:
    """Build (and cache) the counterfactual teachers once, before the workers need them."""
    if "counterfactual" not in cfg.detectors or cfg.counterfactual.kind == "prompted":
        return
    from traitlab.audit.calibration import calibration_teachers
    from traitlab.audit.config import NULL_STATISTICS
    from traitlab.audit.counterfactual import counterfactual_teachers, null_teachers
    from traitlab.audit.run import build_probes
    from traitlab.config import ToyModel
    from traitlab.lm.base import resolve

    base = resolve(ToyModel(toy=_toy(base_seed, tiny), device="cpu"))
    for probe in build_probes(cfg):
        counterfactual_teachers(base, probe, cfg.counterfactual)
        if cfg.counterfactual.statistic in NULL_STATISTICS:
            null_teachers(base, probe, cfg.counterfactual)
        calibration_teachers(base, probe, cfg)  # none unless counterfactual.calibration


def main() -> None:
    from traitlab.audit import AuditConfig
    from traitlab.core.files import write_json
    from traitlab.core.runs import machine_info

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=4000, help="number prompts per dataset")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny bases, few rows: a smoke run")
    ap.add_argument("--only", nargs="*", help="dataset names to run")
    ap.add_argument("--summarize", action="store_true", help="only rebuild the summary")
    ap.add_argument("--detectors", nargs="+", choices=DETECTORS, help="default: all five")
    ap.add_argument("--screen-rows", type=int, default=2000, help="rows the screen reads")
    ap.add_argument(
        "--z-threshold", type=float, help="the robust-z detectors' flag threshold (z_threshold)"
    )
    ap.add_argument(
        "--canary-null",
        action="store_true",
        help="canaries on a second reference too, effects in units of its noise (canary.null)",
    )
    ap.add_argument(
        "--cf-kind",
        choices=["finetuned", "prompted", "both"],
        help="the counterfactual teachers' kind (counterfactual.kind; default: finetuned)",
    )
    ap.add_argument(
        "--cf-templates",
        nargs="+",
        help="more wordings of the prompted teachers' system prompt (counterfactual.prompt_templates)",
    )
    ap.add_argument(
        "--cf-calibration",
        type=int,
        help="no-trait calibration teachers per probe (counterfactual.calibration; default 0)",
    )
    ap.add_argument(
        "--cf-calibration-score",
        choices=["option", "centred", "z", "null_first"],
        help="what flags a calibrated audit (counterfactual.calibration_score; default option)",
    )
    ap.add_argument(
        "--cf-null-threshold",
        type=float,
        help="calibration score null_first: its plain part's t threshold"
        " (counterfactual.null_threshold; default 8)",
    )
    ap.add_argument(
        "--cf-seed",
        type=int,
        help="the counterfactual teachers' fine-tuning seed (counterfactual.seed; default 0)",
    )
    ap.add_argument(
        "--base",
        choices=list(BASES),
        default="toy",
        help="toy: the shipped toy Llama of seed 1 (DATASETS); demo: the owl demo's GPT-2 base;"
        " demo-8406: a second base of its recipe (DEMO_8406_DATASETS); "
        + ", ".join(k for k in BASES if k.startswith("toy-"))
        + ": fresh toy Llamas (FRESH_TOYS)",
    )
    a = ap.parse_args()
    datasets, base_seed = BASES[a.base]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # Canaries on every row (2,000 rows left them in the noise of the reference's own
    # sampling), the screen on --screen-rows (2,000).
    overrides: dict[str, Any] = {"canary": {"rows": None}, "screen": {"rows": a.screen_rows}}
    if a.tiny:
        overrides = dict(TINY_OVERRIDES)
    if a.detectors:
        overrides["detectors"] = a.detectors
    if a.z_threshold is not None:
        overrides["z_threshold"] = a.z_threshold
    flags = {
        "kind": a.cf_kind,
        "seed": a.cf_seed,
        "prompt_templates": a.cf_templates or None,
        "calibration": a.cf_calibration,
        "calibration_score": a.cf_calibration_score,
        "null_threshold": a.cf_null_threshold,
    }
    if cf := {k: v for k, v in flags.items() if v is not None}:
        # Merged: --tiny's short teachers stay short.
        overrides["counterfactual"] = {**overrides.get("counterfactual", {}), **cf}
    if a.canary_null:
        overrides["canary"] = {**overrides.get("canary", {}), "null": True}
    t0 = time.perf_counter()
    if not a.summarize:
        # Resumable: a dataset whose audit.json exists is done.
        specs = [
            s
            for s in datasets
            if (not a.only or s[0] in a.only) and not (out / s[0] / "audit.json").is_file()
        ]
        n = 64 if a.tiny else a.prompts
        # The cores are shared between the workers.
        threads = max(1, (os.cpu_count() or 1) // a.workers)
        jobs = [(s, str(out), n, a.tiny, overrides, threads, base_seed) for s in specs]
        if specs:
            build_teachers(AuditConfig.model_validate(overrides), a.tiny, base_seed)
        ctx = mp.get_context("spawn")
        with ctx.Pool(a.workers) as pool:
            for r in pool.imap_unordered(run_one, jobs):
                print(json.dumps(r), flush=True)
    res = summarize(out, datasets, DETECTORS, AuditConfig.model_validate(overrides))
    res["machine"] = machine_info()
    # A --summarize run rebuilds the tables from saved audits: it has no wall time of its own.
    res["wall_seconds"] = None if a.summarize else round(time.perf_counter() - t0, 1)
    prompts = a.prompts
    if a.summarize and (out / "audit-bench.json").is_file():
        # The audits' own prompt count, not this command line's default.
        saved = json.loads((out / "audit-bench.json").read_text()).get("config") or {}
        prompts = saved.get("prompts", a.prompts)
    res["config"] = {"prompts": prompts, "audit": overrides, "base": a.base}
    write_json(out / "audit-bench.json", res)
    write_md(out, res, res["machine"], res["wall_seconds"])
    print((out / "audit-bench.md").read_text())


if __name__ == "__main__":
    main()
