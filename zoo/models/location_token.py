"""The location token of a generator: where the image is, as one more visual token.

A generator with ``location: {...}`` in its config (Aquila, FUSE, GeoPix; off by default)
embeds the batch's ``location`` (``B×2`` lat, lon in degrees) with the SatCLIP / FLAVARS
location encoder (:class:`~zoo.encoders.location.LocationEncoder`: spherical harmonics + SIREN),
projects it to the LLM width (Linear-GELU-Linear, LLaVA's projector shape) and appends it to
the family's visual tokens: ``N`` visual tokens become ``N + 1``, the splice
(:func:`~zoo.models.splice.splice_visual_tokens`) lays out positions, labels (-100) and the
attention mask for all of them, and a family's injection (Aquila's MDA, FUSE's) still sees only
its own ``N`` (:meth:`~zoo.models.generator.VisionLanguageGenerator.spliced_inputs`).

The encoder is trained with the generator, or taken from a FLAVARS checkpoint (its
``location_encoder.*`` weights only; frozen by default) so that the generator starts from a
location embedding that was aligned with images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.encoders.location import LocationEncoder, check_location_shape
from zoo.encoders.sources import building_architecture_only, mark_source, stored_source
from zoo.io import load_checkpoint

__all__ = [
    "FLAVARS_LOCATION_PREFIX",
    "LocationToken",
    "LocationTokenEncoder",
    "flavars_location_encoder",
]

#: Where a FLAVARS checkpoint keeps its location encoder's weights.
FLAVARS_LOCATION_PREFIX = "location_encoder."
#: The latitude clamp FLAVARS builds its encoder with (so a loaded encoder sees the same input).
MAX_LATITUDE = 89.95


@dataclass(frozen=True)
class LocationToken:
    """A generator's location token (``location:`` in a config; None: no token).

    Attributes:
        legendre_polys: spherical-harmonic degree ``L`` of a new encoder.
        hidden: SIREN hidden width of a new encoder.
        layers: SIREN hidden layers of a new encoder.
        dim: the new encoder's output width (the projection maps it to the LLM width).
        checkpoint: a FLAVARS checkpoint (``.ckpt``) whose location encoder to take (its own
            sizes then replace ``legendre_polys``, ``hidden``, ``layers`` and ``dim``); None
            builds a new encoder.
        freeze: keep the encoder's weights fixed; None: frozen with a ``checkpoint``, trained
            without. The projection always trains (with the stage's connector).
    """

    legendre_polys: int = 10
    hidden: int = 256
    layers: int = 2
    dim: int = 256
    checkpoint: str | None = None
    freeze: bool | None = None

    @property
    def frozen(self) -> bool:
        """Whether the encoder's weights stay fixed (:attr:`freeze`, or its default)."""
        return self.checkpoint is not None if self.freeze is None else self.freeze


def _flavars_kwargs(path: Path, state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The encoder's sizes from its weights' shapes."""
    first = state.get("nnet.layers.0.weight")
    last = state.get("nnet.last_layer.weight")
    if first is None or last is None:
        raise ValueError(
            f"FLAVARS checkpoint {path}: its location encoder lacks 'nnet.layers.0.weight' or "
            f"'nnet.last_layer.weight' (found {sorted(state)}); not a SatCLIP / FLAVARS "
            "spherical-harmonics + SIREN encoder"
        )
    return {
        "legendre_polys": int(round(first.shape[1] ** 0.5)),
        "dim_hidden": int(first.shape[0]),
        "num_layers": len({k.split(".")[2] for k in state if k.startswith("nnet.layers.")}),
        "dim_out": int(last.shape[0]),
        "use_bias": "nnet.last_layer.bias" in state,
    }


def _harmonics(checkpoint: Mapping[str, Any]) -> str:
    """The harmonics' calculation of a FLAVARS encoder that was itself read from SatCLIP."""
    sources = (checkpoint.get("zoo") or {}).get("sources") or {}
    for entry in sources.values():
        if isinstance(entry, Mapping) and "location_encoder" in entry:
            return str(entry["location_encoder"].get("harmonics_calculation", "analytic"))
    return "analytic"


def flavars_location_encoder(path: str | Path, dropout: bool = False) -> LocationEncoder:
    """The location encoder of a FLAVARS checkpoint, with its weights (and only those).

    Args:
        path: a FLAVARS Lightning checkpoint (``zoo fit --config configs/flavars.yaml`` writes
            one).
        dropout: SatCLIP's training-time dropout in the sine layers (off for a frozen encoder:
            its features then equal FLAVARS' evaluation features).

    Returns:
        The encoder (latitude clamp :data:`MAX_LATITUDE`, as FLAVARS builds it), marked with its
        sizes so that a model built from it loads without the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the checkpoint holds no location-encoder weights (no state-dict key starts
            with :data:`FLAVARS_LOCATION_PREFIX`: not a FLAVARS checkpoint), or they are not a
            spherical-harmonics + SIREN encoder.
        RuntimeError: the weights do not fit the encoder they describe.
    """
    path = Path(path)
    checkpoint = load_checkpoint(path, "location.checkpoint (a FLAVARS checkpoint)")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else {}
    state = state if isinstance(state, Mapping) else {}
    location = {
        k[len(FLAVARS_LOCATION_PREFIX) :]: v
        for k, v in state.items()
        if isinstance(k, str) and k.startswith(FLAVARS_LOCATION_PREFIX)
    }
    if not location:
        roots = sorted({str(k).split(".")[0] for k in state})
        raise ValueError(
            f"location.checkpoint {path} has no location-encoder weights: no state-dict key "
            f"starts with {FLAVARS_LOCATION_PREFIX!r} (its keys start with {roots or 'nothing'}). "
            "Give a FLAVARS checkpoint (trained with its image-location loss), or drop "
            "location.checkpoint to train a new encoder"
        )
    kwargs = _flavars_kwargs(path, location)
    kwargs["harmonics_calculation"] = _harmonics(checkpoint)
    encoder = LocationEncoder(**kwargs, max_latitude=MAX_LATITUDE, dropout=dropout)
    try:
        encoder.load_state_dict(location)
    except RuntimeError as err:
        raise RuntimeError(
            f"the location weights of FLAVARS checkpoint {path} do not fit "
            f"LocationEncoder({kwargs}): {err}"
        ) from err
    return mark_source(encoder, str(path), {"location_encoder": kwargs})


class LocationTokenEncoder(nn.Module):
    """``B×2`` (lat, lon) degrees -> one token ``B×1×width`` in the LLM's input space.

    Args:
        config: the encoder's sizes, or the FLAVARS checkpoint it comes from.
        width: the LLM's hidden size.
    """

    def __init__(self, config: LocationToken, width: int) -> None:
        super().__init__()
        self.config = config
        if config.checkpoint is None:
            self.encoder = LocationEncoder(
                legendre_polys=config.legendre_polys,
                dim_hidden=config.hidden,
                num_layers=config.layers,
                dim_out=config.dim,
                max_latitude=MAX_LATITUDE,
                dropout=not config.frozen,
            )
        elif building_architecture_only():  # the model's checkpoint holds the weights
            name = str(Path(config.checkpoint))
            stored = stored_source(name) or {}
            kwargs = dict(stored["location_encoder"])
            self.encoder = mark_source(
                LocationEncoder(**kwargs, max_latitude=MAX_LATITUDE, dropout=not config.frozen),
                name,
                stored,
            )
        else:
            self.encoder = flavars_location_encoder(config.checkpoint, dropout=not config.frozen)
        self.projection = nn.Sequential(
            nn.Linear(self.encoder.dim_out, width), nn.GELU(), nn.Linear(width, width)
        )

    def forward(self, location: Tensor) -> Tensor:
        """The location token.

        Args:
            location: float ``B×2`` (lat, lon) in degrees (shape checked; the values are
                checked where the data reads them).

        Returns:
            ``B×1×width`` in the projection's dtype.
        """
        check_location_shape(location, "batch['location']")
        features = self.encoder(location.to(torch.float64))
        weight = self.projection[0].weight
        return self.projection(features.to(weight.dtype)).unsqueeze(1)
