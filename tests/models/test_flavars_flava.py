"""FLAVARS from a FLAVA folder: parity with transformers' FlavaForPreTraining (random weights,
tiny config, saved to a temporary folder), the codebook target, and the data link."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from transformers import (
    FlavaConfig,
    FlavaForPreTraining,
    FlavaImageCodebook,
    FlavaImageCodebookConfig,
    FlavaImageProcessor,
    PreTrainedTokenizerFast,
)

from zoo.data.tokenize import word_level_tokenizer
from zoo.encoders.flava import FlavaEncoders, FlavaSpec
from zoo.encoders.zoo_encoders import FusionSpec
from zoo.models import FLAVARS
from zoo.models.flavars import MaskingDraw

IMAGE, PATCH, CODES = 32, 8, 24
MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
CODEBOOK = FlavaImageCodebookConfig(
    num_groups=4, hidden_size=8, num_blocks_per_group=1, vocab_size=CODES
)
WORDS = (
    "a an the of with and satellite aerial image photo river forest field road city farm".split()
)


def _tokenizer() -> PreTrainedTokenizerFast:
    return word_level_tokenizer(WORDS)


def save_tiny_flava(folder, image_layers: int = 2) -> FlavaForPreTraining:
    """A tiny random FlavaForPreTraining (seeded) saved with its tokenizer and processor."""
    tokenizer = _tokenizer()
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    config = FlavaConfig(
        image_config=dict(
            small,
            num_hidden_layers=image_layers,
            image_size=IMAGE,
            patch_size=PATCH,
            vocab_size=CODES,
        ),
        text_config=dict(small, vocab_size=len(tokenizer), max_position_embeddings=32),
        multimodal_config=dict(small, num_hidden_layers=1),
        image_codebook_config=CODEBOOK.to_dict(),
        projection_dim=16,
        hidden_size=32,
        init_codebook=False,
    )
    torch.manual_seed(0)
    model = FlavaForPreTraining(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    FlavaImageProcessor(
        size={"height": IMAGE, "width": IMAGE},
        crop_size={"height": IMAGE, "width": IMAGE},
        image_mean=MEAN,
        image_std=STD,
    ).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[str, str, FlavaForPreTraining, FlavaImageCodebook]:
    """A tiny random FlavaForPreTraining with its tokenizer and processor, and a codebook."""
    root = tmp_path_factory.mktemp("flava")
    model = save_tiny_flava(root / "flava")
    codebook = FlavaImageCodebook(CODEBOOK).eval()
    codebook.save_pretrained(root / "codebook")
    return str(root / "flava"), str(root / "codebook"), model, codebook


def _inputs(tokenizer) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    captions = [
        "a satellite image of a river",
        "an aerial photo of the city with a road",
        "a field",
        "the forest and a farm",
    ]
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    image = torch.randn(len(captions), 3, IMAGE, IMAGE, generator=g)
    return {
        "image": image,
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "caption": captions,
    }


def _flavars(flava: str, codebook: str | None = None) -> FLAVARS:
    return FLAVARS(
        flava=FlavaSpec(flava, codebook), image_size=IMAGE, tokenizer=_tokenizer()
    ).eval()


def _features(out) -> torch.Tensor:
    """``get_*_features``: a tensor in older transformers, an output with ``pooler_output`` now."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


@torch.no_grad()
def test_encoders_and_matching_equal_flava(folders):
    flava, _, hf, _ = folders
    model = _flavars(flava)
    batch = _inputs(model.tokenizer)
    image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
    want_image = F.normalize(
        _features(hf.flava.get_image_features(pixel_values=image))[:, 0], dim=-1
    )
    want_text = F.normalize(
        _features(hf.flava.get_text_features(input_ids=ids, attention_mask=mask))[:, 0], dim=-1
    )
    torch.testing.assert_close(model.encode_image(image), want_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_text(ids, mask), want_text, atol=1e-5, rtol=1e-5)
    hf_out = hf(
        input_ids=ids,
        input_ids_masked=ids,
        pixel_values=image,
        attention_mask=mask,
        return_loss=False,
    )
    torch.testing.assert_close(
        model.matching_logits(image, ids, mask), hf_out.itm_logits, atol=1e-5, rtol=1e-5
    )
    # FLAVA's own modules, weights as loaded: the modules are transformers' classes.
    assert type(model.encoders.model).__name__ == "FlavaModel"
    assert type(model.encoders.itm_head).__name__ == "FlavaITMHead"


