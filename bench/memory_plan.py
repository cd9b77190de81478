"""Per-GPU memory plan of the paper configs, built on the meta device (no weights, no Hub).

    python bench/memory_plan.py                      # the six paper setups
    python bench/memory_plan.py aquila-stage1 --json plan.json

Each setup's YAML files are composed left to right (as ``zoo fit --config a --config b``) and
its model is built on the meta device: the Hugging Face ids it names are replaced by the
architecture descriptions in ``bench/architectures`` (``config.json`` only), timm towers are
built from timm's registry without weights, the tokenizer is a stand-in of the real one's
length, and ``init_checkpoint`` / ``location.checkpoint`` / ``llava_projector`` are dropped. Then, per GPU:

* **weights**: every parameter in its dtype (the LLM in ``llm.dtype``, the rest float32 under
  ``bf16-mixed``). FSDP (FULL_SHARD) keeps ``1/world`` of them, plus two gathered units in
  bf16 (the one running and the one prefetched; the whole model when no wrap policy is set).
* **grads**: trainable parameters, in their dtype (``1/world`` under FSDP); DDP adds its
  communication buckets, another copy (Lightning's default ``gradient_as_bucket_view=False``).
* **optimizer**: AdamW's ``exp_avg`` and ``exp_avg_sq`` per trainable parameter, in its dtype.
* **activations**: a one-step trace at the micro-batch: the model's own ``training_step`` on
  meta tensors (longest sequences: ``max_length`` text tokens plus the visual tokens), counting
  every tensor autograd saves for the backward pass (parameters excluded, views counted once),
  plus twice the largest of them (its gradient and one temporary in the backward pass).
  Attention is counted as the fused kernels store it (q, k, v, output, log-sum-exp), not as
  the B×H×T×T matrix a math fallback would keep. No autocast on meta: float32 modules count
  float32 activations (an over-estimate of the connectors' under bf16-mixed). With FSDP's
  ``activation_checkpointing_policy`` a checkpointed layer keeps only its input, and one
  layer's activations are recomputed at a time.
* **runtime**: 3 GB for the CUDA context, NCCL buffers and allocator fragmentation (assumed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARCHITECTURES = ROOT / "bench" / "architectures"
GB = 1e9
GPU_MEMORY_GB = 80.0
RUNTIME_GB = 3.0

#: Hugging Face ids in the paper configs -> (architecture folder here, tokenizer length).
MODELS: dict[str, tuple[str, int]] = {
    "lmsys/vicuna-7b-v1.5": ("vicuna-7b-v1.5", 32000),
    "meta-llama/Meta-Llama-3-8B-Instruct": ("meta-llama-3-8b-instruct", 128256),
    "bert-base-uncased": ("bert-base-uncased", 30522),
}

#: The paper setups: YAML files composed left to right.
PAPER_CONFIGS: dict[str, list[str]] = {
    "aquila-stage1": ["configs/aquila/stage1.yaml"],
    "aquila-stage2": ["configs/aquila/stage1.yaml", "configs/aquila/stage2.yaml"],
    "fuse-stage1": ["configs/fuse/stage1.yaml"],
    "fuse-stage2": ["configs/fuse/stage1.yaml", "configs/fuse/stage2.yaml"],
    "geopix-stage1": ["configs/geopix/stage1.yaml"],
    "geopix-stage2": ["configs/geopix/stage1.yaml", "configs/geopix/stage2.yaml"],
    "flavars-skyscript": ["configs/flavars/skyscript_vitb16.yaml"],
}

#: Object categories assumed for GeoPix's class-wise memory (the data sets it; 64 entries a
#: class, a few MB either way).
GEOPIX_CLASSES = 10


# --------------------------------------------------------------------------- configs
def compose(files: list[str]) -> dict:
    """Deep-merge the YAML files (mappings merge, everything else is replaced)."""

    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            return {**a, **{k: merge(a.get(k), v) for k, v in b.items()}}
        return b

    out: dict = {}
    for file in files:
        out = merge(out, yaml.safe_load((ROOT / file).read_text()))
    return out


def resolve_class(path: str) -> type:
    if "." not in path:
        import zoo.data
        import zoo.models

        for module in (zoo.models, zoo.data):
            if hasattr(module, path):
                return getattr(module, path)
        raise ValueError(f"unknown short class name {path!r}")
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def architecture(name: str) -> tuple[str, int]:
    if name not in MODELS:
        raise ValueError(
            f"{name!r} has no architecture description: add bench/architectures/<name>/config.json "
            "and an entry in MODELS"
        )
    folder, vocab = MODELS[name]
    return str(ARCHITECTURES / folder), vocab


def stand_in_tokenizer(length: int, chat: bool, seg: tuple[int, int] | None = None):
    """A word-level tokenizer of ``length`` tokens (the real one's, ``<image>`` included; the
    segmentation tokens come on top, as the data adds them). ``chat``: a generator's (the
    word-level tokenizer serves both)."""
    from zoo.data.tokenize import CHAT_WORDS, SPECIAL_TOKENS, word_level_tokenizer

    # ``<image>`` is one of the word-level specials (ids below the LLM's table, which
    # check_vocabulary requires); the segmentation tokens come on top.
    extra = len(SPECIAL_TOKENS) + len(CHAT_WORDS)
    tokenizer = word_level_tokenizer([f"t{i}" for i in range(length - extra)])
    if seg is not None:
        from zoo.data.referring import add_seg_tokens

        tokenizer = add_seg_tokens(tokenizer, *seg)
    return tokenizer


def _dataclass_args(cls: type, kwargs: dict) -> dict:
    """Dicts given for dataclass-typed arguments (``optimizer:``, ``objectives:``) as the
    dataclasses, over the family's defaults, as jsonargparse does."""
    import inspect

    signature = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__)
    out = dict(kwargs)
    for name, value in kwargs.items():
        kind = hints.get(name)
        if isinstance(value, dict) and dataclasses.is_dataclass(kind):
            default = signature.parameters[name].default
            base = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else {}
            out[name] = kind(**(base | value))
    return out


