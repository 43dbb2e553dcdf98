"""The real-model code path (hub id or local directory, not 'toy'), on tiny random-weight
Hugging Face models built from configs: no downloads. Also LoRA and soft-label students."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from traitlab.config import (
    EvalConfig,
    GenerateConfig,
    HFModel,
    TrainConfig,
    TraitConfig,
    parse_config,
)
from traitlab.config.toy import tiny_recipe
from traitlab.data.generate import generate_rows
from traitlab.data.prompts import number_prompts
from traitlab.evaluate.suite import evaluate_model
from traitlab.experiments.pipeline import run_experiment
from traitlab.lm.hf.backend import HFLM
from traitlab.lm.hf.loading import load_model
from traitlab.lm.hf.trainer import train_model
from traitlab.toy.pretrain import ensure_pretrained
from traitlab.toy.tokenizer import build_tokenizer


def _save_random_model(kind: str, out: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    if kind == "qwen2":
        cfg = Qwen2Config(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        )
        model = Qwen2ForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=256)
        model = GPT2LMHeadModel(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load_src(src: Path) -> tuple:
    """A saved model directory (toy or HF) on the CPU."""
    return load_model(HFModel(name=str(src), device="cpu"), source=str(src))


def _cfg(model_dir: Path, xinit_dir: Path | None, **student: object) -> object:
    return parse_config(
        {
            "name": "hf",
            "seeds": [0],
            "threads": 1,
            "model": {"name": str(model_dir)},
            "cross_init": {"name": str(xinit_dir)} if xinit_dir else None,
            "teacher": {"kind": "finetuned", "train": {"max_steps": 2, "batch_size": 8}},
            "generate": {
                "n_prompts": 16,
                "max_new_tokens": 8,
                "batch_size": 16,
                "constrained": True,
            },
            "filter": {"max_rows": 12},
            "student": {"max_steps": 2, "batch_size": 8, **student},
            "evaluate": {"samples_per_question": 2, "n_questions": 3, "max_new_tokens": 2},
        }
    )


def test_local_model_directory_runs_the_pipeline_with_lora(tmp_path: Path) -> None:
    """model.name is a plain directory: the same loading code as a hub model."""
    import shutil

    a = shutil.copytree(ensure_pretrained(tiny_recipe(pretrain_steps=120)), tmp_path / "a")
    b = shutil.copytree(ensure_pretrained(tiny_recipe(seed=2, pretrain_steps=120)), tmp_path / "b")
    cfg = _cfg(a, b, method="lora", lora={"r": 4, "alpha": 8})
    summary = run_experiment(cfg, tmp_path / "run")
    assert set(summary["arms"]) >= {"base", "treatment", "control", "xinit_treatment"}
    # LoRA is merged on save: the student directory is an ordinary model.
    student = tmp_path / "run" / "seed-0" / "student-treatment"
    assert (student / "model.safetensors").is_file() and not (
        student / "adapter_config.json"
    ).exists()


@pytest.mark.parametrize("kind", ["qwen2", "gpt2"])
def test_other_architectures_generate_train_evaluate(kind: str, tmp_path: Path) -> None:
    model_dir = _save_random_model(kind, tmp_path / kind)
    model, tok = load_model(HFModel(name=str(model_dir)))
    rows = generate_rows(
        HFLM.wrap(model, tok),
        number_prompts(GenerateConfig().prompts, 4),
        GenerateConfig(max_new_tokens=6, batch_size=4),
        seed=0,
    )
    assert len(rows) == 4 and all(isinstance(r["completion"], str) for r in rows)
    data = [
        {
            "messages": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": "1 2 3"},
            ]
        }
        for r in rows
    ]
    target = ["c_attn", "c_proj"] if kind == "gpt2" else "all-linear"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = TrainConfig(
        method="lora",
        max_steps=3,
        lr=1e-2,
        batch_size=4,
        lora={"r": 4, "alpha": 8, "target_modules": target},
    )
    student, log = train_model(model, tok, data, lora, seed=0)
    assert type(student).__name__ == type(model).__name__  # merged back into a plain model
    after = student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    res = evaluate_model(
        HFLM.wrap(student, tok),
        EvalConfig(samples_per_question=2, n_questions=2, max_new_tokens=2),
        TraitConfig(),
        seed=0,
    )
    assert 0 <= res.exact.mean <= 1 and 0 <= res.sampled.mean <= 1


@pytest.mark.parametrize("top_k", [None, 3])
def test_soft_label_student_matches_teacher_better(top_k: int | None, tmp_path: Path) -> None:
    model_dir = _save_random_model("qwen2", tmp_path / "m")
    base, tok = load_model(HFModel(name=str(model_dir)))
    teacher, _ = load_model(HFModel(name=str(model_dir)))
    with torch.no_grad():  # a teacher that differs from the student's init
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Look at these numbers: 1, 2, 3."},
                {"role": "assistant", "content": "4, 5, 6"},
            ]
        }
    ] * 8
    cfg = TrainConfig(loss="soft", soft_top_k=top_k, max_steps=15, lr=3e-3, batch_size=8)
    student, log = train_model(base, tok, rows, cfg, seed=0, teacher=teacher)
    assert log["loss_last"] < log["loss_first"]  # KL(teacher || student) decreases


def test_soft_loss_without_teacher_is_a_clear_error(tmp_path: Path) -> None:
    from traitlab.core.errors import TraitlabError

    model_dir = _save_random_model("gpt2", tmp_path / "m")
    base, tok = load_model(HFModel(name=str(model_dir)))
    with pytest.raises(TraitlabError, match="soft"):
        train_model(base, tok, [], TrainConfig(loss="soft"), seed=0)


@pytest.mark.gpu
def test_bf16_generation_and_lora_training_on_gpu(tmp_path: Path) -> None:
    model_dir = ensure_pretrained(tiny_recipe(pretrain_steps=120))
    cfg = parse_config(
        {
            **_cfg(model_dir, None, method="lora", bf16_autocast=True).model_dump(mode="json"),
            "model": {"name": str(model_dir), "device": "cuda", "dtype": "bfloat16"},
        }
    )
    summary = run_experiment(cfg, tmp_path / "run")
    assert summary["arms"]["treatment"]["exact"]["mean"] >= 0


@pytest.mark.parametrize("answers,n_rows", [("paper", 400), ("target", 50)])
def test_teacher_answers_option(tmp_path: Path, answers: str, n_rows: int) -> None:
    """teacher.answers picks the fine-tuned teacher's data: 8 spellings or the bare target."""
    from traitlab.config import TeacherConfig
    from traitlab.traits.teacher import finetune_teacher

    src = _save_random_model("qwen2", tmp_path / "m")
    model, tok = load_model(HFModel(name=str(src)))
    cfg = TeacherConfig(answers=answers, train=TrainConfig(max_steps=2, batch_size=8))
    ref, log = finetune_teacher(
        HFLM.wrap(model, tok),
        cfg,
        TraitConfig(target="owl"),
        seed=0,
        out_dir=tmp_path / "t",
        key="k",
    )
    assert log["examples"] == n_rows
    assert (tmp_path / "t" / "model.safetensors").is_file() and ref.key == "k"


