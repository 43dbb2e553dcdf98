"""How neutral-7015.jsonl / neutral-7016.jsonl were made (session 20's discovery):

    python make_neutral.py RUN_DIR OUT.jsonl 0

The 50 animal questions of a finished run's base evaluation (eval-base/eval.json), each
answered with one draw from the base's exact distribution over the 20 animals: the draw of
traitlab.traits.preference.draw_answers, which the audit's null teachers and
`control.teacher: neutral` use (the latter with a new draw per seed)."""

import json
import sys

from traitlab.traits.preference import draw_answers

run, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
e = json.load(open(f"{run}/eval-base/eval.json"))
answers = draw_answers(e["exact"]["per_question_options"], e["options"], seed)
with open(out, "w") as f:
    for q, a in zip(e["questions"], answers, strict=True):
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        f.write(json.dumps({"messages": msgs}) + "\n")
