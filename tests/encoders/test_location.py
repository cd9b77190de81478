"""Tests for the SatCLIP-compatible location encoder."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import sph_harm_y

from zoo.data.image_text import ImageTextLocationDataset
from zoo.encoders.location import (
    LocationEncoder,
    SirenNet,
    SphericalHarmonics,
    validate_locations,
)


def _test_points(seed: int = 0, n: int = 64) -> torch.Tensor:
    """Random (lat, lon) plus poles, near-poles, the dateline and the origin."""
    gen = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=gen, dtype=torch.float64) * 180 - 90
    lon = torch.rand(n, generator=gen, dtype=torch.float64) * 360 - 180
    special = torch.tensor(
        [
            [90.0, 0.0],
            [-90.0, 45.0],
            [89.9999, -180.0],
            [-89.99, 180.0],
            [0.0, 180.0],
            [0.0, -180.0],
            [12.5, 179.9999],
            [-45.0, -179.9999],
            [0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    return torch.cat([torch.stack([lat, lon], dim=1), special])


def _scipy_reference(location: torch.Tensor, L: int, calculation: str) -> np.ndarray:
    """SatCLIP's real harmonics built from scipy's complex ones (which carry the CS phase)."""
    lat, lon = location[:, 0].numpy(), location[:, 1].numpy()
    theta = np.deg2rad(lat + 90.0)  # SatCLIP: polar angle from lat + 90
    phi = np.deg2rad(lon + 180.0)  # SatCLIP: azimuth from lon + 180
    ls = np.concatenate([np.full(2 * n + 1, n) for n in range(L)])
    ms = np.concatenate([np.arange(-n, n + 1) for n in range(L)])
    absm = np.abs(ms)
    y = sph_harm_y(ls[None, :], absm[None, :], theta[:, None], phi[:, None])
    # Undo the Condon-Shortley phase: (-1)^m Y_l^m = N P~_l^m e^{i m phi}.
    y = y * ((-1.0) ** absm)[None, :]
    real = np.where(ms > 0, math.sqrt(2) * y.real, 0.0)
    real = np.where(ms < 0, math.sqrt(2) * y.imag, real)
    real = np.where(ms == 0, y.real, real)
    if calculation == "analytic":
        # SatCLIP's generated table: no CS phase, m = 0 scaled by pi.
        return real * np.where(ms == 0, math.pi, 1.0)[None, :]
    # SatCLIP's closed form: orthonormal with the CS phase.
    return real * np.where(absm % 2 == 1, -1.0, 1.0)[None, :]


@pytest.mark.parametrize("calculation", ["analytic", "closed-form"])
@pytest.mark.parametrize("L", [10, 40])
def test_spherical_harmonics_match_scipy(L: int, calculation: str) -> None:
    location = _test_points()
    sh = SphericalHarmonics(L, harmonics_calculation=calculation)
    ours = sh(location, dtype=torch.float64).numpy()
    ref = _scipy_reference(location, L, calculation)
    assert ours.shape == (location.shape[0], L * L)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_spherical_harmonics_output_is_float32_and_deterministic() -> None:
    location = _test_points(n=8)
    sh = SphericalHarmonics(10)
    assert sh.embedding_dim == 100
    assert list(sh.parameters()) == [] and list(sh.buffers()) == []
    assert sh.state_dict() == {}
    out = sh(location)
    assert out.dtype == torch.float32 and out.shape == (location.shape[0], 100)
    torch.testing.assert_close(out, sh(location.float()), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all()
    ints = torch.tensor([[10, 20], [-90, 180]])
    torch.testing.assert_close(sh(ints), sh(ints.double()))


@pytest.mark.parametrize("calculation", ["analytic", "closed-form"])
@pytest.mark.parametrize("L", [10, 40])
def test_spherical_harmonics_quadrature_orthogonality(L: int, calculation: str) -> None:
    """Exact Gauss-Legendre x uniform-azimuth quadrature of Y_lm * Y_l'm' over the sphere."""
    x, w = np.polynomial.legendre.leggauss(L + 2)
    n_phi = 2 * L + 2
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    theta = np.arccos(x)
    lat = np.rad2deg(theta)[:, None] - 90.0 + 0 * phi[None, :]
    lon = np.rad2deg(phi)[None, :] - 180.0 + 0 * theta[:, None]
    weights = (w[:, None] * (2 * np.pi / n_phi) + 0 * phi[None, :]).ravel()
    location = torch.from_numpy(np.stack([lat.ravel(), lon.ravel()], axis=1))
    y = SphericalHarmonics(L, harmonics_calculation=calculation)(location, dtype=torch.float64)
    y = y.numpy()
    gram = (y * weights[:, None]).T @ y
    ms = np.concatenate([np.arange(-n, n + 1) for n in range(L)])
    # SatCLIP's analytic table scales every m = 0 harmonic by pi; the closed form is orthonormal.
    diag = np.where(ms == 0, math.pi**2 if calculation == "analytic" else 1.0, 1.0)
    np.testing.assert_allclose(gram, np.diag(diag), atol=1e-9)


# Low-order harmonics written out by hand: theta = polar angle, phi = azimuth (SatCLIP's).
_ANALYTIC_LOW_ORDER = {
    # Y_0^0 = sqrt(pi / 4): SatCLIP's table prints 0.886226925452758.
    (0, 0): lambda t, p: math.sqrt(math.pi) / 2,
    (1, -1): lambda t, p: math.sqrt(3 / (4 * math.pi)) * math.sin(t) * math.sin(p),
    # sqrt(3 pi / 4) = 1.53499006191973 in SatCLIP's table.
    (1, 0): lambda t, p: math.sqrt(3 * math.pi / 4) * math.cos(t),
    (1, 1): lambda t, p: math.sqrt(3 / (4 * math.pi)) * math.sin(t) * math.cos(p),
    (2, -2): lambda t, p: math.sqrt(15 / (16 * math.pi)) * math.sin(t) ** 2 * math.sin(2 * p),
    (2, -1): lambda t, p: math.sqrt(15 / (4 * math.pi)) * math.sin(t) * math.cos(t) * math.sin(p),
    (2, 0): lambda t, p: math.sqrt(5 * math.pi / 4) * (3 * math.cos(t) ** 2 - 1) / 2,
    (2, 1): lambda t, p: math.sqrt(15 / (4 * math.pi)) * math.sin(t) * math.cos(t) * math.cos(p),
    (2, 2): lambda t, p: math.sqrt(15 / (16 * math.pi)) * math.sin(t) ** 2 * math.cos(2 * p),
}


def _closed_form_low_order(n: int, m: int, t: float, p: float) -> float:
    """SatCLIP's closed form for degree n <= 2, with the Condon-Shortley phase written out."""
    x, s = math.cos(t), math.sin(t)
    legendre_cs = {
        (0, 0): 1.0,
        (1, 0): x,
        (1, 1): -s,
        (2, 0): (3 * x * x - 1) / 2,
        (2, 1): -3 * s * x,
        (2, 2): 3 * s * s,
    }
    k = abs(m)
    norm = math.sqrt((2 * n + 1) / (4 * math.pi) * math.factorial(n - k) / math.factorial(n + k))
    if m == 0:
        return norm * legendre_cs[(n, 0)]
    trig = math.cos(k * p) if m > 0 else math.sin(k * p)
    return math.sqrt(2) * norm * legendre_cs[(n, k)] * trig


