"""LLaVA-1.5 checkpoints as the generator core's vision tower, projector, LLM and processor.

Two layouts are read from a local folder:

* ``hf``: transformers' ``LlavaForConditionalGeneration`` (``llava-hf/llava-1.5-7b-hf``):
  ``config.json`` with ``text_config`` and ``vision_config``, the tokenizer (with ``<image>``)
  and ``preprocessor_config.json`` beside it. transformers loads it (and converts its older
  key names); the zoo then takes its parts without copying them.
* ``original``: the LLaVA repository's (``liuhaotian/llava-v1.5-7b``): a Llama whose
  ``config.json`` adds ``mm_vision_tower`` (the CLIP tower: a local folder, absolute or
  relative to the checkpoint, or a Hub id in the local cache), ``mm_vision_select_layer``
  (-2), ``mm_vision_select_feature`` (``patch``) and ``mm_projector_type`` (``mlp2x_gelu``);
  the weights are the Llama's keys plus ``model.mm_projector.{0,2}.*`` and, when the tower
  was trained, ``model.vision_tower.vision_tower.*``. The tower folder holds the image
  processor.

Both give LLaVA's anatomy: CLIP ViT patch tokens (no CLS) of one block (the penultimate),
a Linear-GELU-Linear projector, and the Llama. The processor side (:func:`llava_processor`)
reads JSON only, so a datamodule can use it without loading a model.

:func:`load_llava_projector` reads the projector alone, without building a model: from
LLaVA-1.5's stage-1 release (``liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5``:
``config.json`` + ``mm_projector.bin``, what LLaVA's own stage 2 and the FUSE authors start
from), from either full layout above, or from a weight file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from zoo.encoders.sources import (
    build_hf_model,
    building_architecture_only,
    hf_source,
    mark_source,
    stored_source,
)
from zoo.encoders.vision import CLIPVisionTower
from zoo.io import read_json, read_state_dict, read_tensors, resolve_model_folder

__all__ = [
    "LlavaParts",
    "LlavaProcessor",
    "LlavaProjector",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "llava_layout",
    "llava_processor",
    "load_llava",
    "load_llava_projector",
]

#: CLIP's normalization (OpenAI's, not ImageNet's), for towers that ship no processor file.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Layout = Literal["hf", "original"]


def _config(folder: str | Path) -> dict:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"llava {folder}: not a folder; download a LLaVA-1.5 checkpoint (llava-hf/llava-1.5-7b-hf "
            "or liuhaotian/llava-v1.5-7b) and give its folder"
        )
    return read_json(path / "config.json", "llava config")


def llava_layout(config: dict, folder: str | Path = "") -> Layout:
    """Which layout a LLaVA checkpoint's ``config.json`` is in.

    Args:
        config: the parsed ``config.json``.
        folder: the checkpoint folder (named in the error).

    Returns:
        ``hf`` (``text_config`` + ``vision_config``) or ``original`` (``mm_vision_tower``).

    Raises:
        ValueError: neither.
    """
    if "text_config" in config and "vision_config" in config:
        return "hf"
    if "mm_vision_tower" in config:
        return "original"
    raise ValueError(
        f"{folder}/config.json is neither a transformers LLaVA config (text_config, vision_config) "
        "nor an original LLaVA one (mm_vision_tower): is it a LLaVA-1.5 checkpoint?"
    )


def _tower_folder(config: dict, folder: Path) -> str:
    """The original layout's ``mm_vision_tower``: a folder (relative to the checkpoint or
    absolute) when one exists, else the Hub id as written."""
    tower = str(config["mm_vision_tower"])
    for candidate in (folder / tower, Path(tower).expanduser()):
        if candidate.is_dir():
            return str(candidate)
    return tower


@dataclass(frozen=True)
class LlavaProcessor:
    """What the data takes from a LLaVA checkpoint: tokenizer folder, image size and mean/std of
    [0, 1] pixels (its conversation format is ``vicuna_v1``, :mod:`zoo.conversation_formats`).

    Attributes:
        tokenizer: the folder holding the checkpoint's tokenizer.
        image_size: the tower's input size in pixels.
        mean: the processor's per-channel mean of [0, 1] pixels.
        std: the processor's per-channel standard deviation of [0, 1] pixels.
    """

    tokenizer: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _crop_size(processor: dict) -> int | None:
    for key in ("crop_size", "size"):
        value = processor.get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, dict):
            for inner in ("height", "shortest_edge"):
                if inner in value:
                    return int(value[inner])
    return None


def llava_processor(folder: str | Path) -> LlavaProcessor:
    """The image processor's size and mean/std and the tokenizer of a LLaVA checkpoint.

    The size is the processor's crop (the CLIP tower's input size when no processor file is
    found); mean/std are the processor's (OpenAI CLIP's when none is found).

    Args:
        folder: the LLaVA checkpoint folder.

    Returns:
        Its processor settings.
    """
    path = Path(folder).expanduser()
    config = _config(path)
    if llava_layout(config, path) == "hf":
        candidates = [path]
        vision = config["vision_config"]
    else:
        tower = Path(_tower_folder(config, path))
        candidates = [path, tower]
        vision = (
            read_json(tower / "config.json", "mm_vision_tower config") if tower.is_dir() else {}
        )
        vision = vision.get("vision_config", vision)
    processor: dict = {}
    for candidate in candidates:
        file = candidate / "preprocessor_config.json"
        if file.is_file():
            processor = read_json(file, "image processor config")
            break
    size = _crop_size(processor) or vision.get("image_size")
    if size is None:
        raise FileNotFoundError(
            f"llava {folder}: no preprocessor_config.json and no vision config with image_size; "
            "put the CLIP tower's folder (with its preprocessor_config.json) at mm_vision_tower"
        )
    return LlavaProcessor(
        tokenizer=str(path),
        image_size=int(size),
        mean=tuple(processor.get("image_mean", OPENAI_CLIP_MEAN)),
        std=tuple(processor.get("image_std", OPENAI_CLIP_STD)),
    )


@dataclass
class LlavaParts:
    """A loaded LLaVA: the tower, the projector's ``{0,2}.{weight,bias}`` state, the causal LM
    and the tower block whose patch tokens feed the projector.

    Attributes:
        vision: the CLIP vision tower.
        projector: the projector's ``{0,2}.{weight,bias}`` state.
        llm: the causal language model.
        feature_layer: the tower block (negative from the end) whose patch tokens feed the
            projector.
        layout: which of the two checkpoint layouts the folder holds.
    """

    vision: CLIPVisionTower
    projector: dict[str, Tensor]
    llm: nn.Module
    feature_layer: int
    layout: Layout


def load_llava(folder: str | Path, dtype: torch.dtype | None = None) -> LlavaParts:
    """Load a LLaVA-1.5 checkpoint of either layout (the LLM in ``dtype``, the tower in float32;
    the families train it under bf16-mixed).

    Args:
        folder: the checkpoint folder.
        dtype: the LLM's dtype (None: float32).

    Returns:
        Its parts: the LLM, the vision tower, the projector and their settings. Inside
        :func:`~zoo.encoders.sources.architecture_only`, the LLM and tower of the stored
        configuration with random weights and no projector state (the checkpoint holds them).
    """
    name = str(folder)
    if building_architecture_only():
        entry = stored_source(name, read=lambda: _llava_source(_read_llava(folder, dtype)))
        parts = _llava_architecture(entry, dtype)
    else:
        parts = _read_llava(folder, dtype)
        entry = _llava_source(parts)
    # On the LLM (the one part every family keeps whole): the source of the LLM and the tower.
    mark_source(parts.llm, name, entry)
    return parts


def _read_llava(folder: str | Path, dtype: torch.dtype | None) -> LlavaParts:
    path = Path(folder).expanduser()
    config = _config(path)
    if llava_layout(config, path) == "hf":
        return _load_hf(path, config, dtype)
    return _load_original(path, config, dtype)


def _llava_source(parts: LlavaParts) -> dict:
    """What rebuilds a LLaVA's LLM and tower without its folder (:func:`load_llava` marks it)."""
    llm = parts.llm
    return {
        "layout": parts.layout,
        "feature_layer": parts.feature_layer,
        "llm": hf_source(llm),
        "tied": llm.get_output_embeddings().weight is llm.get_input_embeddings().weight,
        "vision": hf_source(parts.vision.model),
    }