def _masking(
    model: FLAVARS, batch: dict, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed masked-pass choices for both sides: half the patches, 40 % of the real tokens
    (token 1 always), as (patches, masked ids, MLM labels)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    g = torch.Generator().manual_seed(seed)
    patches = torch.rand(len(ids), (IMAGE // PATCH) ** 2, generator=g) < 0.5
    picked = (torch.rand(ids.shape, generator=g) < 0.4) & (mask == 1)
    picked[:, 1] = True
    return (
        patches,
        ids.masked_fill(picked, model.tokenizer.mask_token_id),
        ids.masked_fill(~picked, -100),
    )


@torch.no_grad()
def _model_batch_masking(folders, seed: int):
    """A FLAVARS built from the FLAVA folders, a batch, and its masking draw for ``seed``."""
    flava, codebook, _, _ = folders
    model = _flavars(flava, codebook)
    batch = _inputs(model.tokenizer)
    return model, batch, _masking(model, batch, seed=seed)


def test_loss_components_equal_flava(folders):
    """Where the definitions coincide: global contrastive (unmasked pair), ITM, MMM image and
    MMM text (masked pair, all pairs positive, the same masks and codebook labels) against one
    FlavaForPreTraining call; MLM against FLAVA with text only and MIM with image only (FLAVA
    computes its unimodal losses only when no multimodal pass runs)."""
    _, _, hf, hf_codebook = folders
    model, batch, (patches, masked_ids, mlm_labels) = _model_batch_masking(folders, seed=0)
    image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
    b = len(ids)
    rows = torch.arange(b)
    draw = MaskingDraw(patches, masked_ids, mlm_labels, rows, rows, torch.ones(b, dtype=torch.long))
    ours = model.compute_losses(batch, draw)

    codes = model.codebook(image, model.grid_size)
    # Our codebook input is the un-normalized image mapped as DALL-E's map_pixels.
    pixels = (
        image * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    ).clamp(0, 1)
    pixels = F.interpolate(pixels, size=(IMAGE // PATCH * 8,) * 2, mode="bilinear", antialias=True)
    assert torch.equal(codes, hf_codebook.get_codebook_indices(0.8 * pixels + 0.1).flatten(1))

    both = hf(
        input_ids=ids,
        input_ids_masked=masked_ids,
        pixel_values=image,
        attention_mask=mask,
        bool_masked_pos=patches,
        mlm_labels=mlm_labels.clone(),
        mim_labels=codes.clone(),
        itm_labels=torch.ones(b, dtype=torch.long),
        return_loss=True,
    ).loss_info
    text_only = hf(
        input_ids=ids,
        input_ids_masked=masked_ids,
        attention_mask=mask,
        mlm_labels=mlm_labels.clone(),
        return_loss=True,
    ).loss_info
    image_only = hf(
        pixel_values=image,
        bool_masked_pos=patches,
        mim_labels=codes.clone(),
        return_loss=True,
    ).loss_info
    pairs = {
        "contrastive": both.global_contrastive,
        "itm": both.itm,
        "mmm_image": both.mmm_image,
        "mmm_text": both.mmm_text,
        "mlm": text_only.mlm,
        "mim": image_only.mim,
    }
    for name, theirs in pairs.items():
        torch.testing.assert_close(ours[name], theirs, atol=1e-5, rtol=1e-5, msg=name)


@torch.no_grad()
def test_matching_rows_with_negatives_equal_flava(folders):
    """FLAVA's B-row layout with negatives inside it: the rows whose caption was replaced count
    for ITM only, MMM is counted on the kept pairs; ITM, MMM image and MMM text equal one
    FlavaForPreTraining call whose batch holds the same pairs and ``itm_labels``."""
    _, _, hf, _ = folders
    model, batch, (patches, masked_ids, mlm_labels) = _model_batch_masking(folders, seed=1)
    image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
    b = len(ids)
    rows = torch.arange(b)
    text_index = torch.where(rows % 2 == 1, rows.roll(1), rows)  # odd rows: the caption before
    target = (text_index == rows).long()
    ours = model.compute_losses(
        batch, MaskingDraw(patches, masked_ids, mlm_labels, None, text_index, target)
    )
    theirs = hf(
        input_ids=ids[text_index],
        input_ids_masked=masked_ids[text_index],
        pixel_values=image,
        attention_mask=mask[text_index],
        bool_masked_pos=patches,
        mlm_labels=mlm_labels[text_index],
        mim_labels=model.codebook(image, model.grid_size),
        itm_labels=target,
        return_loss=True,
    ).loss_info
    for name, value in {
        "itm": theirs.itm,
        "mmm_image": theirs.mmm_image,
        "mmm_text": theirs.mmm_text,
    }.items():
        torch.testing.assert_close(ours[name], value, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("with_codebook", [True, False])
def test_a_flava_checkpoint_of_zoo_0_1_loads(folders, with_codebook):
    """zoo 0.1 kept FLAVA's modules under ``flava.`` and, with pixel targets, new MIM / MMM-image
    heads at the top next to FLAVA's own code heads: such a state dict (built here by moving
    the keys back) loads into ``encoders.`` with every weight in place, and its flat
    hyper-parameters rebuild the model."""
    flava, codebook, _, _ = folders
    torch.manual_seed(0)
    spec = FlavaSpec(flava, codebook if with_codebook else None)
    model = FLAVARS(flava=spec, image_size=IMAGE, tokenizer=_tokenizer())
    new = model.state_dict()
    old = {}
    for key, value in new.items():
        if not key.startswith("encoders."):
            old[key] = value
            continue
        local = key.removeprefix("encoders.")
        pixel_head = not with_codebook and local.split(".")[0] in ("mim_head", "mmm_image_head")
        old[local if pixel_head else f"flava.{local}"] = value
    if not with_codebook:  # FLAVA's own code heads, which pixel targets left unused
        codes = FlavaEncoders(flava)
        for name in ("mim_head", "mmm_image_head"):
            for key, value in getattr(codes, name).state_dict().items():
                old[f"flava.{name}.{key}"] = value
    assert FLAVARS.upgrade_state_dict(old) == new

    hparams = {"flava": flava, "codebook": spec.codebook, "image_size": IMAGE}
    upgraded = FLAVARS.upgrade_hyperparameters(hparams)
    assert upgraded == {"flava": {"folder": flava, "codebook": spec.codebook}, "image_size": IMAGE}
    torch.manual_seed(1)
    fresh = FLAVARS(**upgraded, tokenizer=_tokenizer())
    fresh.load_state_dict(old)  # strict: every key of the old layout has its place
    for key, value in new.items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_flava_folder_errors(folders, tmp_path):
    flava, codebook, _, _ = folders
    with pytest.raises(
        FileNotFoundError, match="neither a local folder nor in the Hugging Face cache"
    ):
        FLAVARS(
            flava=FlavaSpec(str(tmp_path / "missing")), image_size=IMAGE, tokenizer=_tokenizer()
        )
    with pytest.raises(FileNotFoundError, match="no config.json"):
        FLAVARS(flava=FlavaSpec(str(tmp_path)), image_size=IMAGE, tokenizer=_tokenizer())
    with pytest.raises(ValueError, match="set the data's image_size to 32"):
        FLAVARS(flava=FlavaSpec(flava), image_size=64, tokenizer=_tokenizer())
    with pytest.raises(FileNotFoundError, match="codebook"):
        FLAVARS(flava=FlavaSpec(codebook=str(tmp_path)), image_size=IMAGE, tokenizer=_tokenizer())


def test_zoo_encoders_learn_codebook_targets(folders):
    """Without a FLAVA folder the codebook target works with the zoo's encoders too."""
    _, codebook, _, _ = folders
    tokenizer = _tokenizer()
    model = FLAVARS(
        flava=FlavaSpec(codebook=codebook),
        image_size=IMAGE,
        embed_dim=16,
        fusion=FusionSpec(width=16, layers=1),
        tokenizer=tokenizer,
        image_mean=MEAN,
        image_std=STD,
    )
    batch = _inputs(tokenizer)
    losses = model.compute_losses(batch)
    assert model.encoders.mim_head[-1].out_features == CODES
    assert losses["mim"] > 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is None for p in model.codebook.parameters())  # frozen


def test_flava_folder_reaches_the_data_through_the_cli(folders, tmp_path):
    """``model.init_args.flava.folder`` gives the data the folder's tokenizer and mean / std."""
    from zoo.main import main

    flava, _, _, _ = folders
    args = [
        "--config",
        "configs/flavars.yaml",
        f"--model.init_args.flava.folder={flava}",
        "--data.init_args.image_size=32",
        f"--data.init_args.root={tmp_path / 'embedded'}",
        "--data.init_args.splits.train=8",
        "--data.init_args.splits.val=4",
        "--data.init_args.splits.test=4",
        "--trainer.logger=false",
    ]
    cli = main(args, run=False)
    assert cli.datamodule.tokenizer_name == flava
    assert cli.datamodule.mean == tuple(MEAN) and cli.datamodule.std == tuple(STD)
    assert isinstance(cli.model.encoders, FlavaEncoders)
    with pytest.raises(ValueError, match="leave tokenizer unset"):  # it would disagree with FLAVA's
        main([*args, "--data.init_args.tokenizer=bert-base-uncased"], run=False)
    with pytest.raises(ValueError, match="set image_size: 32"):
        main([*args, "--data.init_args.image_size=64"], run=False)


@pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log", "ignore:the batch has no 'location'"
)
@pytest.mark.parametrize("encoders", ["flava", "zoo"])
def test_training_step_with_codebook_has_no_syncing_operator(folders, encoders):
    """FLAVA's modules and the codebook target in a training step (forward, losses, backward):
    no operator that would copy a value from a GPU to the host (``tests/test_sync_free.py``)."""
    from tests.test_sync_free import _SyncRecorder

    flava, codebook, _, _ = folders
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    if encoders == "flava":
        model = FLAVARS(flava=FlavaSpec(flava, codebook), image_size=IMAGE, tokenizer=tokenizer)
    else:
        model = FLAVARS(
            flava=FlavaSpec(codebook=codebook),
            image_size=IMAGE,
            embed_dim=16,
            fusion=FusionSpec(width=16, layers=1),
            tokenizer=tokenizer,
            image_mean=MEAN,
            image_std=STD,
        )
    batch = _inputs(tokenizer)
    model.train()
    recorder = _SyncRecorder()
    with recorder:
        loss = model.training_step(batch, 0)
        loss.backward()
    assert torch.isfinite(loss)
    assert not recorder.found, "operators that synchronize on a GPU:\n" + "\n".join(recorder.found)


def test_spacenet1_upernet_on_a_flava_built_flavars(tmp_path):
    """The SpaceNet1 protocol (the shipped config, fake SpaceNet1 files) on FLAVARS built from a
    FLAVA folder: UPerNet reads FLAVA's own image encoder (its layer outputs equal
    FlavaImageModel's hidden states), fine-tunes a copy, and the model itself is left as it was."""
    from pathlib import Path

    from zoo.evaluation import evaluate, load_evaluations
    from zoo.models.capabilities import DenseEncoder

    root = Path(__file__).resolve().parents[2]
    hf = save_tiny_flava(tmp_path / "flava", image_layers=4)  # four blocks: the simple pyramid
    model = _flavars(str(tmp_path / "flava"))
    assert isinstance(model, DenseEncoder)
    encoder = model.dense_encoder()
    assert encoder.prune_intermediate_layers([0, 1, 2, -1], prune_norm=True) == [0, 1, 2, 3]
    image = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        maps = encoder.forward_intermediates(image, indices=[0, 1, 2, 3])
        hidden = hf.flava.image_model(pixel_values=image, output_hidden_states=True).hidden_states
    side = IMAGE // PATCH
    for i, got in enumerate(maps):
        want = hidden[i + 1][:, 1:].transpose(1, 2).reshape(2, 32, side, side)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (ev,) = load_evaluations([root / "configs" / "eval" / "spacenet1_upernet.yaml"])
    ev = ev.with_args(
        data={"init_args": {"root": str(root / "tests" / "data" / "spacenet1"), "batch_size": 2}},
        max_epochs=1,
    )
    assert ev.build().upernet_args["freeze_encoder"] is False  # the config fine-tunes
    rows = evaluate(model, [ev], tmp_path / "out", device="cpu")  # no checkpoint: FLAVA's weights
    metrics = {r["metric"]: r for r in rows}
    assert 0.0 <= metrics["miou"]["ours"] <= 100.0 and metrics["miou"]["paper"] == 77.9
    assert metrics["miou"]["baselines"] == {"MAE": 74.3, "SkyCLIP-L/14": 78.0}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