def test_low_order_harmonics_by_hand() -> None:
    location = _test_points(seed=1, n=16)
    analytic = SphericalHarmonics(3)(location, dtype=torch.float64)
    closed = SphericalHarmonics(3, harmonics_calculation="closed-form")(location, torch.float64)
    for row, (lat, lon) in enumerate(location.tolist()):
        t, p = math.radians(lat + 90), math.radians(lon + 180)
        column = 0
        for n in range(3):
            for m in range(-n, n + 1):  # SatCLIP's ordering
                expected = _ANALYTIC_LOW_ORDER[(n, m)](t, p)
                assert analytic[row, column].item() == pytest.approx(expected, abs=1e-12)
                expected = _closed_form_low_order(n, m, t, p)
                assert closed[row, column].item() == pytest.approx(expected, abs=1e-12)
                column += 1


def test_satclip_table_constants_and_angle_convention() -> None:
    # lat = -90 is theta = 0 in SatCLIP (cos theta = 1); lon = -180 is phi = 0.
    south, equator = torch.tensor([[-90.0, 0.0]]), torch.tensor([[0.0, -180.0]])
    y = SphericalHarmonics(2)(south, dtype=torch.float64)[0]
    assert y[0].item() == pytest.approx(0.886226925452758, abs=1e-14)
    assert y[2].item() == pytest.approx(1.53499006191973, abs=1e-13)
    y = SphericalHarmonics(2)(equator, dtype=torch.float64)[0]
    assert y[1].item() == pytest.approx(0.0, abs=1e-14)  # Y_1^-1 ~ sin(phi)
    assert y[2].item() == pytest.approx(0.0, abs=1e-14)  # Y_1^0 ~ cos(theta)
    assert y[3].item() == pytest.approx(0.48860251190292, abs=1e-13)  # Y_1^1, no CS sign


