"""The hallucination protocol: each caption and probe answer is scored against its own image's
instances, read from a COCO file (cells from masks or boxes); end to end through ``zoo evaluate``
on a tiny trained Aquila."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from tests.overrides import two_step_trainer
from zoo.data.coco_instances import CocoInstancesDataModule
from zoo.evaluation import Context, Hallucination

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = ["ship", "storagetank", "vehicle", "bridge", "harbor"]  # DIOR's spellings
#: Per image: (category, box x, y, w, h); image k is filled with the value 10 * (k + 1).
OBJECTS = [
    [("ship", 2, 2, 4, 4), ("ship", 50, 2, 4, 4), ("storagetank", 28, 28, 8, 8)],
    [("vehicle", 50, 50, 6, 6)],
    [("bridge", 0, 28, 64, 6), ("harbor", 2, 50, 10, 10)],
]
SIZE = 64


def _write_coco(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for k, objects in enumerate(OBJECTS):
        name = f"images/{k}.png"
        Image.fromarray(np.full((SIZE, SIZE, 3), 10 * (k + 1), np.uint8)).save(root / name)
        images.append({"id": k + 1, "file_name": name, "width": SIZE, "height": SIZE})
        for category, x, y, w, h in objects:
            ann = {
                "id": len(annotations) + 1,
                "image_id": k + 1,
                "category_id": CATEGORIES.index(category) + 1,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if category == "harbor":  # a mask whose centroid is in another cell than its box's
                mask = np.zeros((SIZE, SIZE), np.uint8)
                mask[50:60, 2:12] = 1
                mask[62:64, 2:60] = 1
                rle = mask_utils.encode(np.asfortranarray(mask))
                ann["segmentation"] = {"size": [SIZE, SIZE], "counts": rle["counts"].decode()}
                ann["bbox"] = [2, 50, 58, 14]
            annotations.append(ann)
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(CATEGORIES)]
    path = root / "instances_test.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


#: What a faithful model says of each image (DIOR's class names).
CAPTIONS = {
    0: "two ships in the top left and a storage tank in the center",
    1: "a car at the bottom right",
    2: "a bridge and a harbour at the bottom",
}
PRESENT = [{"ship", "storage tank"}, {"vehicle"}, {"bridge", "harbor"}]


class _Generator:
    """Answers from the image's fill value: its own caption, and yes only for its classes."""

    metrics = None

    def __init__(self, faithful: bool = True) -> None:
        self.faithful = faithful
        self.questions: list[str] = []

    def generate(self, image, prompt_ids, prompt_attention_mask):  # the Generation capability
        raise AssertionError("the protocol asks through answer()")

    def generation_metrics(self, question_types):
        return None

    def answer(self, images, questions, max_new_tokens=None) -> list[str]:
        out = []
        for image, question in zip(images, questions, strict=True):
            self.questions.append(question)
            k = round(float(image[0, 0, 0]) * 255 / 10) - 1
            if not self.faithful:
                out.append("yes, a ship" if "Is there" in question else "a ship and a dam")
            elif question.startswith("Describe"):
                out.append(CAPTIONS[k])
            else:
                name = re.search(r"Is there an? (.+) in the image\?", question).group(1)
                out.append("Yes." if name in PRESENT[k] else "No, there is not.")
        return out


def _protocol(root: Path) -> Hallucination:
    data = CocoInstancesDataModule(
        str(root), image_size=SIZE, batch_size=2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
    )
    return Hallucination(data, vocabulary="dior", pope_per_image=2, name="toy")


def test_instances_carry_categories_and_cells_from_boxes_and_masks(tmp_path: Path) -> None:
    _write_coco(tmp_path)
    dm = CocoInstancesDataModule(str(tmp_path), image_size=32, batch_size=2)
    dm.setup("test")
    sample = dm.test_dataset[2]
    assert sample["image"].shape == (3, 32, 32) and sample["path"] == "images/2.png"
    # The bridge's box centre is the image centre; the harbour's mask centroid
    # (x 19.9, y 59.3) is bottom left while its box centre (x 31, y 57) is bottom.
    assert sample["instances"] == [
        {"category": "bridge", "colour": None, "cell": "center"},
        {"category": "harbor", "colour": None, "cell": "bottom left"},
    ]
    assert [o["cell"] for o in dm.test_dataset[0]["instances"]] == [
        "top left",
        "top right",
        "center",
    ]