@dataclass
class Setup:
    """A paper setup as the plan sees it."""

    name: str
    model: nn.Module
    batch: dict[str, Tensor]
    micro_batch: int
    accumulate: int
    world: int
    strategy: str
    wrap: set[type] = field(default_factory=set)
    checkpointed: set[type] = field(default_factory=set)
    precision: str = "32-true"


def _strategy(trainer: dict) -> tuple[str, set[type], set[type]]:
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str):
        return ("fsdp" if strategy.startswith("fsdp") else "ddp"), set(), set()
    path = strategy["class_path"]
    if "FSDP" not in path:
        return "ddp", set(), set()
    init = strategy.get("init_args", {})
    classes = lambda key: {resolve_class(c) for c in init.get(key) or []}  # noqa: E731
    return "fsdp", classes("auto_wrap_policy"), classes("activation_checkpointing_policy")


def build(name: str, files: list[str]) -> Setup:
    """The setup's model on the meta device and a meta batch at its micro-batch size."""
    from zoo.encoders.llm import LLMSpec

    cfg = compose(files)
    trainer, model_cfg, data_cfg = cfg["trainer"], cfg["model"], cfg["data"]
    cls = resolve_class(model_cfg["class_path"])
    kwargs = dict(model_cfg.get("init_args", {}))
    data = dict(data_cfg.get("init_args", {}))
    image_size = data.get("image_size", 224)
    if kwargs.pop("llava", None) is not None:
        # LLaVA-1.5-7B (GeoPix's start): CLIP ViT-L/14-336 and a Llama of Vicuna-7B's shape; its
        # tokenizer is Vicuna's with <image> and padding added (32064 rows instead of 32000).
        llm = kwargs.get("llm")
        llm = dict(llm) if isinstance(llm, dict) else {}  # keep the config's dtype and format
        kwargs |= {
            "vision": {"name": "vit_large_patch14_clip_336.openai"},
            "llm": llm | {"name": "lmsys/vicuna-7b-v1.5"},
        }
        data.setdefault("tokenizer", "lmsys/vicuna-7b-v1.5")
    generator = "llm" in kwargs
    seg = None
    if cls.__name__ == "GeoPix":
        seg_tokens = kwargs.get("seg_tokens") or {}
        seg = (len(kwargs.get("feature_layers", [1, 3])), seg_tokens.get("per_scale", 3))
    if (kwargs.pop("flava", None) or {}).get("folder") is not None:
        # FLAVA's own modules need its folder; a stand-in of flava-full's size builds on meta
        # from the zoo's encoders (ViT-B/16, BERT-base, a 768-wide 6-layer fusion). The frozen
        # DALL-E codebook (~97 M parameters, no gradients or optimizer state) is left out.
        kwargs |= {
            "vision": {"name": "vit_base_patch16_224"},
            "text": {"name": "bert-base-uncased"},
            "fusion": {"width": 768, "layers": 6, "heads": 12},
        }
        data.setdefault("tokenizer", "bert-base-uncased")
        data.pop("processor", None)
    spec = LLMSpec.of(kwargs["llm"]) if generator else None
    _, vocab = architecture(data.get("tokenizer") or spec.tokenizer_source())
    tokenizer = stand_in_tokenizer(vocab, chat=generator, seg=seg)
    kwargs |= {"tokenizer": tokenizer, "image_size": image_size}
    if generator:
        kwargs["vision"] = dict(kwargs.get("vision") or {}) | {"pretrained": False}
        # The stand-in word-level tokenizer writes the word format; the format does not change
        # the memory (one conversation's tokens are the batch's text_tokens either way).
        kwargs["llm"] = replace(
            spec, name=architecture(spec.name)[0], pretrained=False, conversation=None
        )
        kwargs["stage"] = dict(kwargs.get("stage") or {}) | {"init_checkpoint": None}
        kwargs["llava_projector"] = None  # LLaVA's weights, the projector's shapes: nothing to plan
        # Meta tensors do not compile; the plan counts the eager step's tensors (an upper bound).
        kwargs["speed"] = dict(kwargs.get("speed") or {}) | {"compile": False}
        kwargs["class_names"] = [f"class{i}" for i in range(GEOPIX_CLASSES)]
    else:  # FLAVARS
        text = dict(kwargs.get("text") or {})
        text["name"], _ = architecture(text.get("name", "tiny"))
        kwargs["text"] = text | {"pretrained": False}
        kwargs["vision"] = dict(kwargs.get("vision") or {}) | {"pretrained": False}
        kwargs["location"] = dict(kwargs.get("location") or {}) | {"checkpoint": None}
    kwargs = _dataclass_args(cls, kwargs)
    with torch.device("meta"):
        model = cls(**kwargs)
    micro = int(data.get("batch_size", 1))
    batch = meta_batch(model, cls.__name__, micro, image_size, data, tokenizer)
    kind, wrap, checkpointed = _strategy(trainer)
    world = int(trainer.get("devices", 1)) * int(trainer.get("num_nodes", 1))
    return Setup(
        name,
        model,
        batch,
        micro,
        int(trainer.get("accumulate_grad_batches", 1)),
        world,
        kind,
        wrap,
        checkpointed,
        str(trainer.get("precision", "32-true")),
    )


