"""Multi-caption image-text retrieval against a plain loop and a hand-made case."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.evaluation import caption_retrieval, caption_retrieval_ranks


def _loop_recalls(images, texts, text_to_image, ks) -> dict[str, float]:
    """The protocol written out one query at a time."""
    sim = F.normalize(images, dim=1) @ F.normalize(texts, dim=1).T  # N×M
    out = {}
    for k in ks:
        hits = 0
        for i in range(len(images)):
            top = sim[i].argsort(descending=True)[:k].tolist()
            hits += any(text_to_image[j] == i for j in top)
        out[f"image_to_text_R@{k}"] = hits / len(images)
    for k in ks:
        hits = 0
        for j in range(len(texts)):
            top = sim[:, j].argsort(descending=True)[:k].tolist()
            hits += int(text_to_image[j]) in top
        out[f"text_to_image_R@{k}"] = hits / len(texts)
    out["mean_recall"] = sum(out.values()) / len(out)
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_matches_a_plain_loop_on_random_embeddings(chunk_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    n, per_image, d = 23, 5, 16
    images = torch.randn(n, d, generator=g)
    shuffle = torch.randperm(n * per_image, generator=g)
    text_to_image = torch.arange(n).repeat_interleave(per_image)[shuffle]
    texts = images[text_to_image] + 1.5 * torch.randn(n * per_image, d, generator=g)
    ks = (1, 5, 10)
    out = caption_retrieval(images, texts, text_to_image, ks=ks, chunk_size=chunk_size)
    expected = _loop_recalls(images, texts, text_to_image, ks)
    assert out.keys() == expected.keys()
    for key, value in expected.items():
        assert out[key] == pytest.approx(value), key
    assert 0.0 < out["image_to_text_R@1"] < 1.0  # a non-trivial case


def test_hand_made_case() -> None:
    """Two images on the axes, two captions each.

    Image 0 = (1, 0): captions by similarity t2 (0.99, image 1's), t0 (0.9), t3, t1 -> its best own
    caption ranks 2. Image 1 = (0, 1): t3 (own) ranks 1. Captions: t0, t1 rank their image first,
    t2 (near image 0 but image 1's) ranks its image 2nd, t3 1st.
    """
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.9, 0.1], [0.2, -1.0], [0.99, 0.01], [0.1, 0.9]])
    owner = torch.tensor([0, 0, 1, 1])
    image_ranks, text_ranks = caption_retrieval_ranks(images, texts, owner)
    assert image_ranks.tolist() == [2, 1]
    # t1 = (0.2, -1): cos 0.196 with image 0, -0.98 with image 1 -> image 0 first -> rank 1
    assert text_ranks.tolist() == [1, 1, 2, 1]
    out = caption_retrieval(images, texts, owner, ks=(1, 2))
    assert out == {
        "image_to_text_R@1": 0.5,
        "image_to_text_R@2": 1.0,
        "text_to_image_R@1": 0.75,
        "text_to_image_R@2": 1.0,
        "mean_recall": pytest.approx(3.25 / 4),
    }


def test_errors_name_the_field() -> None:
    images, texts = torch.randn(3, 4), torch.randn(6, 4)
    with pytest.raises(ValueError, match="images without: \\[2\\]"):
        caption_retrieval(images, texts, torch.tensor([0, 0, 1, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"text_to_image must lie in \[0, 3\)"):
        caption_retrieval(images, texts, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match=r"text_to_image must be an integer tensor of shape \[6\]"):
        caption_retrieval(images, texts, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="differ in width"):
        caption_retrieval(images, torch.randn(6, 5), torch.tensor([0, 0, 1, 1, 2, 2]))