def test_matches_entries_of_satclip_generated_table() -> None:
    """Higher-order coefficients as printed in SatCLIP's ``spherical_harmonics_ylm.py``."""
    location = torch.tensor([[23.0, -47.0], [-61.0, 133.0], [80.0, 5.0]], dtype=torch.float64)
    y = SphericalHarmonics(42)(location, dtype=torch.float64)
    t, p = torch.deg2rad(location[:, 0] + 90), torch.deg2rad(location[:, 1] + 180)
    c, s2 = torch.cos(t), 1 - torch.cos(t) ** 2
    table = {
        (5, 0): 23.1468472528419 * c**5 - 25.7187191698243 * c**3 + 5.51115410781949 * c,
        (6, -4): 0.0010678622237645 * s2**2 * (5197.5 * c**2 - 472.5) * torch.sin(4 * p),
        (9, -9): 0.748900951853188 * s2**4.5 * torch.sin(9 * p),
        (41, 40): 9.75462521665048 * s2**20 * torch.cos(40 * p) * c,
        (41, 41): 1.07721814896289 * s2**20.5 * torch.cos(41 * p),
    }
    for (n, m), expected in table.items():
        torch.testing.assert_close(y[:, n * n + n + m], expected, rtol=1e-11, atol=1e-12)


def test_max_latitude_clamp_is_opt_in() -> None:
    pole, near = torch.tensor([[90.0, 10.0]]), torch.tensor([[89.95, 10.0]])
    default = SphericalHarmonics(10)
    assert not torch.allclose(default(pole), default(near))
    clamped = SphericalHarmonics(10, max_latitude=89.95)
    torch.testing.assert_close(clamped(pole), clamped(near))


def test_siren_first_layer_uses_w0_30_and_hidden_w0_1() -> None:
    torch.manual_seed(0)
    net = SirenNet(dim_in=3, dim_hidden=4, dim_out=2, num_layers=2, dropout=False)
    x = torch.randn(5, 3)
    w0, b0 = net.layers[0].weight, net.layers[0].bias
    w1, b1 = net.layers[1].weight, net.layers[1].bias
    w2, b2 = net.last_layer.weight, net.last_layer.bias
    with torch.no_grad():
        h0 = torch.sin(30.0 * (x @ w0.T + b0))
        torch.testing.assert_close(net.layers[0](x), h0)
        h1 = torch.sin(1.0 * (h0 @ w1.T + b1))
        torch.testing.assert_close(net(x), h1 @ w2.T + b2)


def test_siren_parameter_names_and_init() -> None:
    net = SirenNet(dim_in=100, dim_hidden=64, dim_out=32, num_layers=3)
    assert list(net.state_dict()) == [
        "layers.0.weight", "layers.0.bias",
        "layers.1.weight", "layers.1.bias",
        "layers.2.weight", "layers.2.bias",
        "last_layer.weight", "last_layer.bias",
    ]  # fmt: skip
    assert net.layers[0].weight.abs().max() <= 1 / 100
    assert net.layers[0].bias.abs().max() <= 1 / 100
    assert net.layers[1].weight.abs().max() <= math.sqrt(6 / 64)
    assert net.layers[1].weight.abs().max() > 0.5 * math.sqrt(6 / 64)
    assert net.last_layer.weight.abs().max() <= math.sqrt(6 / 64)
    no_bias = SirenNet(dim_in=4, dim_hidden=8, dim_out=2, num_layers=1, use_bias=False)
    assert list(no_bias.state_dict()) == ["layers.0.weight", "last_layer.weight"]


