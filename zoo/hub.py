"""The Hugging Face Hub: a zoo model's card and its upload.

    from zoo.hub import model_card, push_folder

    card = model_card("export/", results="results/results.json", license="apache-2.0")
    card.save("export/README.md")
    push_folder("export/", "org/name")          # create_repo(exist_ok=True) + upload_folder

The card is built with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCard` and
:class:`~huggingface_hub.ModelCardData` (its YAML front matter is theirs, not written here):
license, ``library_name: rs-vlm-zoo``, tags, the pretrained models it starts from
(``base_model``), the public datasets it trained on, a ``pipeline_tag`` and, from
``zoo evaluate``'s ``results.json``, the ``model-index`` evaluation results. The body says what the
model is (its family and paper), the run's results beside the papers' numbers, the training
config, how to load it and what the folder holds.

Uploading is the only networked step: :func:`push_folder` talks to ``HF_ENDPOINT`` (default the
Hub) with the token of ``token=``, ``HF_TOKEN`` or ``hf auth login``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError
from torch import nn

from zoo.pretrained import (
    CONFIG_FILE,
    HUB_PREFIX,
    LIBRARY_NAME,
    PREPROCESSOR_FILE,
    TRAINING_CONFIG_FILE,
    WEIGHTS_FILE,
    config_root,
    read_folder_contents,
    save_pretrained,
)

__all__ = [
    "CARD_FILE",
    "HubUploadError",
    "model_card",
    "push_folder",
    "push_to_hub",
    "read_results",
    "write_card",
]

#: The model card's file name in an export folder.
CARD_FILE = "README.md"
#: Tags every zoo card carries.
BASE_TAGS = ["remote-sensing", "earth-observation", "pytorch-lightning"]


@dataclass(frozen=True)
class _Family:
    """What a card says about one model family."""

    title: str
    tags: tuple[str, ...]
    pipeline_tag: str
    what: str
    usage: str


_IMAGE = 'image = transform(Image.open("tile.png")).unsqueeze(0)  # 1 x C x S x S'
_FAMILIES = {
    "flavars": _Family(
        "FLAVARS",
        ("flavars", "vision-language", "image-text", "contrastive", "zero-shot"),
        "zero-shot-image-classification",
        "an image, text and location encoder (FLAVA's masked image and language modelling, "
        "image-text matching, image-text and image-location contrastive learning)",
        f"""{_IMAGE}