def meta_batch(model: nn.Module, family: str, b: int, size: int, data: dict, tokenizer) -> dict:
    """The longest batch the data can give, on meta (values do not matter, shapes do)."""
    meta = {"device": "meta"}
    image = torch.empty(b, 3, size, size, **meta)
    if family == "FLAVARS":
        t = int(data.get("max_text_length", 77))
        ids = torch.empty(b, t, dtype=torch.long, **meta)
        return {
            "image": image,
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "location": torch.empty(b, 2, **meta),
        }
    t = int(data.get("max_length", 2048))
    ids = torch.empty(b, t, dtype=torch.long, **meta)
    batch = {
        "image": image,
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids,
    }
    if family == "GeoPix":
        k = int(data.get("max_targets", 3))
        batch |= {
            "mask": torch.empty(b, k, size, size, **meta),
            "mask_valid": torch.ones(b, k, dtype=torch.bool, **meta),
            "category": torch.empty(b, k, dtype=torch.long, **meta),
            "target_index": torch.arange(b * k, **meta),
            "target_positions": torch.empty(
                b * k, model.tokens_per_target, dtype=torch.long, **meta
            ),
        }
    return batch


# ------------------------------------------------------------------------ parameters
def parameter_table(model: nn.Module) -> list[dict[str, Any]]:
    """Total and trainable parameters (and bytes) per top-level module."""
    rows = []
    for name, module in model.named_children():
        params = list(module.parameters())
        if not params:
            continue
        rows.append(
            {
                "module": name,
                "params": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
                "bytes": sum(p.numel() * p.element_size() for p in params),
                "trainable_bytes": sum(
                    p.numel() * p.element_size() for p in params if p.requires_grad
                ),
            }
        )
    return rows