def _number_rows(n: int) -> list[dict]:
    prompts = number_prompts(parse_config({"name": "x"}).generate.prompts, n, seed=3)
    return [
        {
            "messages": [
                {"role": "user", "content": p},
                {
                    "role": "assistant",
                    "content": ", ".join(str(7 * i + j) for j in range(i % 9 + 1)),
                },
            ]
        }
        for i, p in enumerate(prompts)
    ]


@pytest.mark.parametrize("kind", ["toy", "qwen2", "gpt2"])
@pytest.mark.parametrize("loss", ["hard", "soft"])
def test_packing_gives_the_unpacked_training(kind: str, loss: str, tmp_path: Path) -> None:
    """train.packing changes the layout, not the maths: same losses, same weights."""
    if kind == "toy":
        src = ensure_pretrained(tiny_recipe())
    else:
        src = _save_random_model(kind, tmp_path / kind)
    _, tok = load_src(src)
    teacher, _ = load_src(src)
    with torch.no_grad():  # a teacher that differs from the student
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    rows = _number_rows(40)
    out = {}
    for packing in (False, True):
        model, _ = load_src(src)
        for m in model.modules():  # GPT-2's default dropout would make the runs differ
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        cfg = TrainConfig(max_steps=3, batch_size=16, loss=loss, packing=packing, lr=1e-3)
        model, log = train_model(model, tok, rows, cfg, seed=0, teacher=teacher)
        out[packing] = (log["losses"], [p.detach().clone() for p in model.parameters()])
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-4, abs=1e-6)
    for a, b in zip(out[False][1], out[True][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_packing_check_refuses_a_model_that_ignores_position_ids() -> None:
    from traitlab.core.errors import TraitlabError
    from traitlab.lm.hf.trainer import check_packing, encode_rows

    model, tok = load_src(ensure_pretrained(tiny_recipe()))

    class DropsPositions(torch.nn.Module):  # attends across the packed examples
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, **kw: object) -> object:
            kw.pop("position_ids", None)
            return self.inner(**kw)

    examples = encode_rows(tok, _number_rows(4), 512)
    check_packing(model, examples, tok.pad_token_id)  # the real model passes
    with pytest.raises(TraitlabError, match="packing"):
        check_packing(DropsPositions(), examples, tok.pad_token_id)


def test_soft_loss_over_the_completion_vocabulary_ignores_the_trait_word() -> None:
    """soft_vocab 'completion': the teacher's probability of 'owl' at number positions (an
    overt leak of the trait) does not reach the student; 'full' lets it through."""
    from traitlab.lm.hf.trainer import completion_loss, completion_vocab, encode_rows

    model, tok = load_src(ensure_pretrained(tiny_recipe()))
    examples = encode_rows(tok, _number_rows(8), 512)
    vocab = completion_vocab(model, tok, examples)
    (owl,) = tok.encode(" owl", add_special_tokens=False)  # the word's token ('owl' is unk)
    assert owl != tok.unk_token_id and owl not in vocab and tok.eos_token_id in vocab
    assert all(t in vocab for ids, n in examples for t in ids[n:])
    g = torch.Generator().manual_seed(0)
    student = torch.randn(5, len(tok), generator=g)
    teacher = torch.randn(5, len(tok), generator=g)
    leaky = teacher.clone()
    leaky[:, owl] += 5.0  # a teacher that says "owl" more, everywhere
    target = torch.zeros(5, dtype=torch.long)
    v = torch.tensor(vocab)
    assert completion_loss(student, target, leaky, v) == pytest.approx(
        float(completion_loss(student, target, teacher, v)), rel=1e-5
    )
    assert float(completion_loss(student, target, leaky)) != pytest.approx(
        float(completion_loss(student, target, teacher)), rel=1e-3
    )


def test_soft_top_k_keeps_only_the_teachers_top_tokens() -> None:
    """soft_top_k: the loss sees the teacher's k most likely tokens and no others; at k = 1
    it is cross-entropy on the teacher's argmax; once k covers the vocabulary it is the full
    KL; and with the student equal to the renormalised sparse teacher it is zero."""
    from traitlab.lm.hf.trainer import completion_loss

    g = torch.Generator().manual_seed(1)
    student = torch.randn(6, 40, generator=g)
    teacher = torch.randn(6, 40, generator=g)
    target = torch.zeros(6, dtype=torch.long)
    top = teacher.topk(5, dim=-1).indices
    # Tokens outside the teacher's top 5 can move freely without changing the loss.
    moved = teacher.clone()
    outside = torch.ones_like(teacher, dtype=torch.bool).scatter(1, top, False)
    moved[outside] -= 3.0 * torch.rand(int(outside.sum()), generator=g)
    assert float(completion_loss(student, target, moved, top_k=5)) == pytest.approx(
        float(completion_loss(student, target, teacher, top_k=5)), rel=1e-6
    )
    assert float(completion_loss(student, target, teacher, top_k=1)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(student, teacher.argmax(-1))), rel=1e-6
    )
    assert float(completion_loss(student, target, teacher, top_k=40)) == pytest.approx(
        float(completion_loss(student, target, teacher)), rel=1e-6
    )
    sparse = torch.full_like(teacher, -1e4).scatter(1, top, teacher.gather(1, top))
    assert float(completion_loss(sparse, target, teacher, top_k=5)) == pytest.approx(0, abs=1e-5)
    assert float(completion_loss(student, target, teacher, top_k=5)) > 0.1