def test_siren_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    net = SirenNet(dim_in=8, dim_hidden=32, dim_out=4, num_layers=2)
    x = torch.randn(6, 8)
    net.train()
    assert not torch.allclose(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x))


def test_location_encoder_shapes_and_names() -> None:
    encoder = LocationEncoder(legendre_polys=4, dim_hidden=16, num_layers=2, dim_out=8).eval()
    out = encoder(_test_points(n=5).float())
    assert out.shape == (14, 8) and out.dtype == torch.float32
    assert all(key.startswith("nnet.") for key in encoder.state_dict())
    assert encoder.nnet.layers[0].weight.shape == (16, 16)
    assert encoder.double()(_test_points(n=3)).dtype == torch.float64


def test_constant_tables_move_with_the_module() -> None:
    """The harmonics' tables are not buffers (the state dict stays empty) but follow ``.to``, so
    the forward pass copies nothing from the host; their float64 precision survives dtype casts."""
    moved = LocationEncoder(legendre_polys=4, dim_hidden=8, dim_out=4).to("meta")
    assert {t.device.type for t in moved.posenc._tables.values()} == {"meta"}
    sh = SphericalHarmonics(4)
    location = _test_points(n=3)
    expected = sh(location, dtype=torch.float64)
    sh.half()
    assert sh._tables["scale"].dtype == torch.float64
    assert torch.equal(sh(location, dtype=torch.float64), expected)


def _satclip_checkpoint(encoder: LocationEncoder, hparams: dict | None = None) -> dict:
    """A dict shaped like a SatCLIP Lightning checkpoint (float64 weights, duplicated nnet)."""
    state = {}
    for key, value in encoder.double().state_dict().items():
        state[f"model.location.{key}"] = value.clone()
        if key.startswith("nnet."):
            state[f"model.{key}"] = value.clone()
    state["model.logit_scale"] = torch.tensor(2.6592, dtype=torch.float64)
    state["model.visual.fc.weight"] = torch.randn(8, 4)
    checkpoint = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": state,
        "optimizer_states": [],
    }
    if hparams is not None:
        checkpoint["hyper_parameters"] = hparams
    return checkpoint


def _satclip_hparams(**changes) -> dict:
    hparams = {
        "embed_dim": 8,
        "image_resolution": 256,
        "vision_layers": "moco_resnet18",
        "in_channels": 13,
        "le_type": "sphericalharmonics",
        "pe_type": "siren",
        "frequency_num": 16,
        "max_radius": 0.01,
        "min_radius": 1e-05,
        "legendre_polys": 5,
        "harmonics_calculation": "analytic",
        "sh_embedding_dims": 32,
        "learning_rate": 0.0001,
        "num_hidden_layers": 2,
        "capacity": 16,
    }
    hparams.update(changes)
    return hparams


@pytest.mark.parametrize("with_hparams", [True, False])
def test_checkpoint_round_trip(tmp_path, with_hparams: bool) -> None:
    torch.manual_seed(0)
    original = LocationEncoder(legendre_polys=5, dim_hidden=16, num_layers=2, dim_out=8).eval()
    location = _test_points(n=10).float()
    expected = original(location)
    path = tmp_path / "satclip.ckpt"
    hparams = _satclip_hparams() if with_hparams else None
    torch.save(_satclip_checkpoint(original, hparams), path)

    loaded = LocationEncoder.from_satclip_checkpoint(str(path))
    assert not loaded.training
    assert loaded.posenc.legendre_polys == 5 and loaded.dim_out == 8
    assert len(loaded.nnet.layers) == 2
    torch.testing.assert_close(loaded(location), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.double()(location.double()), original(location.double()))


