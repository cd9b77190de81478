"""The LLaVA-format variants of GeoChat-Instruct, FIT-RS and VRSBench (tiny fake files in their
real formats, tests/data/<name>/data.py) read by ConversationDataModule into the batch contract,
and the normalization of the variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data.fakes import DATA, copy_fake, edited_fake, fake_datamodule
from zoo.data.conversations import (
    ConversationCollate,
    ConversationDataset,
    normalize_record,
    read_conversations,
)
from zoo.data.datamodules import ConversationDataModule
from zoo.data.tokenize import word_level_tokenizer

SIZE = 16
KEYS = {
    "image",
    "id",
    "task",
    "question_type",
    "input_ids",
    "attention_mask",
    "labels",
    "prompt_ids",
    "prompt_attention_mask",
    "question",
    "reference",
    "references",
}
# name -> (image folder under root, train file, eval file), as in configs/data/<name>.yaml
LAYOUTS = {
    "geochat": ("final_images_llava", "GeoChat_Instruct.json", "GeoChat_Instruct.json"),
    "fit_rs": (
        "FIT-RS_Images",
        "FIT-RS_Instruction/FIT-RS-train-1415k.json",
        "FIT-RSFG/FIT-RSFG-Bench/test_FITRS_vqa_eval.jsonl",
    ),
    "vrsbench": ("images", "VRSBench_train.json", "VRSBench_EVAL_vqa.json"),
}


def _datamodule(name: str, **kwargs) -> ConversationDataModule:
    images, train, evaluation = LAYOUTS[name]
    args = {"batch_size": 2, "image_size": SIZE, "image_dir": images} | kwargs
    return ConversationDataModule(str(DATA / name), train, evaluation, evaluation, **args)


def _all(dm: ConversationDataModule, split: str) -> tuple[list[dict], dict[str, dict]]:
    loader = (
        torch.utils.data.DataLoader(dm.train_dataset, 2, collate_fn=dm.collate_fn)
        if split == "train"
        else getattr(dm, f"{split}_dataloader")()
    )
    batches = [dm.on_after_batch_transfer(b, 0) for b in loader]
    rows = {}
    for b in batches:
        for i in range(len(b["id"])):
            rows[b["id"][i]] = {
                k: b[k][i] for k in ("task", "question_type", "question", "reference", "references")
            }
    return batches, rows


def _check_contract(batch: dict, size: int = 2) -> None:
    assert set(batch) == KEYS
    assert batch["image"].shape == (size, 3, SIZE, SIZE) and batch["image"].dtype == torch.float32
    assert -2.2 <= batch["image"].min() and batch["image"].max() <= 2.7
    for key in ("input_ids", "attention_mask", "labels", "prompt_ids", "prompt_attention_mask"):
        assert batch[key].dtype == torch.long and batch[key].shape[0] == size
    assert batch["labels"].shape == batch["input_ids"].shape
    assert all(isinstance(r, list) and r for r in batch["references"])


def test_geochat_instruct() -> None:
    dm = _datamodule("geochat")
    dm.setup("fit")
    train, rows = _all(dm, "train")
    _check_contract(train[0])
    assert len(rows) == 5
    assert rows["P0001_0001"]["task"] == "referring"  # "[refer] ...\n<image>"
    assert rows["00451"]["task"] == "grounding"  # "<image>\n[grounding] ..."
    assert rows["7"]["task"] == "identify"  # capitalized roles, integer id
    assert rows["7"]["reference"] == "A storage tank."
    assert rows["P0002_0003"]["task"] == ""  # no tag: the image "P0002_0003" is the .jpg
    assert rows["flood_7292"]["reference"] == "Yes"  # image in a sub-folder
    # the placeholder at the end of the first question is moved to the front of the prompt
    prompt = dm.tokenizer.decode(train[0]["prompt_ids"][0], skip_special_tokens=False)
    assert prompt.replace("[PAD]", "").strip().startswith("user : <image> [ refer ]")
    _, val = _all(dm, "val")  # evaluation: one question per sample
    assert len(val) == 6
    assert val["P0002_0003_1"]["question"] == "How many ships are in the image?"
    assert val["P0002_0003_1"]["reference"] == "2"


def test_fit_rs() -> None:
    dm = _datamodule("fit_rs", short_answer_tasks=["vqa"])
    dm.setup("fit")
    train, rows = _all(dm, "train")
    _check_contract(train[0])
    assert rows["P0004_0000_task2"]["reference"] == "4"
    assert (train[0]["labels"] != -100).sum() > 0
    val_batches, val = _all(dm, "val")  # JSON lines, GeoChat's evaluation keys ("text")
    _check_contract(val_batches[0])
    assert val["101_0"] == {
        "task": "vqa",
        "question_type": "count",
        "question": "How many airplanes are there?",
        "reference": "3",
        "references": ["3"],
    }
    records = read_conversations(
        DATA
        / "fit_rs"
        / "FIT-RSFG"
        / "FIT-RSFG-Bench"
        / "test_FITRS_complex_comprehension_eval.jsonl"
    )  # the other evaluation keys ("question")
    assert records[0]["question_types"] == ["task4"] and records[0]["id"] == 200
    assert records[0]["conversations"][1]["value"] == "The ship is docked at the harbor."


def test_vrsbench() -> None:
    dm = _datamodule("vrsbench")
    dm.setup("fit")
    train, rows = _all(dm, "train")
    _check_contract(train[0])
    assert {r["task"] for r in rows.values()} == {"caption", "vqa", "referring"}
    assert rows["1"]["question_type"] == "object color" and rows["1"]["reference"] == "White"
    val_batches, val = _all(dm, "val")
    _check_contract(val_batches[0])
    assert val["1_0"] == {
        "task": "vqa",
        "question_type": "object quantity",
        "question": "How many ships are there?",
        "reference": "2",
        "references": ["2"],
    }
    vqa_only = _datamodule("vrsbench", tasks=["vqa"], batch_size=1)
    vqa_only.setup("fit")
    assert len(vqa_only.train_dataset) == 1 and len(vqa_only.val_dataset) == 3
    captions = ConversationDataset(DATA / "vrsbench" / "images", "../VRSBench_EVAL_Cap.json", SIZE)
    sample = captions[1]
    assert (sample["task"], sample["question_type"]) == ("caption", "caption")
    assert sample["conversations"][1]["value"] == "A detailed caption of image 1."


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_config(name: str) -> None:
    """The YAML parses as LightningCLI would parse it and names the files of the fake layout."""
    images, train, evaluation = LAYOUTS[name]
    expect = {
        "image_dir": images,
        "train_file": train,
        "val_file": evaluation,
        "test_file": evaluation,
    }
    dm = fake_datamodule(f"{name}.yaml", name, expect, image_size=SIZE)
    assert isinstance(dm, ConversationDataModule)
    dm.setup("fit")
    assert len(dm.train_dataset) > 0 and len(dm.val_dataset) > 0


def test_normalize_record_variants() -> None:
    vrsbench = {
        "image_id": "a.png",
        "question": "Is it?",
        "ground_truth": "Yes",
        "question_id": 4,
        "type": "object existence",
        "dataset": "RSBench",
    }
    record = normalize_record(vrsbench)
    assert record["conversations"] == [
        {"from": "human", "value": "<image>\nIs it?"},
        {"from": "gpt", "value": "Yes"},
    ]
    assert (record["image"], record["id"], record["task"]) == ("a.png", 4, "vqa")
    assert record["question_types"] == ["object existence"]
    assert normalize_record(vrsbench | {"type": "ref"})["task"] == "referring"
    assert vrsbench == {
        "image_id": "a.png",
        "question": "Is it?",
        "ground_truth": "Yes",
        "question_id": 4,
        "type": "object existence",
        "dataset": "RSBench",
    }
    given = normalize_record(
        {
            "image": "b",
            "task": "scene",
            "conversations": [
                {"from": "USER", "value": "[vqa] x <image>"},
                {"from": "Assistant", "value": "y"},
            ],
        }
    )
    assert given["task"] == "scene"  # a given task wins over the tag
    assert [t["from"] for t in given["conversations"]] == ["user", "assistant"]
    number = normalize_record(
        {
            "image": "c",
            "conversations": [
                {"from": "human", "value": "<image>\nhow many?"},
                {"from": "gpt", "value": 3},
            ],
        }
    )
    assert number["conversations"][1]["value"] == "3"


def test_turn_without_value_is_named(tmp_path: Path) -> None:
    record = {
        "id": "r1",
        "image": "x.png",
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt"}],
    }
    with pytest.raises(
        ValueError,
        match=r"src, record 0 \(id 'r1'\): each turn needs a 'from' and a string 'value'",
    ):
        ConversationDataset.from_records(tmp_path, [record], source="src")


def test_collate_references_default_to_the_reference() -> None:
    tokenizer = word_level_tokenizer(["what", "is", "it", "a", "b", "c"])
    turns = [{"from": "human", "value": "<image>\nwhat is it"}, {"from": "gpt", "value": "a"}]
    samples = [
        {
            "image": torch.zeros(3, 2, 2),
            "id": "0",
            "conversations": turns,
            "task": "caption",
            "question_type": "",
            "references": ["a", "b", "c"],
        },
        {
            "image": torch.zeros(3, 2, 2),
            "id": "1",
            "conversations": turns,
            "task": "caption",
            "question_type": "",
        },
    ]
    batch = ConversationCollate(tokenizer)(samples)
    assert batch["reference"] == ["a", "a"]
    assert batch["references"] == [["a", "b", "c"], ["a"]]


def test_two_image_placeholders_are_named(tmp_path: Path) -> None:
    def second_placeholder(records: list) -> None:
        records[2]["conversations"][1]["value"] += " <image>"

    root = edited_fake(tmp_path, "geochat", "GeoChat_Instruct.json", second_placeholder)
    with pytest.raises(
        ValueError,
        match=r"GeoChat_Instruct.json, record 2 \(id '00451'\): expected exactly one <image>",
    ):
        read_conversations(root / "GeoChat_Instruct.json")


def test_evaluation_record_without_answer(tmp_path: Path) -> None:
    root = edited_fake(
        tmp_path,
        "vrsbench",
        "VRSBench_EVAL_vqa.json",
        lambda records: records[1].pop("ground_truth"),
    )
    with pytest.raises(
        ValueError,
        match=r"VRSBench_EVAL_vqa.json, record 1 \(id 1\): needs a 'conversations' list.*found the keys",
    ):
        read_conversations(root / "VRSBench_EVAL_vqa.json")


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    root = copy_fake(tmp_path, "fit_rs")
    path = root / "FIT-RSFG" / "FIT-RSFG-Bench" / "test_FITRS_vqa_eval.jsonl"
    path.write_text(path.read_text() + '{"question_id": 9, "image": \n')
    with pytest.raises(ValueError, match=r"test_FITRS_vqa_eval.jsonl, line 4: not valid JSON"):
        read_conversations(path)


def test_missing_image_without_extension_is_named(tmp_path: Path) -> None:
    root = copy_fake(tmp_path, "geochat")
    (root / "final_images_llava" / "P0002_0003.jpg").unlink()
    dataset = ConversationDataset(root / "final_images_llava", "../GeoChat_Instruct.json", SIZE)
    with pytest.raises(
        FileNotFoundError,
        match=r"P0002_0003 is missing \(record 'P0002_0003'.*also with the extensions",
    ):
        dataset[1]


def test_empty_references_are_rejected(tmp_path: Path) -> None:
    record = {
        "image": "x.png",
        "references": [],
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
    }
    with pytest.raises(ValueError, match=r"my captions, record 0 .*'references' must be"):
        ConversationDataset.from_records(tmp_path, [record], source="my captions")


def test_missing_root_is_named(tmp_path: Path) -> None:
    dm = ConversationDataModule(
        str(tmp_path / "nowhere" / "final_images_llava"),
        "../GeoChat_Instruct.json",
        "../GeoChat_Instruct.json",
        "../GeoChat_Instruct.json",
    )
    with pytest.raises(
        FileNotFoundError,
        match=r"nowhere/final_images_llava/../GeoChat_Instruct.json does not exist",
    ):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match=r"dataset root .*nowhere does not exist"):
        ConversationDataset(tmp_path / "nowhere", "GeoChat_Instruct.json")


def test_pad_to_square_centres_the_image_on_the_mean_colour():
    from zoo.data.conversations import pad_to_square

    image = torch.arange(2 * 2 * 4, dtype=torch.float32).view(2, 2, 4) + 1
    padded = pad_to_square(image, [10.0, 20.0])
    assert padded.shape == (2, 4, 4)
    assert torch.equal(padded[:, 1:3], image)  # (4 - 2) // 2 = 1 row above, 1 below
    assert torch.all(padded[0, [0, 3]] == 10.0) and torch.all(padded[1, [0, 3]] == 20.0)
    assert pad_to_square(padded, [0.0, 0.0]) is padded  # square already