image_embedding = model.encode_image(image)
text_embedding = model.encode_text(["an aerial image of a harbour"])
location_embedding = model.encode_location(torch.tensor([[48.85, 2.35]]))  # lat, lon
scores = model.zero_shot(image, ["forest", "river", "harbour"])""",
    ),
    "aquila": _Family(
        "Aquila",
        (
            "aquila",
            "vision-language",
            "image-text",
            "image-captioning",
            "visual-question-answering",
        ),
        "image-text-to-text",
        "a vision-language generator: multi-scale CLIP-ConvNeXt features (SFI) aligned into "
        "the LLM's layers (MDA) give captions and answers",
        'answers = model.answer([Image.open("tile.png")], ["Describe the image."])',
    ),
    "fuse": _Family(
        "FUSE",
        ("fuse", "vision-language", "image-text", "image-captioning", "visual-question-answering"),
        "image-text-to-text",
        "a vision-language generator: multi-scale sliding-window features injected into the "
        "LLM's layers give captions and answers",
        'answers = model.answer([Image.open("tile.png")], ["Describe the image."])',
    ),
    "geopix": _Family(
        "GeoPix",
        ("geopix", "vision-language", "image-text", "segmentation", "referring-segmentation"),
        "image-text-to-text",
        "a vision-language generator with pixel-level answers: segmentation tokens, a "
        "multi-scale mask decoder and a class-wise memory give answers with masks",
        'answer, masks = model.segment(Image.open("tile.png"), "Segment the buildings.")',
    ),
}
#: ``model-index`` task types of ``zoo evaluate``'s protocols.
_TASKS = {
    "zero_shot": "zero-shot-image-classification",
    "knn": "image-classification",
    "linear_probe": "image-classification",
    "scene_generation": "image-classification",
    "retrieval": "image-text-retrieval",
    "segmentation": "image-segmentation",
    "test": "image-text-to-text",
}
#: Public Hub datasets, by a word that names them in a data config (class path, root, files);
#: the data modules' docstrings give the same ids (zoo/data/conversations.py, referring_benchmarks.py).
_DATASETS = {
    "geochat": "MBZUAI/GeoChat_Instruct",
    "fit_rs": "ll-13/FIT-RS",
    "fit-rs": "ll-13/FIT-RS",
    "vrsbench": "xiang709/VRSBench",
    "refsegrs": "JessicaYuan/RefSegRS",
}
#: Words that mark a name as a random or testing model, never a real base model.
_NOT_BASE = re.compile(r"(^|[/_.-])(tiny|random|dummy|test|testing)([/_.-]|$)|hf-internal-testing")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: First folders of the zoo's local paths (run folders, downloaded weights, data), never an org.
_LOCAL_ROOTS = {"runs", "checkpoints", "data", "weights", "export", "models", "outputs"}


class HubUploadError(OSError):
    """An upload the Hub refused (authentication, permission, network); the local folder stays
    complete."""


def _family(model_class: str) -> str:
    """``zoo.models.geopix.GeoPix`` -> ``geopix`` (the key of the configs and paper cards)."""
    return model_class.rsplit(".", 1)[-1].lower()


def _hub_ids(value: Any, key: str = "", pretrained: bool = False) -> list[str]:
    """The Hugging Face Hub model ids named in hyper-parameters: ``org/name`` strings that are
    no local folder nor a random/testing model; a timm name with a pretrained tag in a group
    with ``pretrained: true`` becomes ``timm/<name>``."""
    if isinstance(value, dict):
        flag = bool(value.get("pretrained"))
        return [i for k, v in value.items() for i in _hub_ids(v, str(k), flag)]
    if isinstance(value, list | tuple):
        return [i for v in value for i in _hub_ids(v, key, pretrained)]
    if not isinstance(value, str):
        return []
    name = value.removeprefix(HUB_PREFIX)
    if _NOT_BASE.search(name.lower()) or Path(name).expanduser().exists():
        return []
    local = name.split("/", 1)[0] in _LOCAL_ROOTS or name.endswith(
        (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
    )
    if _HUB_ID.match(name) and not local:
        return [name]
    if key == "name" and pretrained and "." in name and "/" not in name:
        return [f"timm/{name}"]
    return []


def _base_models(hyper_parameters: dict[str, Any], sources: dict[str, Any]) -> list[str]:
    """The pretrained Hub models a model starts from, in the order the config names them."""
    found = _hub_ids(hyper_parameters) + _hub_ids(list(sources))
    return list(dict.fromkeys(found))


def _datasets(config: dict[str, Any]) -> list[str]:
    """The public Hub datasets the training config's data names."""
    text = json.dumps(config.get("data") or {}).lower()
    return list(dict.fromkeys(hub for word, hub in _DATASETS.items() if word in text))


def _paper(family: str, paper_cards: Path | None) -> tuple[str, str | None]:
    """The family's paper (its card's ``paper:`` line) and a link to it (arXiv, else code)."""
    if paper_cards is None:
        try:
            paper_cards = config_root() / "papers"
        except FileNotFoundError:  # an installed package without the configs: no paper line
            return "", None
    path = paper_cards / f"{family}.yaml"
    if not path.is_file():
        return "", None
    text = str((yaml.safe_load(path.read_text()) or {}).get("paper", ""))
    if arxiv := re.search(r"arXiv (\d{4}\.\d{4,5})", text):
        return text, f"https://arxiv.org/abs/{arxiv[1]}"
    if code := re.search(r"github ([\w.-]+/[\w.-]+)", text):
        return text, f"https://github.com/{code[1]}"
    return text, None


def read_results(results: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """``zoo evaluate``'s ``results.json``, checked.

    Args:
        results: its path, its folder, the loaded dict, or None.

    Returns:
        The header fields and ``results`` (the rows); empty for None.

    Raises:
        ValueError: an unreadable file, or one without a ``results`` list.
    """
    if results is None or isinstance(results, dict):
        return results or {}
    path = Path(results)
    path = path / "results.json" if path.is_dir() else path
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"cannot read the evaluation results {path} ({error}): give the results.json "
            "that zoo evaluate wrote"
        ) from error
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ValueError(f"{path} has no 'results' list: is it zoo evaluate's results.json?")
    return payload