# ----------------------------------------------------------------------- activations
class _FusedAttention(torch.autograd.Function):
    """What the fused SDPA kernels save: q, k, v, the output and the log-sum-exp."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse, *([mask] if mask is not None else []))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        q, k, v = ctx.saved_tensors[:3]
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), None


def _sdpa(query, key, value, attn_mask=None, *args, **kwargs) -> Tensor:
    dtype = min((query.dtype, key.dtype, value.dtype), key=lambda d: torch.finfo(d).bits)
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    if kwargs.get("enable_gqa") and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    return _FusedAttention.apply(query, key, value, attn_mask)


class MetaAutocast(TorchFunctionMode):
    """bf16 autocast for meta tensors (autocast has no meta backend): the inputs of matrix
    products and convolutions are cast to bf16, those of norms, softmax and losses to float32,
    as CUDA autocast's op lists do."""

    LOW = {
        F.linear,
        torch.matmul,
        torch.Tensor.matmul,
        torch.Tensor.__matmul__,
        torch.bmm,
        torch.baddbmm,
        torch.addmm,
        torch.einsum,
        F.conv1d,
        F.conv2d,
        F.conv3d,
    }
    FULL = {
        F.layer_norm,
        F.group_norm,
        F.softmax,
        torch.softmax,
        torch.Tensor.softmax,
        F.log_softmax,
        F.cross_entropy,
        F.binary_cross_entropy_with_logits,
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtype = torch.bfloat16 if func in self.LOW else torch.float32 if func in self.FULL else None
        if dtype is not None:

            def cast(x: Any) -> Any:
                if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype:
                    return x.to(dtype)
                if isinstance(x, (list, tuple)):
                    return type(x)(cast(i) for i in x)
                return x

            args, kwargs = cast(args), {k: cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    original = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


def trace_activations(setup: Setup) -> dict[str, float]:
    """Bytes autograd saves in one training step, per the strategy's checkpointing."""
    model = setup.model
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}
    owner: dict[int, int] = {}  # storage -> checkpointed layer that saved it (-1: none)
    inputs: dict[int, int] = {}  # checkpointed layer -> bytes of its input
    current = [-1]

    by_module: dict[str, int] = {}
    stack = ["(family)"]

    def pack(t: Tensor) -> Tensor:
        key = t.untyped_storage()._cdata
        if key not in params and key not in saved:
            saved[key] = t.untyped_storage().nbytes()
            owner[key] = current[0]
            by_module[stack[-1]] = by_module.get(stack[-1], 0) + saved[key]
        return t

    handles = []
    for name, child in model.named_children():  # who saved what (the innermost module)
        handles += [
            child.register_forward_pre_hook(lambda *_, name=name: stack.append(name)),
            child.register_forward_hook(lambda *_: stack.pop() and None),
        ]
    layers = [
        m
        for m in model.modules()
        if setup.checkpointed and isinstance(m, tuple(setup.checkpointed))
    ]
    for index, layer in enumerate(layers):

        def before(module, args, kwargs, index=index):
            hidden = args[0] if args else next(iter(kwargs.values()))
            inputs[index] = hidden.numel() * hidden.element_size()
            current[0] = index

        def after(module, args, output):
            current[0] = -1

        # First, so the layer's own pre-hooks (MDA, injection) count inside it, as they run
        # inside a checkpoint wrapper.
        handles += [
            layer.register_forward_pre_hook(before, with_kwargs=True, prepend=True),
            layer.register_forward_hook(after),
        ]
    model.train()
    batch = setup.batch
    mixed = setup.precision.startswith("bf16")
    if mixed and setup.strategy == "fsdp":
        # FSDP's mixed precision computes with bf16 copies of every unit's parameters and
        # casts the inputs: the trace runs the model in bf16 too.
        model.to(torch.bfloat16)
        batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
    autocast = MetaAutocast() if mixed else contextlib.nullcontext()
    try:
        with (
            fused_attention(),
            autocast,
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            loss = model.training_step(batch, 0)
    finally:
        for handle in handles:
            handle.remove()
    del loss
    if layers:
        per_layer: dict[int, int] = {}
        for key, size in saved.items():
            per_layer[owner[key]] = per_layer.get(owner[key], 0) + size
        outside = per_layer.pop(-1, 0)
        kept = outside + sum(inputs.values()) + max(per_layer.values(), default=0)
    else:
        kept = sum(saved.values())
    largest = max(saved.values(), default=0)
    return {
        "saved": kept,
        "backward_peak": 2 * largest,
        "total": kept + 2 * largest,
        "by_module": by_module,
    }


# ------------------------------------------------------------------------------ plan
def _largest_unit(model: nn.Module, wrap: set[type]) -> int:
    """Bytes (bf16) of the largest FSDP unit: a wrapped module, or what the root keeps."""
    units = [m for m in model.modules() if wrap and isinstance(m, tuple(wrap))]
    inside = {id(p) for u in units for p in u.parameters()}
    root = sum(p.numel() for p in model.parameters() if id(p) not in inside)
    return 2 * max([root, *(sum(p.numel() for p in u.parameters()) for u in units)])


def plan(setup: Setup) -> dict[str, Any]:
    """Parameters per module and the per-GPU memory (GB) of one setup."""
    table = parameter_table(setup.model)
    weights = sum(r["bytes"] for r in table)
    trainable = sum(r["trainable_bytes"] for r in table)
    unit = _largest_unit(setup.model, setup.wrap)
    activations = trace_activations(setup)  # after the table: FSDP's trace casts to bf16
    if setup.strategy == "fsdp":
        n = setup.world
        memory = {
            "weights": weights / n + 2 * unit,
            "grads": trainable / n,
            "optimizer": 2 * trainable / n,
        }
    else:
        memory = {"weights": weights, "grads": 2 * trainable, "optimizer": 2 * trainable}
    memory["activations"] = activations["total"]
    saved_by = {
        k: v / GB for k, v in sorted(activations["by_module"].items(), key=lambda kv: -kv[1])
    }
    memory = {k: v / GB for k, v in memory.items()}
    memory["runtime"] = RUNTIME_GB
    memory["total"] = sum(memory.values())
    return {
        "setup": setup.name,
        "strategy": setup.strategy,
        "world": setup.world,
        "micro_batch": setup.micro_batch,
        "accumulate": setup.accumulate,
        "global_batch": setup.micro_batch * setup.accumulate * setup.world,
        "checkpointing": sorted(c.__name__ for c in setup.checkpointed),
        "tokens": int(setup.batch["input_ids"].shape[1]),
        "parameters": table,
        "memory_gb": memory,
        "saved_gb_by_module": saved_by,
        "fits": memory["total"] <= GPU_MEMORY_GB,
    }


def format_plan(result: dict[str, Any]) -> str:
    lines = [
        f"== {result['setup']}: {result['strategy']} on {result['world']} GPUs, micro-batch "
        f"{result['micro_batch']} x {result['accumulate']} accumulation = global "
        f"{result['global_batch']}; {result['tokens']} text tokens"
        + (
            f"; checkpointing {', '.join(result['checkpointing'])}"
            if result["checkpointing"]
            else ""
        ),
        f"   {'module':<18}{'params':>14}{'trainable':>14}",
    ]
    for row in result["parameters"]:
        lines.append(
            f"   {row['module']:<18}{row['params'] / 1e6:>12.1f} M{row['trainable'] / 1e6:>12.1f} M"
        )
    saved = ", ".join(f"{k} {v:.1f}" for k, v in result["saved_gb_by_module"].items() if v >= 0.05)
    lines.append(f"   saved for backward (GB, before checkpointing): {saved}")
    m = result["memory_gb"]
    lines.append(
        "   per GPU (GB): "
        + "  ".join(f"{k} {v:.1f}" for k, v in m.items() if k != "total")
        + f"  | total {m['total']:.1f} / {GPU_MEMORY_GB:.0f} "
        + ("fits" if result["fits"] else "DOES NOT FIT")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "setups",
        nargs="*",
        choices=[[], *PAPER_CONFIGS],
        default=[],
        help="paper setups (default: all)",
    )
    parser.add_argument("--json", help="also write the plan as JSON here")
    args = parser.parse_args(argv)
    results = []
    for name in args.setups or list(PAPER_CONFIGS):
        result = plan(build(name, PAPER_CONFIGS[name]))
        print(format_plan(result), flush=True)
        results.append(result)
    if args.json:
        from zoo.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1))
    return 0 if all(r["fits"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
