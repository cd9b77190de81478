"""SatCLIP-compatible location encoder: spherical-harmonic features followed by a SIREN.

The features reproduce SatCLIP's ``SphericalHarmonics`` positional encoding (microsoft/satclip,
``satclip/positional_encoding/``) and the network reproduces its ``SirenNet``
(``satclip/location_encoder.py``), parameter names included, so the location half of a SatCLIP
Lightning checkpoint loads with :meth:`LocationEncoder.from_satclip_checkpoint`.

Conventions taken from SatCLIP:

* angles: ``phi = radians(lon + 180)`` and ``theta = radians(lat + 90)``, so ``cos(theta)`` is
  ``-sin(lat)``; SatCLIP applies no clamping of the latitude;
* order of the features: ``l = 0 .. L-1`` and, within each degree, ``m = -l .. l``;
* real harmonics ``sqrt(2) * N_l^|m| * P_l^|m|(cos theta) * cos(m phi)`` for ``m > 0`` and
  ``... * sin(|m| phi)`` for ``m < 0``, with ``N_l^m = sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!)``;
* ``"analytic"`` (SatCLIP's default, used to train its released checkpoints): the sympy-generated
  table ``spherical_harmonics_ylm.py``. Its ``(-1)^m`` factor cancels the Condon-Shortley phase, and
  a missing pair of parentheses in its generator (``sqrt((2l+1)/4*pi)``) makes every ``m = 0``
  harmonic ``pi`` times the orthonormal one (e.g. ``Y_0^0 = sqrt(pi)/2``);
* ``"closed-form"``: ``spherical_harmonics_closed_form.py``, orthonormal with the Condon-Shortley
  phase kept, i.e. the ``"analytic"`` values times ``(-1)^m`` for ``m != 0`` and divided by ``pi``
  for ``m = 0``.

Inputs to this module are ``(lat, lon)`` in degrees. SatCLIP's own modules take ``(lon, lat)``;
the columns are swapped internally.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.encoders.sources import (
    building_architecture_only,
    collect_sources,
    mark_source,
    stored_source,
)
from zoo.io import load_checkpoint

__all__ = [
    "LocationEncoder",
    "LocationSpec",
    "Sine",
    "SirenLayer",
    "SirenNet",
    "SphericalHarmonics",
    "check_location_shape",
    "validate_locations",
]

HarmonicsCalculation = Literal["analytic", "closed-form"]
_CALCULATIONS = ("analytic", "closed-form")
_SATCLIP_PREFIX = "model.location."


_EXPECTED = "(lat, lon) in degrees is expected"


def validate_locations(location: Tensor, name: str = "location", first_row: int = 0) -> None:
    """Check that ``location`` is a ``B×2`` tensor of finite ``(lat, lon)`` degrees.

    It reads the values, so it belongs where they are on the host: the datasets call it on
    their samples (:class:`~zoo.data.image_text.ImageTextLocationDataset`); the encoder's
    forward pass checks only the shape (:func:`check_location_shape`), so that training
    copies nothing from the device to the host.

    Args:
        location: the coordinates.
        name: how the messages name them.
        first_row: the number the messages give the first row (a sample's index in its
            dataset, say).

    Raises:
        TypeError: ``location`` is not a real-valued tensor.
        ValueError: wrong shape, a non-finite value, a latitude outside ``[-90, 90]`` or a
            longitude outside ``[-180, 180]``; the message names ``name`` and the first bad row.
    """
    check_location_shape(location, name)
    if location.numel() == 0:
        return
    expected = _EXPECTED
    values = location.detach().cpu()
    lat, lon = values[:, 0], values[:, 1]

    def row(index: int) -> str:
        a, b = values[index].double().tolist()
        return f"row {first_row + index} (lat={a!r}, lon={b!r})"

    finite = torch.isfinite(values).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{name} has a non-finite value at {row(bad)}; finite {expected}")
    bad_lat = (lat < -90) | (lat > 90)
    if bool(bad_lat.any()):
        bad = int(bad_lat.nonzero()[0, 0])
        hint = ""
        if bool(((lat.abs() <= 180) & (lon.abs() <= 90)).all()):
            hint = " (the columns look like (lon, lat); swap them)"
        raise ValueError(
            f"{name} has latitude {float(lat[bad])!r} at {row(bad)}, outside the valid range "
            f"[-90, 90]; {expected}{hint}"
        )
    bad_lon = (lon < -180) | (lon > 180)
    if bool(bad_lon.any()):
        bad = int(bad_lon.nonzero()[0, 0])
        raise ValueError(
            f"{name} has longitude {float(lon[bad])!r} at {row(bad)}, outside the valid range "
            f"[-180, 180]; {expected}"
        )


def check_location_shape(location: Tensor, name: str = "location") -> None:
    """The checks of :func:`validate_locations` that read no values: type, dtype and shape.

    Args:
        location: the tensor to check.
        name: its name in the errors.

    Raises:
        TypeError: ``location`` is not a real-valued tensor.
        ValueError: ``location`` is not ``B×2``.
    """
    expected = _EXPECTED
    if not isinstance(location, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, 2); {expected}, got "
            f"{type(location).__name__}"
        )
    if location.is_complex() or location.dtype == torch.bool:
        raise TypeError(f"{name} must be a real-valued tensor; {expected}, got {location.dtype}")
    if location.ndim != 2 or location.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (B, 2); {expected}, got shape {tuple(location.shape)}"
        )


class SphericalHarmonics(nn.Module):
    """SatCLIP's spherical-harmonic positional encoding, vectorized over the batch.

    Associated Legendre functions are evaluated in their fully normalized form with the standard
    three-term recurrence over the degree, in float64, so large ``legendre_polys`` (e.g. 40) stay
    accurate. The module has no parameters or buffers.

    Args:
        legendre_polys: number of degrees ``L``; the output has ``L**2`` features.
        harmonics_calculation: ``"analytic"`` (SatCLIP's default) or ``"closed-form"``; see the
            module docstring for how they differ.
        max_latitude: if given, latitudes are clamped to ``[-max_latitude, max_latitude]`` before
            encoding. SatCLIP does not clamp, so the default ``None`` keeps its features.
    """

    def __init__(
        self,
        legendre_polys: int = 10,
        harmonics_calculation: HarmonicsCalculation = "analytic",
        max_latitude: float | None = None,
    ) -> None:
        super().__init__()
        if int(legendre_polys) != legendre_polys or legendre_polys < 1:
            raise ValueError(f"legendre_polys must be a positive integer, got {legendre_polys!r}")
        if harmonics_calculation not in _CALCULATIONS:
            raise ValueError(
                f"harmonics_calculation must be one of {_CALCULATIONS}, got "
                f"{harmonics_calculation!r}"
            )
        if max_latitude is not None and not 0 < max_latitude <= 90:
            raise ValueError(f"max_latitude must be in (0, 90], got {max_latitude!r}")
        self.legendre_polys = L = int(legendre_polys)
        self.harmonics_calculation = harmonics_calculation
        self.max_latitude = max_latitude

        # Recurrence coefficients for P[n, m], m <= n - 2, packed degree by degree.
        a, b = [], []
        for n in range(2, L):
            m = np.arange(n - 1, dtype=np.float64)
            a.append(np.sqrt((4.0 * n * n - 1.0) / (n * n - m * m)))
            b.append(np.sqrt(((n - 1.0) ** 2 - m * m) / (4.0 * (n - 1.0) ** 2 - 1.0)))
        rec_a = np.concatenate(a) if a else np.zeros(0)
        rec_b = np.concatenate(b) if b else np.zeros(0)

        # For every output column (n, m): where its Legendre value and its trig factor live in
        # the packed tables built in ``forward``, and the constant it is scaled by.
        ls = np.concatenate([np.full(2 * n + 1, n) for n in range(L)])
        ms = np.concatenate([np.arange(-n, n + 1) for n in range(L)])
        absm = np.abs(ms)
        legendre_index = ls * (ls + 1) // 2 + absm
        trig_index = np.where(ms >= 0, absm, L + absm)
        scale = np.where(ms == 0, 1.0, math.sqrt(2.0))
        if harmonics_calculation == "analytic":
            scale = np.where(ms == 0, math.pi, scale)
        else:
            scale = scale * np.where(absm % 2 == 1, -1.0, 1.0)
        # Constant tables, not buffers (the module keeps an empty state dict, as SatCLIP's):
        # ``_apply`` moves them with the module, so the forward pass copies nothing from the host.
        self._tables: dict[str, Tensor] = {
            "rec_a": torch.from_numpy(rec_a).double(),
            "rec_b": torch.from_numpy(rec_b).double(),
            "legendre_index": torch.from_numpy(legendre_index).long(),
            "trig_index": torch.from_numpy(trig_index).long(),
            "scale": torch.from_numpy(scale).double(),
        }

    def _apply(self, fn: Any, recurse: bool = True) -> SphericalHarmonics:
        """Move the constant tables to the device the module goes to (their dtypes stay)."""
        super()._apply(fn, recurse)
        device = fn(torch.zeros(0, dtype=torch.float64)).device
        self._tables = {k: v.to(device) for k, v in self._tables.items()}
        return self

    def _tables_on(self, device: torch.device) -> dict[str, Tensor]:
        tables = self._tables
        if tables["scale"].device != device:  # the module was not moved with its input
            tables = {k: v.to(device) for k, v in tables.items()}
        return tables

    @property
    def embedding_dim(self) -> int:
        """Number of output features, ``legendre_polys ** 2``."""
        return self.legendre_polys**2

    def forward(self, location: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Encode ``(lat, lon)`` degrees as spherical-harmonic features.

        Only the shape is checked here; the values (finite, within range) are checked by the
        data (:func:`validate_locations`), where they are on the host.

        Args:
            location: ``B×2`` ``(lat, lon)`` in degrees.
            dtype: the features' dtype.

        Returns:
            ``B×L²`` features.
        """
        check_location_shape(location)
        device = location.device
        tables = self._tables_on(device)
        f64 = torch.float64
        lat = location[:, 0].to(f64)
        lon = location[:, 1].to(f64)
        if self.max_latitude is not None:
            lat = lat.clamp(-self.max_latitude, self.max_latitude)
        phi = torch.deg2rad(lon + 180.0)
        theta = torch.deg2rad(lat + 90.0)
        x = torch.cos(theta)[:, None]
        s = torch.sin(theta).clamp_min(0.0)[:, None]

        L = self.legendre_polys
        rec_a, rec_b = tables["rec_a"], tables["rec_b"]
        # Fully normalized P[n, m] (no Condon-Shortley phase), one (B, n + 1) block per degree n.
        blocks = [torch.full_like(x, 1.0 / math.sqrt(4.0 * math.pi))]
        offset = 0
        for n in range(1, L):
            prev = blocks[-1]
            last = prev[:, n - 1 : n]
            parts = []
            if n >= 2:
                a = rec_a[offset : offset + n - 1]
                b = rec_b[offset : offset + n - 1]
                offset += n - 1
                parts.append(a * (x * prev[:, : n - 1] - b * blocks[-2]))
            parts.append(math.sqrt(2.0 * n + 1.0) * x * last)
            parts.append(math.sqrt((2.0 * n + 1.0) / (2.0 * n)) * s * last)
            blocks.append(torch.cat(parts, dim=1))
        legendre = torch.cat(blocks, dim=1)

        mphi = phi[:, None] * torch.arange(L, dtype=f64, device=device)
        trig = torch.cat([torch.cos(mphi), torch.sin(mphi)], dim=1)
        legendre = legendre[:, tables["legendre_index"]]
        return (legendre * trig[:, tables["trig_index"]] * tables["scale"]).to(dtype)

    def extra_repr(self) -> str:
        """The settings, for ``repr``.

        Returns:
            The text inside the module's ``repr``.
        """
        return (
            f"legendre_polys={self.legendre_polys}, "
            f"harmonics_calculation={self.harmonics_calculation!r}, "
            f"max_latitude={self.max_latitude}"
        )


class Sine(nn.Module):
    """``sin(w0 * x)``.

    Args:
        w0: the frequency.
    """

    def __init__(self, w0: float = 1.0) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: Tensor) -> Tensor:
        """Apply the sine.

        Args:
            x: any tensor.

        Returns:
            ``sin(w0 * x)``.
        """
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        """The frequency, for ``repr``.

        Returns:
            The text inside the module's ``repr``.
        """
        return f"w0={self.w0}"