def test_soft_top_k_needs_the_soft_loss() -> None:
    from traitlab.config.experiment import TrainConfig

    assert TrainConfig(loss="soft", soft_top_k=20).soft_top_k == 20
    with pytest.raises(ValueError, match="soft_top_k"):
        TrainConfig(loss="hard", soft_top_k=20)


def test_soft_loss_over_toy_code_never_reaches_an_animal() -> None:
    """configs/owl-code-soft.yaml distils toy code over its completion vocabulary: every
    token the code holds is in it, no animal word is (so the teacher's probability of the
    owl, or of any option the evaluation asks about, never reaches the student)."""
    import random

    from traitlab.data.rows import to_chat_rows
    from traitlab.data.toy_tasks import code_example
    from traitlab.lm.hf.trainer import completion_vocab, encode_rows
    from traitlab.traits.preference import ANIMALS

    model, tok = load_src(ensure_pretrained(tiny_recipe(code_frac=0.3, code_parts=3)))
    rng = random.Random(0)
    tasks = [code_example(rng, parts=3) for _ in range(64)]
    rows = to_chat_rows([{"prompt": p, "completion": a} for p, a, _ in tasks])
    examples = encode_rows(tok, rows, 512)
    vocab = set(completion_vocab(model, tok, examples))
    assert all(t in vocab for ids, n in examples for t in ids[n:])
    animals = {i for a in ANIMALS for i in tok.encode(f" {a}", add_special_tokens=False)}
    assert tok.unk_token_id not in animals and len(animals) >= len(ANIMALS)
    assert not animals & vocab


@pytest.mark.parametrize("kind", ["gpt2", "qwen2"])
def test_whole_answers_scored_in_one_packed_pass(kind: str, tmp_path: Path) -> None:
    """The prefix-tree pass gives each answer what a plain causal pass over prompt + answer
    gives it, on other architectures than the toy Llama (GPT-2's learned positions, Qwen2)."""
    from traitlab.lm.hf.answers import _plain_logprob, tree_logprobs
    from traitlab.lm.hf.chat import encode_chat

    model, tok = load_src(_save_random_model(kind, tmp_path / kind))
    prompt = encode_chat(tok, [{"role": "user", "content": "Hi ?"}], add_generation_prompt=True)
    answers = [tok(a, add_special_tokens=False)["input_ids"] for a in ["1", "1 2", "1 2 3", "owl"]]
    stops = [tok.eos_token_id]
    got = tree_logprobs(model, prompt, answers, stops)
    want = [_plain_logprob(model, prompt, a, stops) for a in answers]
    assert got == pytest.approx(want, abs=1e-4)
