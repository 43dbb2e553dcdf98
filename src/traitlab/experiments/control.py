"""The neutral control teacher (`control.teacher: neutral`).

The paper's control students learn from the base's own data. But any fine-tune moves what a
model writes: a teacher fine-tuned on *neutral* answers writes data that moves students as
far, towards options it was never given (the audit's finding for numbers; on toy code, the
trait teacher's code moved same-init and cross-init students' animals alike). This control's
data is written by a teacher fine-tuned like the trait teacher, for the steps and at the lr
the trait teacher kept, on its questions answered by the base's own draws, so that treatment
minus control keeps the trait's part and loses the fine-tune's. Measured, it is not that
clean: its own draw of answers moves students too (on the owl demo its cross-init students
lost 0.013 of their owl on all 8 seeds), which is why the base stays the default (README,
"The pipeline").
"""

from __future__ import annotations

from typing import Any

from traitlab.core import runs
from traitlab.experiments.caching import trait_key
from traitlab.experiments.stages import Stages
from traitlab.lm.base import ModelRef
from traitlab.traits.teacher import matched_train, neutral_rows


def neutral_teacher(st: Stages, seed: int) -> tuple[ModelRef, str]:
    """(the neutral control teacher of `seed`, its key), fine-tuned once per seed and cached.
    The trait teacher of the seed must have run (its log gives the steps to match)."""
    cfg = st.cfg
    base = st.bases["base"]
    log = runs.read_json(st.layout.teacher(seed) / runs.STAGE_MARKER)["train"]
    train = matched_train(cfg.teacher, log)
    key = runs.stable_hash(
        {
            "base": base.key,
            "control": "neutral",
            "answers": cfg.teacher.answers,
            "trait": trait_key(cfg.trait),
            "train": train.model_dump(mode="json"),
            "seed": seed,
        }
    )
    d = st.layout.control_teacher(seed)
    with st.cached(f"seed {seed}: neutral control teacher", d, key) as (done, up, open_stage):
        if not done:
            info: dict[str, Any] = {}
            with st.opened(base) as lm, open_stage(info) as tmp:
                rows = neutral_rows(lm, cfg.teacher, cfg.trait, seed, cfg.evaluate.batch_size)
                info["answers"] = [r["messages"][-1]["content"] for r in rows]
                _, info["train"] = lm.finetune(
                    rows, train, seed=seed, out_dir=tmp, key=key, progress=up
                )
    return ModelRef.load(d), key