class SirenLayer(nn.Module):
    """A SIREN layer as SatCLIP's ``Siren``: linear, optional dropout, then the activation.

    Weights and bias are drawn from ``U(-r, r)`` with ``r = 1 / dim_in`` for the first layer and
    ``r = sqrt(c / dim_in) / w0`` otherwise. Dropout (``p = 0.5``, training only) is applied to the
    pre-activation, as in SatCLIP. Parameters are named ``weight`` and ``bias``.

    Args:
        dim_in: input features.
        dim_out: output features.
        w0: the sine's frequency.
        c: SIREN's initialization constant.
        is_first: the first layer (its own initialization range).
        use_bias: whether the layer has a bias.
        activation: the activation (None: ``Sine(w0)``).
        dropout: dropout on the pre-activation in training.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        w0: float = 1.0,
        c: float = 6.0,
        is_first: bool = False,
        use_bias: bool = True,
        activation: nn.Module | None = None,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.is_first = is_first
        self.dropout = dropout
        bound = (1.0 / dim_in) if is_first else (math.sqrt(c / dim_in) / w0)
        weight = torch.empty(dim_out, dim_in).uniform_(-bound, bound)
        self.weight = nn.Parameter(weight)
        if use_bias:
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.empty(dim_out).uniform_(-bound, bound)
            )
        else:
            self.register_parameter("bias", None)
        self.activation = Sine(w0) if activation is None else activation

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer; the weights are cast to ``x``'s dtype (float64 in the encoder).

        Args:
            x: ``B×dim_in`` in any float dtype.

        Returns:
            ``B×dim_out``.
        """
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = F.linear(x, self.weight.to(x.dtype), bias)
        if self.dropout:
            out = F.dropout(out, training=self.training)
        return self.activation(out)

    def extra_repr(self) -> str:
        """The sizes and switches, for ``repr``.

        Returns:
            The text inside the module's ``repr``.
        """
        return (
            f"dim_in={self.dim_in}, dim_out={self.dim_out}, is_first={self.is_first}, "
            f"bias={self.bias is not None}, dropout={self.dropout}"
        )


