"""FLAVA's own modules (transformers' ``FlavaForPreTraining``) loaded from a local folder, and its
DALL-E image codebook (``FlavaImageCodebook``), behind the interface FLAVARS trains through.

A folder in the Hugging Face ``FlavaForPreTraining`` layout (``facebook/flava-full`` once
downloaded: ``config.json``, weights, the tokenizer files and ``preprocessor_config.json``)
gives the image, text and multimodal encoders, the projections, the logit scale and the five
heads, unchanged; the data reads the folder's tokenizer and image-processor settings
(:func:`zoo.io.read_processor_settings`, linked by the zoo CLI).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import FlavaForPreTraining, FlavaImageCodebook

from zoo.encoders.encoder_set import EncoderSet, FusedStates, ImageStates, TextStates
from zoo.encoders.sources import (
    build_hf_model,
    building_architecture_only,
    hf_source,
    mark_source,
    stored_source,
)
from zoo.encoders.vision import adapt_clip_channels
from zoo.groups import as_group
from zoo.io import read_processor_settings, resolve_model_folder
from zoo.layers.attention import dense_attention_mask

__all__ = [
    "FlavaEncoders",
    "FlavaImageIntermediates",
    "FlavaSpec",
    "ImageCodebook",
    "ImageStates",
    "TextStates",
]


@dataclass
class FlavaSpec:
    """Where FLAVARS' encoders and its masked-image-modelling targets come from.

    Args:
        folder: a local ``FlavaForPreTraining`` folder (``facebook/flava-full`` downloaded):
            the image, text and multimodal encoders, projections, logit scale and heads are
            FLAVA's (``vision``, ``text``, ``embed_dim`` and ``fusion`` are then unused); the zoo
            CLI gives the data the folder's tokenizer, image size and mean / std. None: the
            zoo's encoders.
        codebook: a local ``FlavaImageCodebook`` folder: masked image modelling predicts its
            codes; None predicts normalized pixels.
    """

    folder: str | None = None
    codebook: str | None = None

    @classmethod
    def of(cls, value: FlavaSpec | str | dict[str, Any] | None) -> FlavaSpec:
        """A spec from a spec, a folder, or a dict (a checkpoint's hyper-parameters).

        Args:
            value: the spec, its ``folder`` alone, its fields as a dict, or None (no FLAVA).

        Returns:
            The spec.
        """
        if isinstance(value, FlavaSpec):
            return value
        if value is None or isinstance(value, str):
            return cls(folder=value)
        return as_group(cls, value, "flava")


class FlavaEncoders(EncoderSet):
    """transformers' FLAVA pretraining model, used module by module, as an encoder set.

    Args:
        folder: a local ``FlavaForPreTraining`` folder or a hub id in the Hugging Face cache
            (``facebook/flava-full``; never downloaded here). Its codebook, if any, is not loaded:
            give FLAVARS ``flava.codebook`` for that).
        vocab_size: the data tokenizer's length, checked against the text embedding table.
        image_size: the data's image size, checked against FLAVA's (None: not checked).
        in_channels: the bands the data reads: FLAVA's RGB patch embedding is adapted by
            timm's rule (:func:`~zoo.encoders.vision.adapt_patch_embedding`).

    Raises:
        RuntimeError: the folder holds no loadable ``FlavaForPreTraining``.
        ValueError: the tokenizer or the image size disagrees with the folder's.

    Attributes (all transformers' modules, weights as loaded): ``model`` (``FlavaModel``),
    ``mim_head``, ``mlm_head``, ``itm_head``, ``mmm_image_head``, ``mmm_text_head``.
    """

    def __init__(
        self,
        folder: str | Path,
        vocab_size: int | None = None,
        image_size: int | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.folder = str(folder)
        if building_architecture_only():  # the checkpoint holds every weight: no file read
            entry = stored_source(self.folder, read=lambda: _read_flava(self.folder))
            pretraining = build_hf_model(FlavaForPreTraining, entry)
            adapt_clip_channels(pretraining.flava.image_model, in_channels)
        else:
            path = resolve_model_folder(folder, "flava")
            try:
                pretraining = FlavaForPreTraining.from_pretrained(str(path), init_codebook=False)
            except (OSError, ValueError, TypeError) as error:
                raise RuntimeError(
                    f"flava {str(folder)!r}: could not load a FlavaForPreTraining from {path} "
                    f"({error})"
                ) from error
            adapt_clip_channels(pretraining.flava.image_model, in_channels)
            pretraining.config.image_config.num_channels = in_channels
            entry = hf_source(pretraining, normalization=_folder_normalization(self.folder))
        self.in_channels = in_channels
        #: The folder's processor mean / std as stored (None: read from the folder when asked).
        self._normalization = entry.get("normalization")
        mark_source(self, self.folder, entry)
        self.model = pretraining.flava
        self.mim_head = pretraining.mim_head
        self.mlm_head = pretraining.mlm_head
        self.itm_head = pretraining.itm_head
        self.mmm_image_head = pretraining.mmm_image_head
        self.mmm_text_head = pretraining.mmm_text_head
        config = pretraining.config
        table = config.text_config.vocab_size
        if vocab_size is not None and vocab_size > table:
            raise ValueError(
                f"the data's tokenizer has {vocab_size} tokens but flava {str(folder)!r} embeds "
                f"{table}: set the datamodule's tokenizer to {str(path)!r} (the zoo CLI links it)"
            )
        image = config.image_config
        self.image_size: int = image.image_size
        if image_size is not None and image_size != self.image_size:
            raise ValueError(
                f"image_size {image_size} but flava {str(folder)!r} is trained at "
                f"{self.image_size} px: set the data's image_size to {self.image_size}"
            )
        self.patch_size: tuple[int, int] = (image.patch_size, image.patch_size)
        side = image.image_size // image.patch_size
        self.grid_size: tuple[int, int] = (side, side)
        self.image_width: int = image.hidden_size
        self.text_width: int = config.text_config.hidden_size
        self.fusion_width: int = config.multimodal_config.hidden_size
        self.image_vocab_size: int = image.vocab_size
        self.text_vocab_size: int = table
        self.embed_dim: int = config.projection_dim

    @property
    def image_projection(self) -> nn.Linear:
        """FLAVA's image projection into the shared space."""
        return self.model.image_projection

    @property
    def text_projection(self) -> nn.Linear:
        """FLAVA's text projection into the shared space."""
        return self.model.text_projection

    @property
    def logit_scale(self) -> nn.Parameter:
        """FLAVA's contrastive logit scale."""
        return self.model.logit_scale

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The folder's image-processor mean and standard deviation (as the checkpoint stored
        them when the model was loaded from one)."""
        if self._normalization is not None:
            mean, std = self._normalization
            return tuple(mean), tuple(std)
        settings = read_processor_settings(self.folder, "flava")
        return tuple(settings.mean), tuple(settings.std)

    def image(self, image: Tensor, mask: Tensor | None = None) -> ImageStates:
        """One pass of FLAVA's image encoder.

        Args:
            image: ``B×C×H×W`` normalized pixels.
            mask: ``B×N`` bool, FLAVA's ``bool_masked_pos``, or None.

        Returns:
            The final [CLS] state, the final patch states and the last layer's states before
            the final layer norm (the multimodal encoder's input).
        """
        out = self.model.image_model(
            pixel_values=image, bool_masked_pos=mask, output_hidden_states=True, return_dict=True
        )
        final = out.last_hidden_state
        return ImageStates(final[:, 0], final[:, 1:], out.hidden_states[-1])

    @staticmethod
    def _dense_mask(module: nn.Module, padding_mask: Tensor) -> Tensor:
        """The ``B×1×1×K`` mask ``module`` would build from a ``B×K`` one, built here: from a
        2-D mask transformers first asks ``padding_mask.all()`` on the host, every step."""
        dtype = next(module.parameters()).dtype
        return dense_attention_mask(
            padding_mask, module.config._attn_implementation, causal=False, dtype=dtype
        )

    def text(self, input_ids: Tensor, attention_mask: Tensor) -> TextStates:
        """One pass of FLAVA's text encoder.

        Args:
            input_ids: ``B×T`` token ids.
            attention_mask: ``B×T`` 1 for a token, 0 for padding.

        Returns:
            The final states and the last layer's (the multimodal encoder's input).
        """
        text_model = self.model.text_model
        out = text_model(
            input_ids=input_ids,
            attention_mask=self._dense_mask(text_model, attention_mask),
            output_hidden_states=True,
            return_dict=True,
        )
        return TextStates(out.last_hidden_state, out.hidden_states[-1])

    def project(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """FLAVA's ``image_to_mm_projection`` / ``text_to_mm_projection`` of each encoder's
        states, per row of its pass (the matching pairs index them afterwards).

        Args:
            image: ``B×S×D_v`` the image pass's fusion input.
            text: ``B×T×D_t`` the text pass's fusion input.

        Returns:
            ``(B×S×W, B×T×W)``.
        """
        return self.model.image_to_mm_projection(image), self.model.text_to_mm_projection(text)

    def fuse(self, image: Tensor, text: Tensor, text_mask: Tensor) -> FusedStates:
        """The multimodal encoder's final states over both projected sequences (:meth:`project`),
        as ``FlavaModel.forward`` builds them: [CLS_mm], image [CLS], patches, text tokens.

        Args:
            image: ``P×S×W`` projected image sequences ([CLS] first).
            text: ``P×T×W`` projected text sequences.
            text_mask: ``P×T`` the text sequences' attention mask.

        Returns:
            The ``P×(1+S+T)×W`` states and their patch and text parts.
        """
        b, s = image.shape[:2]
        fusion = self.model.multimodal_model
        mask = self._dense_mask(fusion, torch.cat([text_mask.new_ones(b, 1 + s), text_mask], dim=1))
        fused = fusion(
            torch.cat([image, text], 1), attention_mask=mask, return_dict=True
        ).last_hidden_state
        num_text = text.shape[1]
        return FusedStates(
            fused, fused[:, 2 : 2 + self.num_patches], fused[:, fused.shape[1] - num_text :]
        )

    def itm_logits(self, fused: Tensor) -> Tensor:
        """Matching logits from FLAVA's head (it pools the multimodal [CLS]).

        Args:
            fused: ``P×S×W`` the fused states.

        Returns:
            ``P×2`` logits.
        """
        return self.itm_head(fused)

    def dense_encoder(self) -> FlavaImageIntermediates:
        """A copy of the image encoder behind timm's multi-scale interface (UPerNet).

        Returns:
            The copy, as :class:`FlavaImageIntermediates`.
        """
        return FlavaImageIntermediates(copy.deepcopy(self.model.image_model))

    def predict_image_targets(self, codes: int | None) -> None:
        """Keep FLAVA's MIM / MMM-image heads for codebook codes, or replace them with new
        linear heads for normalized pixels (FLAVA's heads predict codes only).

        Args:
            codes: the codebook's number of codes, or None for pixel targets.

        Raises:
            ValueError: the codebook's codes are not as many as FLAVA's heads predict.
        """
        if codes is None:
            pixels = self.patch_size[0] * self.patch_size[1] * self.in_channels
            self.mim_head = nn.Linear(self.image_width, pixels)
            self.mmm_image_head = nn.Linear(self.fusion_width, pixels)
        elif codes != self.image_vocab_size:
            raise ValueError(
                f"the codebook has {codes} codes but flava {self.folder!r} predicts "
                f"{self.image_vocab_size}: give FLAVA's own codebook"
            )


def _folder_normalization(folder: str) -> list[list[float]] | None:
    """The processor mean / std of a FLAVA folder, None when it has no processor file (then
    only a codebook, which needs them, fails)."""
    try:
        settings = read_processor_settings(folder, "flava")
    except FileNotFoundError:
        return None
    return [list(settings.mean), list(settings.std)]


def _read_flava(folder: str) -> dict[str, Any]:
    """What :class:`FlavaEncoders` marks, read from the folder's configuration (no weights):
    for a checkpoint that did not store it."""
    from transformers import FlavaConfig

    path = resolve_model_folder(folder, "flava")
    config = FlavaConfig.from_pretrained(str(path), init_codebook=False)
    return {"config": config.to_dict(), "normalization": _folder_normalization(folder)}


class FlavaImageIntermediates(nn.Module):
    """transformers' ``FlavaImageModel`` behind the part of timm's interface a dense head reads:
    ``feature_info`` (one entry per layer, stride = patch size), ``forward_intermediates`` (the
    chosen layers' outputs, [CLS] dropped, as ``B×D×h×w`` maps; timm's ViT likewise returns
    block outputs without the final norm) and ``prune_intermediate_layers``.

    Args:
        image_model: the FLAVA image encoder (used as it is; copy it to keep the original).
    """

    def __init__(self, image_model: nn.Module) -> None:
        super().__init__()
        self.model = image_model
        config = image_model.config
        self.patch_size: int = config.patch_size
        self.feature_info = [
            {
                "num_chs": config.hidden_size,
                "reduction": config.patch_size,
                "module": f"encoder.layer.{i}",
            }
            for i in range(len(image_model.encoder.layer))
        ]

    def prune_intermediate_layers(
        self, indices: Sequence[int], prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the layers after the last of ``indices``, and the final layer norm and the pooler.

        Args:
            indices: the layers kept for :meth:`forward_intermediates` (negative ones count from
                the end).
            prune_norm: replace the final layer norm with an identity.
            prune_head: drop the pooler.

        Returns:
            The indices as sorted non-negative layer numbers.
        """
        n = len(self.model.encoder.layer)
        taken = sorted({i % n for i in indices})
        self.model.encoder.layer = self.model.encoder.layer[: taken[-1] + 1]
        self.feature_info = self.feature_info[: taken[-1] + 1]
        if prune_norm:
            self.model.layernorm = nn.Identity()
        if prune_head:
            self.model.pooler = None
        return taken

    def forward_intermediates(
        self,
        image: Tensor,
        indices: Sequence[int],
        output_fmt: str = "NCHW",
        intermediates_only: bool = True,
    ) -> list[Tensor]:
        """The outputs of layers ``indices`` as maps ([CLS] dropped).

        Args:
            image: ``B×C×H×W`` normalized pixels.
            indices: the layers (their outputs are ``hidden_states[i + 1]``).
            output_fmt: ``NCHW`` only.
            intermediates_only: True only.

        Returns:
            One ``B×D×h×w`` map per index.

        Raises:
            ValueError: another format, or not intermediates only.
        """
        if output_fmt != "NCHW" or not intermediates_only:
            raise ValueError("FlavaImageIntermediates gives NCHW intermediates only")
        out = self.model(
            pixel_values=image,
            output_hidden_states=True,
            return_dict=True,
            interpolate_pos_encoding=True,
        )
        b, h, w = (
            image.shape[0],
            image.shape[-2] // self.patch_size,
            image.shape[-1] // self.patch_size,
        )
        # hidden_states[0] is the embedding output, [i + 1] the output of layer i
        return [
            out.hidden_states[i + 1][:, 1:].transpose(1, 2).reshape(b, -1, h, w) for i in indices
        ]


class ImageCodebook(nn.Module):
    """transformers' ``FlavaImageCodebook`` (DALL-E's encoder) from a local folder, frozen: the
    masked-image-modelling target, one code per patch.

    Args:
        folder: a ``FlavaImageCodebook`` folder (``facebook/flava-image-codebook`` downloaded).
        mean: per-band mean of [0, 1] pixels the images were normalized with (the data's).
        std: per-band standard deviation, likewise.

    The codebook reads [0, 1] pixels mapped to ``[0.1, 0.9]`` (DALL-E's ``map_pixels``, as
    ``FlavaImageProcessor`` prepares ``codebook_pixel_values``), at ``2^(groups-1)`` pixels a
    code: the image is resized so that the code grid is the encoder's patch grid.
    """

    def __init__(self, folder: str | Path, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        name = str(folder)
        if building_architecture_only():  # the checkpoint holds the codebook's weights too
            entry = stored_source(name, read=lambda: _read_codebook(name))
            self.model = build_hf_model(FlavaImageCodebook, entry)
        else:
            path = resolve_model_folder(folder, "codebook")
            try:
                self.model = FlavaImageCodebook.from_pretrained(str(path))
            except (OSError, ValueError, TypeError) as error:
                raise RuntimeError(
                    f"codebook {name!r}: could not load a FlavaImageCodebook from {path} ({error})"
                ) from error
            entry = hf_source(self.model)
        mark_source(self, name, entry)
        self.model.eval().requires_grad_(False)
        self.vocab_size: int = self.model.config.vocab_size
        self.stride: int = 2 ** (self.model.config.num_groups - 1)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ImageCodebook:
        """Set the training mode; the codebook itself stays in eval mode (frozen).

        Args:
            mode: training mode.

        Returns:
            This module.
        """
        super().train(mode)
        self.model.eval()  # frozen: never in training mode
        return self

    @torch.no_grad()
    def forward(self, image: Tensor, grid_size: tuple[int, int]) -> Tensor:
        """The codebook's codes of normalized images, one per patch of the encoder's grid.

        Args:
            image: ``B×C×H×W`` normalized pixels.
            grid_size: the image encoder's patch grid.

        Returns:
            ``B×N`` long codes, row-major.
        """
        pixels = (image.float() * self.std + self.mean).clamp(0.0, 1.0)
        size = (grid_size[0] * self.stride, grid_size[1] * self.stride)
        pixels = nn.functional.interpolate(
            pixels, size=size, mode="bilinear", antialias=True, align_corners=False
        )
        pixels = 0.8 * pixels + 0.1
        return self.model.get_codebook_indices(pixels).flatten(1)


def _read_codebook(folder: str) -> dict[str, Any]:
    """What :class:`ImageCodebook` marks, read from the folder's configuration (no weights)."""
    from transformers import FlavaImageCodebookConfig

    path = resolve_model_folder(folder, "codebook")
    return {"config": FlavaImageCodebookConfig.from_pretrained(str(path)).to_dict()}