def _llava_architecture(entry: dict, dtype: torch.dtype | None) -> LlavaParts:
    """A LLaVA's parts from :func:`_llava_source` with random weights (as :func:`load_llava`
    gives them: the LLM in ``dtype``, the tower in float32, SDPA attention)."""
    from transformers import AutoModel, AutoModelForCausalLM

    llm = build_hf_model(AutoModelForCausalLM, entry["llm"], dtype or torch.float32, "sdpa")
    head, table = llm.get_output_embeddings(), llm.get_input_embeddings()
    if not entry.get("tied", True) and head.weight is table.weight:  # untied in the source
        head.weight = nn.Parameter(head.weight.detach().clone())
        llm.config.tie_word_embeddings = False
    tower = build_hf_model(AutoModel, entry["vision"], torch.float32, "sdpa")
    return LlavaParts(CLIPVisionTower(tower), {}, llm, int(entry["feature_layer"]), entry["layout"])


def _check_select(strategy: str, layer: object, folder: Path) -> int:
    if strategy not in ("default", "patch"):
        raise ValueError(
            f"{folder}/config.json selects {strategy!r} vision features; the zoo's families take "
            "patch grids without the CLS token ('default' / 'patch', LLaVA-1.5's)"
        )
    if not isinstance(layer, int):
        raise ValueError(
            f"{folder}/config.json: one vision feature layer is supported, got {layer!r}"
        )
    return layer