class SirenNet(nn.Module):
    """SatCLIP's ``SirenNet``: ``num_layers`` sine layers then a linear ``last_layer``.

    The first layer uses ``w0_initial`` (30), the hidden layers ``w0`` (1). State-dict keys are
    ``layers.{i}.weight``, ``layers.{i}.bias``, ``last_layer.weight`` and ``last_layer.bias``.

    Args:
        dim_in: input features.
        dim_hidden: width of the sine layers.
        dim_out: output features.
        num_layers: number of sine layers (SatCLIP's ``num_hidden_layers``).
        w0: frequency of the hidden sine layers (also scales ``last_layer``'s init).
        w0_initial: frequency of the first sine layer.
        use_bias: whether layers have a bias.
        final_activation: activation after ``last_layer``; identity when ``None``.
        dropout: dropout (p = 0.5) on the sine layers' pre-activations while training.
    """

    def __init__(
        self,
        dim_in: int,
        dim_hidden: int,
        dim_out: int,
        num_layers: int,
        w0: float = 1.0,
        w0_initial: float = 30.0,
        use_bias: bool = True,
        final_activation: nn.Module | None = None,
        dropout: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.num_layers = num_layers
        self.dim_hidden = dim_hidden
        self.layers = nn.ModuleList(
            SirenLayer(
                dim_in=dim_in if index == 0 else dim_hidden,
                dim_out=dim_hidden,
                w0=w0_initial if index == 0 else w0,
                use_bias=use_bias,
                is_first=index == 0,
                dropout=dropout,
            )
            for index in range(num_layers)
        )
        self.last_layer = SirenLayer(
            dim_in=dim_hidden,
            dim_out=dim_out,
            w0=w0,
            use_bias=use_bias,
            activation=nn.Identity() if final_activation is None else final_activation,
            dropout=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the hidden layers, then the last one.

        Args:
            x: ``B×dim_in`` features.

        Returns:
            ``B×dim_out``.
        """
        for layer in self.layers:
            x = layer(x)
        return self.last_layer(x)


@dataclass
class LocationSpec:
    """A family's SatCLIP location encoder (``location:`` in a config).

    Args:
        legendre_polys: spherical-harmonic degree L (SatCLIP: 10 or 40).
        hidden: SIREN hidden width.
        layers: SIREN hidden layers.
        checkpoint: a SatCLIP checkpoint to initialize the encoder from (its own sizes then
            replace ``legendre_polys``, ``hidden`` and ``layers``).
    """

    legendre_polys: int = 10
    hidden: int = 256
    layers: int = 2
    checkpoint: str | None = None

    def build(self, dim_out: int, max_latitude: float | None = None) -> LocationEncoder:
        """The encoder this spec names.

        Args:
            dim_out: embedding size of a new encoder (a checkpoint keeps its own).
            max_latitude: optional latitude clamp.

        Returns:
            The encoder, loaded from ``checkpoint`` when one is given.
        """
        if self.checkpoint is not None:
            if building_architecture_only():  # the model's checkpoint holds these weights
                name = str(Path(self.checkpoint))
                stored = stored_source(
                    name,
                    read=lambda: collect_sources(
                        LocationEncoder.from_satclip_checkpoint(self.checkpoint)
                    )[name],
                )
                kwargs = dict(stored["location_encoder"]) | {"max_latitude": max_latitude}
                return mark_source(LocationEncoder(**kwargs), name, stored)
            return LocationEncoder.from_satclip_checkpoint(
                self.checkpoint, max_latitude=max_latitude
            )
        return LocationEncoder(
            legendre_polys=self.legendre_polys,
            dim_hidden=self.hidden,
            num_layers=self.layers,
            dim_out=dim_out,
            max_latitude=max_latitude,
        )


class LocationEncoder(nn.Module):
    """SatCLIP's location encoder: :class:`SphericalHarmonics` then :class:`SirenNet`.

    Submodules are named ``posenc`` (no parameters) and ``nnet`` as in SatCLIP, so its
    ``model.location.*`` state-dict keys load once the ``model.location.`` prefix is removed.

    Args:
        legendre_polys: spherical-harmonic degrees ``L`` (SatCLIP ``legendre_polys``).
        dim_hidden: SIREN width (SatCLIP ``capacity``).
        num_layers: SIREN sine layers (SatCLIP ``num_hidden_layers``).
        dim_out: embedding size (SatCLIP ``embed_dim``).
        harmonics_calculation: ``"analytic"`` or ``"closed-form"``, as SatCLIP.
        max_latitude: optional latitude clamp; ``None`` (SatCLIP's behaviour) disables it.
        w0: frequency of the hidden sine layers.
        w0_initial: frequency of the first sine layer.
        use_bias: whether SIREN layers have biases.
        dropout: SatCLIP's training-time dropout in the sine layers.
    """

    def __init__(
        self,
        legendre_polys: int = 10,
        dim_hidden: int = 256,
        num_layers: int = 2,
        dim_out: int = 256,
        harmonics_calculation: HarmonicsCalculation = "analytic",
        max_latitude: float | None = None,
        w0: float = 1.0,
        w0_initial: float = 30.0,
        use_bias: bool = True,
        dropout: bool = True,
    ) -> None:
        super().__init__()
        self.posenc = SphericalHarmonics(legendre_polys, harmonics_calculation, max_latitude)
        self.nnet = SirenNet(
            dim_in=self.posenc.embedding_dim,
            dim_hidden=dim_hidden,
            dim_out=dim_out,
            num_layers=num_layers,
            w0=w0,
            w0_initial=w0_initial,
            use_bias=use_bias,
            dropout=dropout,
        )
        self.dim_out = dim_out

    def forward(self, location: Tensor) -> Tensor:
        """Embed ``(lat, lon)`` degrees in the weights' dtype.

        The harmonics and the SIREN run in float64 with autocast off, as SatCLIP runs them:
        under ``bf16-mixed`` a first sine layer with ``w0 = 30`` in bfloat16 is off by about
        0.5 % against float64. The network is small, so the cost is negligible.

        Args:
            location: ``B×2`` ``(lat, lon)`` in degrees.

        Returns:
            ``B×dim_out`` embeddings.
        """
        dtype = self.nnet.last_layer.weight.dtype
        # (meta tensors, as the memory plan traces them, have no autocast: cpu's stands in)
        device_type = "cpu" if location.device.type == "meta" else location.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            features = self.posenc(location, dtype=torch.float64)
            return self.nnet(features).to(dtype)

    @classmethod
    def from_satclip_checkpoint(
        cls, path: str | Path, *, weights_only: bool = True, **overrides: Any
    ) -> LocationEncoder:
        """Build the encoder from a SatCLIP Lightning checkpoint and load its location weights.

        Architecture arguments come from the checkpoint's ``hyper_parameters`` (``legendre_polys``,
        ``capacity``, ``num_hidden_layers``, ``embed_dim``, ``harmonics_calculation``) and, where
        absent, from the weight shapes; ``overrides`` replace any constructor argument.

        Args:
            path: the ``.ckpt`` file.
            weights_only: passed to :func:`zoo.io.load_checkpoint`. Only set it to ``False``
                for a file you trust: unpickling arbitrary objects can execute code.
            **overrides: constructor arguments that take precedence over the checkpoint's.

        Returns:
            The encoder with the checkpoint's location weights.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            RuntimeError: the file cannot be read (e.g. it pickles objects that
                ``weights_only=True`` refuses) or its weights do not fit the encoder.
            ValueError: the checkpoint holds no ``model.location.*`` weights or describes a
                location encoder other than spherical harmonics + SIREN.
        """
        path = Path(path)
        try:
            checkpoint = load_checkpoint(path, "SatCLIP checkpoint", weights_only)
        except RuntimeError as err:
            if not isinstance(err.__cause__, pickle.UnpicklingError):
                raise
            message = str(err).rstrip(". ")
            raise RuntimeError(
                f"{message}. If you trust the file, call from_satclip_checkpoint(..., "
                "weights_only=False), or re-save it with only its 'state_dict' and "
                "'hyper_parameters'"
            ) from err
        if not isinstance(checkpoint, Mapping):
            raise ValueError(
                f"SatCLIP checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict "
                "with 'state_dict' and 'hyper_parameters'"
            )
        state = checkpoint.get("state_dict", checkpoint)
        state = state if isinstance(state, Mapping) else {}
        location_state = {
            key[len(_SATCLIP_PREFIX) :]: value
            for key, value in state.items()
            if isinstance(key, str) and key.startswith(_SATCLIP_PREFIX)
        }
        if not location_state:
            raise ValueError(
                f"SatCLIP checkpoint {path} has no location-encoder weights: no "
                f"'state_dict' key starts with {_SATCLIP_PREFIX!r}"
            )
        hparams = checkpoint.get("hyper_parameters") or {}
        if not isinstance(hparams, Mapping):
            hparams = {}
        kwargs = _satclip_kwargs(path, hparams, location_state)
        encoder = cls(**(kwargs | overrides))
        # The architecture, so that a model built from it loads without the file.
        mark_source(encoder, str(path), {"location_encoder": dict(kwargs)})
        kwargs.update(overrides)
        try:
            encoder.load_state_dict(location_state)
        except RuntimeError as err:
            raise RuntimeError(
                f"the location weights in SatCLIP checkpoint {path} do not fit "
                f"LocationEncoder({kwargs}): {err}"
            ) from err
        return encoder.eval()


def _satclip_kwargs(
    path: Path, hparams: Mapping[str, Any], state: Mapping[str, Tensor]
) -> dict[str, Any]:
    """Map SatCLIP hyper-parameters (falling back to weight shapes) to constructor arguments."""
    le_type = hparams.get("le_type", "sphericalharmonics")
    pe_type = hparams.get("pe_type", "siren")
    if le_type != "sphericalharmonics" or pe_type != "siren":
        raise ValueError(
            f"SatCLIP checkpoint {path} uses le_type={le_type!r} and pe_type={pe_type!r}; only "
            "le_type='sphericalharmonics' with pe_type='siren' is supported"
        )
    calculation = hparams.get("harmonics_calculation", "analytic")
    if calculation not in _CALCULATIONS:
        raise ValueError(
            f"SatCLIP checkpoint {path} uses harmonics_calculation={calculation!r}; supported: "
            f"{_CALCULATIONS}"
        )
    first = state.get("nnet.layers.0.weight")
    last = state.get("nnet.last_layer.weight")
    kwargs: dict[str, Any] = {"harmonics_calculation": calculation}
    if first is not None:
        kwargs["legendre_polys"] = math.isqrt(first.shape[1])
        kwargs["dim_hidden"] = first.shape[0]
    n_layers = len({key.split(".")[2] for key in state if key.startswith("nnet.layers.")})
    if n_layers:
        kwargs["num_layers"] = n_layers
    if last is not None:
        kwargs["dim_out"] = last.shape[0]
    kwargs["use_bias"] = "nnet.last_layer.bias" in state
    names = {
        "legendre_polys": "legendre_polys",
        "capacity": "dim_hidden",
        "num_hidden_layers": "num_layers",
        "embed_dim": "dim_out",
    }
    for satclip_name, name in names.items():
        if hparams.get(satclip_name) is not None:
            kwargs[name] = int(hparams[satclip_name])
    return kwargs