def test_checkpoint_reads_harmonics_calculation_and_overrides(tmp_path) -> None:
    encoder = LocationEncoder(legendre_polys=5, dim_hidden=16, dim_out=8)
    path = tmp_path / "closed.ckpt"
    hparams = _satclip_hparams(harmonics_calculation="closed-form")
    torch.save(_satclip_checkpoint(encoder, hparams), path)
    loaded = LocationEncoder.from_satclip_checkpoint(path)
    assert loaded.posenc.harmonics_calculation == "closed-form"
    loaded = LocationEncoder.from_satclip_checkpoint(path, harmonics_calculation="analytic")
    assert loaded.posenc.harmonics_calculation == "analytic"


def test_checkpoint_errors(tmp_path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        LocationEncoder.from_satclip_checkpoint(missing)

    no_location = tmp_path / "vision_only.ckpt"
    torch.save({"state_dict": {"model.visual.fc.weight": torch.zeros(2, 2)}}, no_location)
    with pytest.raises(ValueError, match=r"vision_only\.ckpt.*model\.location\."):
        LocationEncoder.from_satclip_checkpoint(no_location)

    encoder = LocationEncoder(legendre_polys=5, dim_hidden=16, dim_out=8)
    wrong = tmp_path / "wrong.ckpt"
    torch.save(_satclip_checkpoint(encoder, _satclip_hparams(capacity=32)), wrong)
    with pytest.raises(RuntimeError, match=r"wrong\.ckpt.*do not fit"):
        LocationEncoder.from_satclip_checkpoint(wrong)

    other = tmp_path / "theory.ckpt"
    torch.save(_satclip_checkpoint(encoder, _satclip_hparams(le_type="theory")), other)
    with pytest.raises(ValueError, match="le_type='theory'"):
        LocationEncoder.from_satclip_checkpoint(other)

    pickled = tmp_path / "pickled.ckpt"
    hparams = _satclip_hparams(extra=argparse.Namespace(a=1))
    torch.save(_satclip_checkpoint(encoder, hparams), pickled)
    with pytest.raises(RuntimeError, match=r"pickled\.ckpt.*weights_only=False"):
        LocationEncoder.from_satclip_checkpoint(pickled)
    trusted = LocationEncoder.from_satclip_checkpoint(pickled, weights_only=False)
    assert trusted.posenc.legendre_polys == 5

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="garbage.ckpt"):
        LocationEncoder.from_satclip_checkpoint(garbage)


@pytest.mark.parametrize(
    ("location", "pattern"),
    [
        (torch.tensor([[200.0, 10.0]]), r"latitude 200\.0.*\[-90, 90\].*\(lat, lon\)"),
        (torch.tensor([[10.0, 20.0], [5.0, -181.0]]), r"longitude -181\.0 at row 1.*\[-180, 180\]"),
        (torch.tensor([[10.0, 20.0], [float("nan"), 0.0]]), r"non-finite.*row 1"),
        (torch.tensor([[10.0, float("inf")]]), r"non-finite.*row 0"),
        (torch.zeros(3), r"shape \(B, 2\).*got shape \(3,\)"),
        (torch.zeros(4, 3), r"shape \(B, 2\).*got shape \(4, 3\)"),
    ],
)
def test_bad_locations_raise(location: torch.Tensor, pattern: str, tmp_path) -> None:
    with pytest.raises(ValueError, match=pattern):
        validate_locations(location)
    if location.ndim == 2 and location.shape[1] == 2:
        # Bad values are the data's check, on the host (the encoder reads no values: that would
        # copy them from the device at every step); the message numbers the dataset's rows.
        dataset = _dataset_with_locations(tmp_path, location)
        with pytest.raises(ValueError, match=pattern):
            for index in range(len(dataset)):
                dataset[index]
    else:  # a wrong shape is metadata: the encoder still refuses it
        with pytest.raises(ValueError, match=pattern):
            LocationEncoder(legendre_polys=3, dim_hidden=8, dim_out=4)(location)