def test_faithful_answers_score_perfectly_against_their_own_images(tmp_path: Path) -> None:
    _write_coco(tmp_path)
    model = _Generator()
    result = _protocol(tmp_path).run(Context(model, torch.device("cpu"), output=tmp_path))  # type: ignore[arg-type]
    # Every mention is right and every present class is named; "harbour at the bottom" is
    # wrong: the harbour's mask lies bottom left (1 of 4 position claims).
    assert result["chair_i"] == 0 and result["chair_s"] == 0 and result["coverage"] == 1
    assert result["count_error"] == 0 and result["position_error"] == pytest.approx(1 / 4)
    assert np.isnan(result["colour_error"])  # DIOR has no colours
    for mode in ("random", "popular", "adversarial"):
        assert result[f"pope_{mode}_accuracy"] == 1 and result[f"pope_{mode}_f1"] == 1
        assert result[f"pope_{mode}_yes_ratio"] == 0.5
    # 3 captions, then POPE's questions in DIOR's class names, each (image, class) asked once.
    assert sum(q.startswith("Describe") for q in model.questions) == 3
    probes = [q for q in model.questions if not q.startswith("Describe")]
    assert "Is there a storage tank in the image?\nAnswer" in " ".join(probes)


def test_a_model_that_always_sees_a_ship_is_caught(tmp_path: Path) -> None:
    _write_coco(tmp_path)
    result = _protocol(tmp_path).run(
        Context(_Generator(faithful=False), torch.device("cpu"), output=tmp_path)  # type: ignore[arg-type]
    )
    # "a ship and a dam" mentions {ship, dam} in each caption: dam never there, ship only in
    # image 0: 5 of 6 mentions absent, every caption hallucinates, 1 of 5 present classes named.
    assert result["chair_i"] == pytest.approx(5 / 6) and result["chair_s"] == 1
    assert result["coverage"] == pytest.approx(1 / 5)
    assert result["pope_random_yes_ratio"] == 1 and result["pope_random_accuracy"] == 0.5
    assert result["pope_random_precision"] == 0.5 and result["pope_random_recall"] == 1


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    dm = CocoInstancesDataModule(str(tmp_path))
    with pytest.raises(ValueError, match="pope_modes"):
        Hallucination(dm, pope_modes=["hard"])
    with pytest.raises(ValueError, match="name"):
        Hallucination(dm, probe_question="Is it there?")
    with pytest.raises(FileNotFoundError, match="built-in table"):
        Hallucination(dm, vocabulary="no_such_table")


@pytest.mark.slow
def test_zoo_evaluate_prints_chair_and_pope_for_a_tiny_trained_aquila(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import wandb

    from zoo.main import main

    monkeypatch.setattr(sys, "argv", ["zoo"])
    monkeypatch.chdir(tmp_path)
    splits = {"train": 16, "val": 4, "test": 4}
    override = tmp_path / "override.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": two_step_trainer("runs"),
                "data": {"init_args": {"root": "data", "batch_size": 4, "splits": splits}},
                "model": {"init_args": {"generation": {"max_new_tokens": 8}}},
            }
        )
    )
    config = str(ROOT / "configs" / "aquila.yaml")
    main(["fit", "--config", config, "--config", str(override)])
    wandb.finish()
    (last,) = Path("runs").rglob("last.ckpt")
    evals = tmp_path / "hallucination.yaml"
    spec = yaml.safe_load((ROOT / "configs/eval/embedded_hallucination.yaml").read_text())
    spec["init_args"]["data"]["init_args"].update(root="data", splits=splits, batch_size=2)
    evals.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    main(["evaluate", "--config", config, "--config", str(override), "--ckpt_path", str(last),
          "--evals", str(evals), "--output", "out"])  # fmt: skip
    printed = capsys.readouterr().out
    for metric in ("chair_i", "chair_s", "coverage", "pope_random_accuracy", "pope_adversarial_f1",
                   "pope_popular_yes_ratio"):  # fmt: skip
        assert f"| {metric} |" in printed
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    ours = {r["metric"]: r["ours"] for r in rows}
    assert 0 <= ours["pope_random_yes_ratio"] <= 100
