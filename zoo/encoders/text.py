"""Text encoders by Hugging Face id or local folder, or a small random BERT by default.

The tokenizer belongs to the data (docs/architecture.md: datamodules tokenize); the text encoder is sized
from it, so ``TextEncoder("tiny", vocab_size=len(tokenizer))`` always agrees with the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

from zoo.encoders.packaged import packaged_weights
from zoo.encoders.sources import (
    build_hf_model,
    building_architecture_only,
    hf_source,
    mark_source,
    stored_source,
)

__all__ = ["TextEncoder", "TextSpec", "TINY_TEXT_ENCODERS"]

#: Small random BERT configurations usable offline by name.
TINY_TEXT_ENCODERS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
    "mini": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
}


@dataclass
class TextSpec:
    """Which text encoder a family builds (``text:`` in a config).

    Args:
        name: ``tiny``/``mini`` (random BERT sized by the tokenizer), ``minilm`` (packaged), a
            Hugging Face id or a local folder in Hugging Face layout.
        pretrained: load the named model's weights (else its config with random weights).
    """

    name: str = "tiny"
    pretrained: bool = True


class TextEncoder(nn.Module):
    """A bidirectional text encoder returning one hidden state per token.

    Args:
        name: ``tiny``/``mini`` (random BERT sized by ``vocab_size``), ``minilm`` (the packaged
            all-MiniLM-L6-v2), a Hugging Face model id
            or a local folder in Hugging Face layout (e.g. ``bert-base-uncased``).
        vocab_size: vocabulary size of the tokenizer; required for the random encoders and
            checked against a pretrained model's embedding table.
        max_length: the longest token sequence (position embeddings of random encoders).
        pretrained: load the weights of a named model (else its config with random weights).
    """

    def __init__(
        self,
        name: str = "tiny",
        vocab_size: int | None = None,
        max_length: int = 64,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if name in TINY_TEXT_ENCODERS:
            if vocab_size is None:
                raise ValueError(f"text encoder {name!r} needs vocab_size (the tokenizer's length)")
            size = TINY_TEXT_ENCODERS[name]
            config = BertConfig(
                vocab_size=vocab_size,
                intermediate_size=4 * size["hidden_size"],
                max_position_embeddings=max(max_length, 16),
                attn_implementation="sdpa",
                **size,
            )
            self.model = BertModel(config, add_pooling_layer=False)
        else:
            if building_architecture_only():  # the checkpoint holds every weight
                entry = stored_source(name, read=lambda: _read_config(name))
                self.model = build_hf_model(AutoModel, entry)
            else:
                packaged = packaged_weights(name)
                self.model = _load_pretrained(packaged[0] if packaged else name, pretrained)
                entry = hf_source(self.model)
            mark_source(self.model, name, entry)
            table = self.model.get_input_embeddings().num_embeddings
            if vocab_size is not None and vocab_size > table:
                raise ValueError(
                    f"the tokenizer has {vocab_size} tokens but text encoder {name!r} embeds only "
                    f"{table}: set the datamodule's tokenizer to {name!r} too"
                )
        self.width: int = self.model.config.hidden_size

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The input embedding table."""
        return self.model.get_input_embeddings()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Encode token ids.

        Args:
            input_ids: ``B×T`` token ids.
            attention_mask: ``B×T`` (1 for a token, 0 for padding) or a 4-D additive mask.

        Returns:
            ``B×T×D`` hidden states (index 0 is the [CLS] token).
        """
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _load_pretrained(name: str, pretrained: bool) -> nn.Module:
    is_path = Path(name).expanduser().exists()
    try:
        if pretrained:
            return AutoModel.from_pretrained(name, attn_implementation="sdpa")
        return AutoModel.from_config(AutoConfig.from_pretrained(name))
    except OSError as error:
        hint = (
            f"the folder {name} does not hold a Hugging Face model (config.json + weights)"
            if is_path
            else "this machine may be offline: download it elsewhere and give its local folder, "
            "or use text: {name: tiny}"
        )
        raise RuntimeError(f"could not load text encoder {name!r}: {hint}") from error


def _read_config(name: str) -> dict:
    """A named text encoder's configuration, read from its files (no weights): for a
    checkpoint that did not store it."""
    packaged = packaged_weights(name)
    return {"config": AutoConfig.from_pretrained(packaged[0] if packaged else name).to_dict()}