def _load_hf(path: Path, config: dict, dtype: torch.dtype | None) -> LlavaParts:
    from transformers import LlavaForConditionalGeneration

    layer = _check_select(
        config.get("vision_feature_select_strategy", "default"),
        config.get("vision_feature_layer", -2),
        path,
    )
    if config.get("projector_hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}/config.json: the zoo's projector is Linear-GELU-Linear")
    # In the checkpoint's dtype; then the tower and projector to float32, the LLM to ``dtype``.
    llava = LlavaForConditionalGeneration.from_pretrained(
        path, dtype="auto", attn_implementation="sdpa"
    )
    body = llava.model
    tower = CLIPVisionTower(body.vision_tower.float())
    projector = body.multi_modal_projector
    state = {
        "0.weight": projector.linear_1.weight,
        "0.bias": projector.linear_1.bias,
        "2.weight": projector.linear_2.weight,
        "2.bias": projector.linear_2.bias,
    }
    llm = _causal_lm(llava.config.text_config, body.language_model, llava.lm_head)
    llm.generation_config = llava.generation_config
    return LlavaParts(
        tower,
        {k: v.detach().float() for k, v in state.items()},
        llm.to(dtype or torch.float32),
        layer,
        "hf",
    )


def _causal_lm(text_config, body: nn.Module, head: nn.Module) -> nn.Module:
    """A ``*ForCausalLM`` around an existing decoder ``body`` and ``head`` (no copy)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(text_config, attn_implementation="sdpa")
    llm.model = body
    llm.lm_head = head
    return llm


def _load_original(path: Path, config: dict, dtype: torch.dtype | None) -> LlavaParts:
    from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    layer = _check_select(
        config.get("mm_vision_select_feature", "patch"),
        config.get("mm_vision_select_layer", -2),
        path,
    )
    if config.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise ValueError(
            f"{path}/config.json: mm_projector_type {config.get('mm_projector_type')!r}; the zoo's "
            "families use LLaVA-1.5's 'mlp2x_gelu'"
        )
    fields = {
        k: v
        for k, v in config.items()
        if not k.startswith("mm_")
        and k not in ("model_type", "architectures", "_name_or_path", "auto_map")
    }
    llm = LlamaForCausalLM.from_pretrained(
        path, config=LlamaConfig(**fields), dtype=dtype or torch.float32, attn_implementation="sdpa"
    )
    extra = read_tensors(path, ("model.mm_projector.", "model.vision_tower.vision_tower."))
    projector = _projector_state(extra, path)
    tower_name = _tower_folder(config, path)
    try:
        clip = CLIPVisionModel.from_pretrained(
            tower_name, dtype=torch.float32, attn_implementation="sdpa"
        )
    except OSError as error:
        raise RuntimeError(
            f"{path}/config.json names the vision tower {tower_name!r}, which is neither a local "
            "folder nor in the Hugging Face cache: download it and write its folder (absolute or "
            "relative to the checkpoint) in mm_vision_tower"
        ) from error
    tower_state = {
        k.removeprefix("model.vision_tower.vision_tower.").removeprefix("vision_model."): v
        for k, v in extra.items()
        if k.startswith("model.vision_tower.vision_tower.")
    }
    if tower_state:  # the checkpoint trained its tower: its weights replace the folder's
        clip.load_state_dict(tower_state, strict=True)
    return LlavaParts(CLIPVisionTower(clip.float()), projector, llm, layer, "original")


@dataclass(frozen=True)
class LlavaProjector:
    """LLaVA-1.5's projector alone: its ``{0,2}.{weight,bias}`` state (float32) and the tower
    block (negative from the end) whose patch tokens it was trained on.

    Attributes:
        projector: the ``{0,2}.{weight,bias}`` state, float32.
        feature_layer: the tower block (negative from the end) the projector was trained on.
    """

    projector: dict[str, Tensor]
    feature_layer: int

    def load_into(self, projector: nn.Module | None, family: str) -> None:
        """These weights into a family's ``projector``.

        Args:
            projector: the family's projector (a Linear-GELU-Linear ``nn.Sequential``).
            family: the family's name (in the errors).

        Raises:
            ValueError: no LLaVA-style projector, or other widths.
        """
        if not isinstance(projector, nn.Sequential):
            raise ValueError(
                f"llava: {family} has no LLaVA-style `projector` (Linear-GELU-Linear from the "
                "tower into the LLM); use llava with FUSE or GeoPix"
            )
        try:
            projector.load_state_dict(self.projector)
        except RuntimeError as error:
            raise ValueError(f"llava: the checkpoint's projector does not fit: {error}") from error


#: The projector's keys in each layout: the original repository's ``mm_projector.{0,2}``,
#: transformers' ``multi_modal_projector.linear_{1,2}`` (either under ``model.`` or not).
_PROJECTOR_PREFIXES = {
    "mm_projector.0.": "0.",
    "mm_projector.2.": "2.",
    "multi_modal_projector.linear_1.": "0.",
    "multi_modal_projector.linear_2.": "2.",
}


def _projector_state(tensors: dict[str, Tensor], source: Path) -> dict[str, Tensor]:
    """The Linear-GELU-Linear state ``{0,2}.{weight,bias}`` (float32) among ``tensors``."""
    state = {}
    for key, value in tensors.items():
        bare = key.removeprefix("model.")
        for prefix, target in _PROJECTOR_PREFIXES.items():
            if bare.startswith(prefix):
                state[target + bare.removeprefix(prefix)] = value.float()
    if sorted(state) != ["0.bias", "0.weight", "2.bias", "2.weight"]:
        raise ValueError(
            f"{source}: expected LLaVA-1.5's mlp2x_gelu projector (model.mm_projector.{{0,2}} or "
            f"multi_modal_projector.linear_{{1,2}}, weight and bias), found {sorted(state) or 'none'}"
        )
    return state


def load_llava_projector(path: str | Path) -> LlavaProjector:
    """The projector of a LLaVA-1.5 checkpoint, read without building the model.

    The tower block comes from the ``config.json`` beside the weights
    (``mm_vision_select_layer`` or ``vision_feature_layer``; LLaVA-1.5's -2 when there is none).

    Args:
        path: a folder with ``mm_projector.bin`` (the stage-1 release), a full checkpoint folder
            of either layout, a weight file (``.bin`` / ``.safetensors``), or the Hub id of one of
            these folders in the local Hugging Face cache.

    Returns:
        The projector's weights and the tower block it reads.
    """
    path = Path(path).expanduser()
    if not path.exists():
        path = resolve_model_folder(path, "llava_projector")
    folder = path if path.is_dir() else path.parent
    weights = folder / "mm_projector.bin" if path.is_dir() else path
    if weights.is_file():
        state = _projector_state(read_state_dict(weights, "llava_projector"), weights)
    else:
        prefixes = tuple(
            p + k for p in ("", "model.") for k in ("mm_projector.", "multi_modal_projector.")
        )
        state = _projector_state(read_tensors(folder, prefixes), folder)
    config = (
        read_json(folder / "config.json", "llava config")
        if (folder / "config.json").is_file()
        else {}
    )
    if config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(
            f"{folder}/config.json: mm_projector_type {config['mm_projector_type']!r}; the zoo's "
            "projector is LLaVA-1.5's 'mlp2x_gelu'"
        )
    layer = config.get("mm_vision_select_layer", config.get("vision_feature_layer", -2))
    return LlavaProjector(
        state, _check_select(config.get("mm_vision_select_feature", "patch"), layer, folder)
    )
