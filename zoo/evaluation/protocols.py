"""The papers' evaluation protocols as typed classes, one per protocol.

In an evaluation YAML each is ``class_path`` (``zoo.evaluation.KNN`` or the short ``KNN``) and
``init_args``: the :class:`~zoo.evaluation.base.Evaluation` arguments (``data``, ``name``,
``paper``, ``source``) and the protocol's own, below. Metrics are fractions; the results
table shows them in percent.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningDataModule
from torch import nn

from zoo.evaluation.base import Context, Evaluation, strip_prefix
from zoo.evaluation.features import (
    encode_texts,
    image_embeddings,
    num_classes,
    train_test_features,
)
from zoo.evaluation.generative import SceneClassificationByGeneration
from zoo.evaluation.probes import (
    DEFAULT_WEIGHT_DECAYS,
    knn_accuracy,
    linear_probe,
    zero_shot_accuracy,
)
from zoo.evaluation.retrieval import caption_retrieval
from zoo.evaluation.segmentation import UPERNET_OPTIMIZER, UPerNetSegmentation
from zoo.metrics.generation import GenerationMetrics
from zoo.metrics.vqa import Judge
from zoo.models.base import OptimizerConfig
from zoo.models.capabilities import DenseEncoder, Generation, ImageFeatures, Masks, TextEmbeddings

__all__ = [
    "DEFAULT_TEMPLATES",
    "KNN",
    "GenerationTestLoop",
    "LinearProbe",
    "ModelTestLoop",
    "ReferringTestLoop",
    "Retrieval",
    "SceneClassificationByGeneration",
    "Segmentation",
    "ZeroShot",
]

#: Zero-shot prompt templates (``{}`` is the class name), averaged per class.
DEFAULT_TEMPLATES = (
    "a satellite image of {}.",
    "an aerial image of {}.",
    "a remote sensing image of {}.",
    "a satellite photo of a {}.",
    "an aerial photo of the {}.",
)
_TEXT_HINT = "use KNN, LinearProbe or Segmentation for its image encoder"


class KNN(Evaluation):
    """Frozen-feature k-NN (FLAVARS, DINO): train split as the bank, test split as the
    queries, cosine similarity with ``exp(sim / temperature)`` votes. Reports ``knn_acc``.

    Args:
        k: neighbours (at most the size of the train split).
        temperature: temperature of the vote weights.
    """

    protocol = "knn"
    requires = (ImageFeatures,)

    def __init__(
        self, data: LightningDataModule, k: int = 20, temperature: float = 0.07, **kwargs: Any
    ) -> None:
        super().__init__(data, **kwargs)
        self.k = k
        self.temperature = temperature

    def run(self, ctx: Context) -> dict[str, float]:
        train_x, train_y, test_x, test_y = train_test_features(ctx, self.data)
        acc = knn_accuracy(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes(self.data),
            k=min(self.k, len(train_x)),
            temperature=self.temperature,
        )
        return {"knn_acc": float(acc)}


class LinearProbe(Evaluation):
    """CLIP's linear probe: L2 logistic regression on frozen, standardized features, the L2
    strength chosen on a stratified held-out slice of train, test accuracy after a refit on all
    of train (:func:`zoo.evaluation.probes.linear_probe`). Reports ``linear_probe_acc``.

    Args:
        weight_decays: the L2 grid (per-sample units); a single value skips the held-out step.
        val_fraction: held-out share of the train split.
        seed: seed of the held-out split.
        max_iter: L-BFGS iterations per fit.
    """

    protocol = "linear_probe"
    requires = (ImageFeatures,)

    def __init__(
        self,
        data: LightningDataModule,
        weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS,
        val_fraction: float = 0.2,
        seed: int = 0,
        max_iter: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(data, **kwargs)
        self.weight_decays = list(weight_decays)
        self.val_fraction = val_fraction
        self.seed = seed
        self.max_iter = max_iter

    def run(self, ctx: Context) -> dict[str, float]:
        result = linear_probe(
            *train_test_features(ctx, self.data),
            num_classes(self.data),
            weight_decays=self.weight_decays,
            val_fraction=self.val_fraction,
            seed=self.seed,
            max_iter=self.max_iter,
        )
        return {"linear_probe_acc": float(result["accuracy"])}


class ZeroShot(Evaluation):
    """CLIP zero-shot classification of the test split: class names in prompt templates
    through the text encoder, the templates averaged per class. Reports ``zero_shot_top1``,
    ``zero_shot_top5`` (more than five classes) and ``zero_shot_mean_per_class``.

    Args:
        templates: prompts with ``{}`` for the class name.
    """

    protocol = "zero_shot"
    requires = (TextEmbeddings,)
    hint = _TEXT_HINT

    def __init__(
        self,
        data: LightningDataModule,
        templates: tuple[str, ...] = DEFAULT_TEMPLATES,
        **kwargs: Any,
    ) -> None:
        super().__init__(data, **kwargs)
        self.templates = list(templates)

    @torch.no_grad()
    def run(self, ctx: Context) -> dict[str, float]:
        model, dm = ctx.model, self.data
        classes = num_classes(dm)
        prompts = [t.format(c) for c in dm.class_names for t in self.templates]
        class_emb = encode_texts(model, prompts).view(classes, len(self.templates), -1)
        images, labels = [], []
        for batch in ctx.batches(dm, "test", "zero-shot"):
            images.append(image_embeddings(model, batch["image"]))
            labels.append(batch["label"].cpu())
        result = zero_shot_accuracy(torch.cat(images), class_emb, torch.cat(labels))
        return {f"zero_shot_{k}": float(v) for k, v in result.items()}


class Retrieval(Evaluation):
    """Image-text retrieval on the test split, every caption of an image counting (RSICD
    protocol): ``image_to_text_R@k``, ``text_to_image_R@k`` for k = 1, 5, 10 and
    ``mean_recall``."""

    protocol = "retrieval"
    requires = (TextEmbeddings,)
    hint = _TEXT_HINT

    @torch.no_grad()
    def run(self, ctx: Context) -> dict[str, float]:
        images, texts, owner = [], [], []
        for batch in ctx.batches(self.data, "test", "retrieval"):
            offset = sum(len(x) for x in images)
            images.append(image_embeddings(ctx.model, batch["image"]))
            captions = batch.get("references") or [[c] for c in batch["caption"]]
            for i, refs in enumerate(captions):
                texts += list(refs)
                owner += [offset + i] * len(refs)
        text_emb = encode_texts(ctx.model, texts)
        return caption_retrieval(torch.cat(images), text_emb, torch.tensor(owner))


class Segmentation(Evaluation):
    """UPerNet (segmentation-models-pytorch) on the checkpoint's image encoder, fit on the
    train split, mIoU and IoU per class on the test split (FLAVARS, SpaceNet1). A model with
    :class:`~zoo.models.capabilities.DenseEncoder` (FLAVARS, also built from a FLAVA folder)
    gives a copy of its own encoder, weights as evaluated; otherwise the encoder is the model's
    ``vision.name`` at its image size (Aquila: its ``sfi.feature_stages``), its weights read from
    the run's checkpoint (``--ckpt_path``).

    Args:
        freeze_encoder: keep the encoder frozen (a probe) or fine-tune it.
        max_epochs: training epochs.
        in_chans: input bands.
        checkpoint_prefix: where the encoder lives in the checkpoint (``None`` detects it).
        ignore_index: target value left out of the loss and the metrics.
        decoder_channels: width of the UPerNet decoder.
        optimizer: AdamW and its schedule (keys not given keep UPerNet's defaults).
    """

    protocol = "segmentation"
    requires = (ImageFeatures,)

    def __init__(
        self,
        data: LightningDataModule,
        freeze_encoder: bool = True,
        max_epochs: int = 10,
        in_chans: int = 3,
        checkpoint_prefix: str | None = None,
        ignore_index: int | None = None,
        decoder_channels: int = 256,
        optimizer: OptimizerConfig = UPERNET_OPTIMIZER,
        **kwargs: Any,
    ) -> None:
        super().__init__(data, **kwargs)
        self.max_epochs = max_epochs
        #: :class:`UPerNetSegmentation`'s arguments besides those the model and data give.
        self.upernet_args = {
            "freeze_encoder": freeze_encoder,
            "in_chans": in_chans,
            "checkpoint_prefix": checkpoint_prefix,
            "ignore_index": ignore_index,
            "decoder_channels": decoder_channels,
            "optimizer": optimizer,
        }

    def run(self, ctx: Context) -> dict[str, float]:
        hparams, dm = ctx.model.hparams, self.data
        if isinstance(ctx.model, DenseEncoder):  # the model's own encoder, as evaluated
            source: dict[str, Any] = {"encoder": ctx.model.dense_encoder().cpu()}
        else:
            spec = getattr(ctx.model, "vision_spec", None)  # a generator's VisionSpec
            if spec is None:
                raise ValueError(f"{type(ctx.model).__name__} names no vision encoder (vision)")
            source = {"vision_encoder": spec.name, "vision_checkpoint": ctx.ckpt_path}
        sfi = getattr(ctx.model, "sfi_config", None)  # Aquila keeps only these stages
        seg = UPerNetSegmentation(
            image_size=int(hparams.get("image_size", 224)),
            feature_indices=None if sfi is None else list(sfi.feature_stages),
            num_classes=len(dm.class_names),
            class_names=list(dm.class_names),
            **source,
            **self.upernet_args,
        )
        limit = ctx.limit_batches
        trainer = ctx.trainer(
            max_epochs=self.max_epochs,
            num_sanity_val_steps=0,
            limit_train_batches=limit,
            limit_val_batches=limit,
            limit_test_batches=limit,
        )
        trainer.fit(seg, datamodule=dm)
        (result,) = trainer.test(seg, datamodule=dm, verbose=False)
        return strip_prefix(result, "test_")


class ModelTestLoop(Evaluation):
    """The model's own test loop (``Trainer.test``): whatever its test step logs, without the
    ``test_`` prefix."""

    protocol = "test"

    def run(self, ctx: Context) -> dict[str, float]:
        trainer = ctx.trainer(limit_test_batches=ctx.limit_batches)
        (result,) = trainer.test(ctx.model, datamodule=self.data, verbose=False)
        return strip_prefix(result, "test_")


class GenerationTestLoop(ModelTestLoop):
    """Captioning (BLEU-1..4, METEOR, ROUGE-L, CIDEr against all references), VQA (accuracy
    per question type of the data, and ``vqa_average_accuracy``) and grounding (``Acc@0.5``,
    ``Acc@0.7`` of boxes written as text) through the generator's test loop.

    Args:
        average_over: question types averaged into ``vqa_average_accuracy`` (default: every
            type with answers).
        grounding_tasks: the data's task names scored as boxes (VRSBench's ``referring``).
        judge: a VQA judge ``(question, prediction, reference) -> bool``, as an import path in
            YAML (e.g. a GPT-4 judge as the papers use): reported as ``vqa_judged_*`` beside the
            exact-match ``vqa_accuracy``; only judged numbers compare with such papers'.
    """

    requires = (Generation,)
    hint = "use ModelTestLoop, or KNN / LinearProbe for its vision tower"

    def __init__(
        self,
        data: LightningDataModule,
        average_over: list[str] | None = None,
        grounding_tasks: list[str] | None = None,
        judge: Judge | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data, **kwargs)
        self.average_over = list(average_over or [])
        self.grounding_tasks = list(grounding_tasks or [])
        self.judge = judge

    def run(self, ctx: Context) -> dict[str, float]:
        model, types = ctx.model, getattr(self.data, "question_types", None)
        # GeoPix keeps its text metrics beside its mask metrics (text_metrics).
        holder = getattr(model, "text_metrics", None) or model.metrics
        if (
            (types or self.grounding_tasks or self.judge)
            and isinstance(holder, nn.ModuleDict)
            and isinstance(holder["test"], GenerationMetrics)
        ):
            # The data's question types (RSVQA's), so accuracy is reported per type.
            holder["test"] = GenerationMetrics(
                list(types or []), grounding_tasks=self.grounding_tasks, judge=self.judge
            ).to(ctx.device)
        result = super().run(ctx)
        types_seen = [
            k.removeprefix("vqa_accuracy_") for k in result if k.startswith("vqa_accuracy_")
        ]
        average_over = self.average_over or types_seen
        missing = [t for t in average_over if t not in types_seen]
        if missing:
            raise ValueError(
                f"{self.name}: average_over names question types without answers {missing}; "
                f"the test split has {types_seen}"
            )
        if average_over:
            values = [result[f"vqa_accuracy_{t}"] for t in average_over]
            result["vqa_average_accuracy"] = sum(values) / len(values)
        return result


class ReferringTestLoop(ModelTestLoop):
    """Referring segmentation (mIoU, cIoU) through the model's test loop (GeoPix)."""

    requires = (Masks,)
    hint = "use ModelTestLoop, or KNN / LinearProbe for its vision tower"