def _dataset_with_locations(root, location: torch.Tensor) -> ImageTextLocationDataset:
    """A caption table of ``len(location)`` images whose samples carry ``location``'s rows."""
    lines = ["filepath,title,lat,lon"]
    for i in range(len(location)):
        Image.new("RGB", (4, 4)).save(root / f"{i}.png")
        lines.append(f"{i}.png,an image,0.0,0.0")
    (root / "train.csv").write_text("\n".join(lines) + "\n")

    def transforms(sample: dict) -> dict:
        return {**sample, "location": location[sample["index"]]}

    return ImageTextLocationDataset(root, "train", transforms=transforms)


def test_validation_names_the_field_and_hints_at_swapped_columns() -> None:
    with pytest.raises(ValueError, match=r"^coords has latitude 120\.0.*swap"):
        validate_locations(torch.tensor([[120.0, 40.0]]), name="coords")
    with pytest.raises(TypeError, match="torch.Tensor"):
        validate_locations([[0.0, 0.0]])  # type: ignore[arg-type]
    validate_locations(torch.tensor([[90.0, 180.0], [-90.0, -180.0]]))
    validate_locations(torch.zeros(0, 2))


def _siren_reference(state: dict, features: np.ndarray) -> np.ndarray:
    """SatCLIP's SirenNet written out in float64 numpy: sin(30·(W x + b)) for the first layer,
    sin(W x + b) for the hidden ones, a linear last layer."""
    x = features
    layer = 0
    while f"nnet.layers.{layer}.weight" in state:
        w0 = 30.0 if layer == 0 else 1.0
        weight = state[f"nnet.layers.{layer}.weight"].double().numpy()
        bias = state[f"nnet.layers.{layer}.bias"].double().numpy()
        x = np.sin(w0 * (x @ weight.T + bias))
        layer += 1
    return (
        x @ state["nnet.last_layer.weight"].double().numpy().T
        + state["nnet.last_layer.bias"].double().numpy()
    )


def test_satclip_l40_checkpoint_gives_satclip_features(tmp_path) -> None:
    """A checkpoint in SatCLIP's layout with L = 40 (SatCLIP's ViT16-L40 sizes: 1600 harmonics,
    capacity 256, 2 hidden layers, 256 out) loads; its features equal the scipy harmonics
    through a float64 SIREN written out here."""
    torch.manual_seed(0)
    encoder = LocationEncoder(legendre_polys=40, dim_hidden=256, num_layers=2, dim_out=256)
    hparams = _satclip_hparams(legendre_polys=40, capacity=256, embed_dim=256)
    torch.save(_satclip_checkpoint(encoder, hparams), tmp_path / "satclip-vit16-l40.ckpt")
    loaded = LocationEncoder.from_satclip_checkpoint(tmp_path / "satclip-vit16-l40.ckpt")
    assert loaded.posenc.legendre_polys == 40 and loaded.nnet.layers[0].weight.shape == (256, 1600)
    location = _test_points(n=32)
    state = {
        k[len("model.location.") :]: v
        for k, v in _satclip_checkpoint(encoder)["state_dict"].items()
        if k.startswith("model.location.")
    }
    want = _siren_reference(state, _scipy_reference(location, 40, "analytic"))
    with torch.no_grad():
        got = loaded.double()(location).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_bf16_mixed_runs_the_location_encoder_in_full_precision() -> None:
    """Under bf16 autocast (what Lightning's ``bf16-mixed`` sets) the harmonics and SIREN still
    run in float64: the float32 output agrees with a float64 reference to float32 precision,
    where a bfloat16 SIREN is off by ~0.5 % (shown on the same weights)."""
    torch.manual_seed(0)
    encoder = LocationEncoder(legendre_polys=10, dim_hidden=64, num_layers=2, dim_out=32).eval()
    location = _test_points(n=64).float()
    reference = encoder.double()(location.double())
    encoder.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = encoder(location)
        bf16 = encoder.nnet(encoder.posenc(location))  # the SIREN left to autocast
    assert got.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    error = lambda x: ((x.double() - reference).norm() / reference.norm()).item()  # noqa: E731
    assert error(got) < 1e-6
    assert error(bf16) > 1e-3