def _scored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with a value of ours (no error rows, no paper-only metrics)."""
    return [r for r in rows if r.get("metric") != "error" and r.get("ours") is not None]


def _eval_results(rows: list[dict[str, Any]]) -> list[EvalResult]:
    """``model-index`` entries: one per metric of ours."""
    out = []
    for r in _scored(rows):
        protocol = str(r.get("protocol") or "")
        config = Path(str(r.get("config") or r["evaluation"]).split(" ", 1)[0]).stem
        out.append(
            EvalResult(
                task_type=_TASKS.get(protocol, protocol or "other"),
                task_name=protocol.replace("_", " ") or None,
                dataset_type=config,
                dataset_name=str(r["evaluation"]),
                metric_type=str(r["metric"]),
                metric_name=str(r["metric"]),
                metric_value=round(float(r["ours"]), 4),
            )
        )
    return out


def _fmt(value: Any) -> str:
    return "" if value is None else f"{float(value):.2f}"


def _results_section(results: dict[str, Any]) -> str:
    """The run's numbers beside the papers' (percent, as ``results.md``)."""
    rows = results.get("results") or []
    if not rows:
        return (
            "Not evaluated with this export: run `zoo evaluate` and export again with "
            "`--results results/results.json`."
        )
    lines = [
        f"From `zoo evaluate` ({results.get('date', 'date not recorded')}); values in percent "
        "(x100), the paper's number from the evaluation config's cited table.",
        "",
        "| evaluation | protocol | metric | this model | paper | difference | source |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ours = f"error: {r.get('error')}" if r.get("metric") == "error" else _fmt(r.get("ours"))
        delta = "" if r.get("delta") is None else f"{float(r['delta']):+.2f}"
        lines.append(
            f"| {r.get('evaluation', '')} | {r.get('protocol', '')} | {r.get('metric', '')} | "
            f"{ours} | {_fmt(r.get('paper'))} | {delta} | {r.get('source', '')} |"
        )
    return "\n".join(lines)


def _files_section(folder: Path) -> str:
    """What the folder holds, file by file."""
    what = {
        WEIGHTS_FILE: "every weight (LoRA merged into the LLM; tied tensors stored once)",
        CONFIG_FILE: "the model class, its hyper-parameters, preprocessing, conversation "
        "format, class names and the pretrained sources' configurations",
        PREPROCESSOR_FILE: "the image preprocessing in Hugging Face image-processor keys",
        TRAINING_CONFIG_FILE: "the resolved training config (`zoo fit --config config.yaml`)",
        CARD_FILE: "this card",
    }
    lines = ["| file | holds |", "| --- | --- |"]
    names = sorted({p.name for p in folder.iterdir() if p.is_file()} | {CARD_FILE})
    for name in names:
        lines.append(f"| `{name}` | {what.get(name, 'a tokenizer file (save_pretrained)')} |")
    return "\n".join(lines)


def model_card(
    folder: str | Path,
    results: str | Path | dict[str, Any] | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    paper_cards: str | Path | None = None,
) -> ModelCard:
    """The model card of an export folder (:func:`zoo.pretrained.save_pretrained`).

    Args:
        folder: the export folder.
        results: ``zoo evaluate``'s ``results.json`` (a path, its folder or the loaded dict);
            gives the ``model-index`` and the results table.
        license: the weights' license (a Hub license id such as ``apache-2.0``); None writes
            ``other`` and says that the base models' licenses apply.
        repo_id: the Hub repository (``org/name``) the card's loading code names.
        paper_cards: the folder of the paper cards (default ``configs/papers``, or
            ``$ZOO_CONFIGS/papers``).

    Returns:
        The card (``card.save(path)`` writes it).

    Raises:
        ValueError: a folder that is not a zoo export, or unreadable results.
    """
    folder = Path(folder)
    contents = read_folder_contents(folder)
    family = _family(contents.model_class)
    info = _FAMILIES.get(family)
    config = yaml.safe_load(contents.config) if contents.config else {}
    config = config if isinstance(config, dict) else {}
    evaluation = read_results(results)
    rows = list(evaluation.get("results") or [])
    paper, link = _paper(family, Path(paper_cards) if paper_cards else None)
    name = repo_id.split("/")[-1] if repo_id else folder.resolve().name
    tags = list(dict.fromkeys([*BASE_TAGS, *(info.tags if info else (family,))]))
    data = ModelCardData(
        license=license or "other",
        library_name=LIBRARY_NAME,
        tags=tags,
        base_model=_base_models(contents.hyper_parameters, contents.sources) or None,
        datasets=_datasets(config) or None,
        pipeline_tag=info.pipeline_tag if info else None,
        model_name=name,
        eval_results=_eval_results(rows) or None,
    )
    title = info.title if info else contents.model_class.rsplit(".", 1)[-1]
    what = info.what if info else "a model of the zoo"
    paper_line = f"[{paper}]({link})" if link else (paper or "see the zoo's docs/papers.md")
    source = f"hf-hub:{repo_id}" if repo_id else f"hf-hub:org/{name}"
    usage = info.usage if info else "outputs = model(image)"
    license_note = (
        f"License: `{license}`."
        if license
        else "License: not stated by the exporter (`zoo export --license`); the base models' "
        "licenses apply."
    )
    training = contents.config or "# not trained by the zoo CLI: no config recorded"
    classes = (
        f"\n\nClass names of its zero-shot head / memory: {', '.join(contents.class_names)}."
        if contents.class_names
        else ""
    )
    body = f"""
