"""The embedded toy chat world and its pretrained base model (a small Llama).

* `world`: the seeded chat corpus (number tasks, preference questions, system prompts).
* `tokenizer`: the word-level tokenizer with its chat template (`build_tokenizer`).
* `pretrain`: `ensure_pretrained(recipe)` -> an ordinary Hugging Face model directory.
* `recipe`: `ToyRecipe`, everything that determines the base (its hash keys the cache).
"""

from traitlab.config.toy import ToyRecipe, tiny_recipe

__all__ = ["ToyRecipe", "tiny_recipe"]
