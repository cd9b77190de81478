"""Scene classification by generation: the prompt lists the classes, answers are normalized."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from zoo.data.tokenize import word_level_tokenizer
from zoo.evaluation import Context, SceneClassificationByGeneration
from zoo.evaluation.generative import class_answer

CLASSES = ["dense_residential", "forest", "river"]


class _Scenes(Dataset):
    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.full((3, 4, 4), float(self.labels[i])), "label": self.labels[i]}


class _SceneData:
    """The parts of a scene datamodule the protocol reads."""

    class_names = CLASSES
    batch_size = 2
    num_workers = 0

    def __init__(self, labels: list[int]) -> None:
        self.test_dataset = _Scenes(labels)

    def setup(self, stage: str) -> None:
        pass

    def on_after_batch_transfer(self, batch: dict, index: int) -> dict:
        return batch


class _Generator:
    """Answers from the image's value; records the prompts it was given."""

    metrics = None

    def __init__(self, answers: dict[int, str]) -> None:
        self.tokenizer = word_level_tokenizer(["classify", "the", "image", *CLASSES])
        self.answers = answers
        self.prompts: list[torch.Tensor] = []

    def generate(self, image, prompt_ids, prompt_attention_mask) -> list[str]:
        self.prompts.append(prompt_ids)
        return [self.answers[int(x[0, 0, 0])] for x in image]

    def generation_metrics(self, question_types):
        return None


def test_answers_are_normalized_and_counted_per_class(tmp_path: Path) -> None:
    labels = [0, 0, 1, 2, 2]
    model = _Generator({0: "Dense residential.", 1: "a forest", 2: "River"})
    protocol = SceneClassificationByGeneration(_SceneData(labels), name="toy")  # type: ignore[arg-type]
    result = protocol.run(Context(model, torch.device("cpu"), output=tmp_path))  # type: ignore[arg-type]
    # "a forest" normalizes to "forest" (articles dropped); all five are right.
    assert class_answer("a forest") == class_answer("forest")
    assert result == {"generation_acc": 1.0, "generation_mean_per_class": 1.0}
    # One prompt, the same for every image, holding <image> once.
    image_id = model.tokenizer.convert_tokens_to_ids("<image>")
    assert all(int((p == image_id).sum(1).min()) == 1 for p in model.prompts)
    wrong = _Generator({0: "residential", 1: "forest", 2: "lake"})
    result = protocol.run(Context(wrong, torch.device("cpu"), output=tmp_path))  # type: ignore[arg-type]
    assert result["generation_acc"] == pytest.approx(1 / 5)
    assert result["generation_mean_per_class"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="classes"):
        SceneClassificationByGeneration(_SceneData(labels), question="Which class?")  # type: ignore[arg-type]