# {name}

A model of the **{title}** family: {what}. Trained with {LIBRARY_NAME} and exported by
`zoo export --format hf`.

- Paper: {paper_line}
- Base models: {", ".join(f"`{m}`" for m in data.base_model or []) or "none from the Hub"}
- Image preprocessing: {contents.preprocessing.image_size} px, mean
  {list(contents.preprocessing.mean)}, std {list(contents.preprocessing.std)}
  (`preprocessor_config.json`)
- Conversation format: {contents.conversation or "none (not a generator)"}
- {license_note}{classes}

## Evaluation

{_results_section(evaluation)}

## How to use

```python
import torch
import zoo
from PIL import Image

model, transform, tokenizer = zoo.load("{source}")  # from the local cache when offline
{usage}
```

`zoo.load` also reads this folder as downloaded (`zoo.load("path/to/folder")`); `transform` turns
a PIL image or a `C x H x W` array into the normalized tensor the model was trained on.

## Training config

<details>
<summary>config.yaml (the resolved config of the run)</summary>

```yaml
{training.rstrip()}
```

</details>

## Files

{_files_section(folder)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_card(folder: str | Path, **kwargs: Any) -> Path:
    """Write :func:`model_card`'s card as the folder's ``README.md`` (atomically).

    Args:
        folder: the export folder.
        **kwargs: :func:`model_card`'s options (``results``, ``license``, ``repo_id``, ...).

    Returns:
        The card's path.
    """
    from zoo.io import atomic_write_text

    path = Path(folder) / CARD_FILE
    atomic_write_text(path, str(model_card(folder, **kwargs)))
    return path


def push_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload an export folder to a Hub model repository (created when missing).

    Args:
        folder: the export folder (with its ``README.md`` card).
        repo_id: ``org/name``.
        token: a Hub token with write access (default ``HF_TOKEN`` or ``hf auth login``'s).
        private: create the repository private (an existing one keeps its visibility).
        revision: the branch to commit to (default ``main``).
        commit_message: the commit's summary.

    Returns:
        The commit's URL.

    Raises:
        ValueError: a folder that is not a zoo export, or a malformed ``repo_id``.
        HubUploadError: the Hub refused (the message names the repository and how to log in).
    """
    folder = Path(folder)
    read_folder_contents(folder)  # a zoo export, else a clear error before any request
    if not _HUB_ID.match(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repository id: give org/name")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} with zoo export",
        )
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        hint = (
            "log in with `hf auth login`, set HF_TOKEN, or pass --token (a token with write "
            f"access to {repo_id.split('/')[0]})"
            if status in (401, 403)
            else "check HF_ENDPOINT and the network, then run the push again"
        )
        raise HubUploadError(
            f"could not upload {folder} to the Hub repository {repo_id} at {api.endpoint} "
            f"(HTTP {status}): {hint}; the local folder is complete, run the push again"
        ) from error
    return str(info.commit_url if hasattr(info, "commit_url") else info)


def push_to_hub(model: nn.Module | str | Path, repo_id: str, **kwargs: Any) -> str:
    """Export a model (or take an export folder), write its card and upload it.

    Args:
        model: a zoo model (exported to a temporary folder first) or an export folder.
        repo_id: ``org/name``.
        **kwargs: :func:`model_card`'s ``results``, ``license`` and ``paper_cards``;
            :func:`push_folder`'s ``token``, ``private``, ``revision``, ``commit_message``.

    Returns:
        The commit's URL.

    Raises:
        TypeError: an option neither takes.
    """
    card_keys = {"results", "license", "paper_cards"}
    push_keys = {"token", "private", "revision", "commit_message"}
    if unknown := set(kwargs) - card_keys - push_keys:
        raise TypeError(f"push_to_hub got unknown options {sorted(unknown)}")
    card = {k: v for k, v in kwargs.items() if k in card_keys}
    push = {k: v for k, v in kwargs.items() if k in push_keys}
    if isinstance(model, str | Path):
        write_card(model, repo_id=repo_id, **card)
        return push_folder(model, repo_id, **push)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = save_pretrained(model, Path(tmp) / repo_id.split("/")[-1])
        write_card(folder, repo_id=repo_id, **card)
        return push_folder(folder, repo_id, **push)
