"""A no-cache reference decoder for the generators' decoding tests.

Every step re-runs the whole model (vision, splice, injection hooks, LLM) on the prompt plus the
tokens so far, for every row, with no KV cache and no expansion inside the model: each beam's
row gets its sample's image explicitly. It follows the rules of Hugging Face's ``generate``
(greedy, multinomial sampling with the same logits warpers, beam search and beam sampling with
``2·num_beams`` candidates, length-normalized finished beams and the ``early_stopping=False``
stop), written as plain loops, so a test can compare the zoo's cached decoding with it token
for token. Sampling draws from the global generator in the same order and shapes as
``generate``, so a seeded run draws the same tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from zoo.models import GenerationConfig, VisionLanguageGenerator


def warpers(g: GenerationConfig) -> LogitsProcessorList:
    """The logits warpers ``generate`` applies when sampling, in its order."""
    out = LogitsProcessorList()
    if not g.do_sample:
        return out
    if g.temperature != 1.0:
        out.append(TemperatureLogitsWarper(g.temperature))
    if g.top_k:
        out.append(TopKLogitsWarper(g.top_k))
    if g.top_p < 1.0:
        out.append(TopPLogitsWarper(g.top_p))
    return out


def _next_logits(
    model: VisionLanguageGenerator, image: Tensor, ids: Tensor, mask: Tensor, generated: Tensor
) -> Tensor:
    """Last-position logits of the full, uncached forward over prompt + generated tokens."""
    ids = torch.cat([ids, generated], 1)
    mask = torch.cat([mask, torch.ones_like(generated)], 1)
    return model(image, ids, mask).logits[:, -1].float()


def trim(sequence: list[int], eos: int) -> list[int]:
    """A generated sequence up to and including its first EOS (what follows is padding)."""
    return sequence[: sequence.index(eos) + 1] if eos in sequence else sequence


@torch.no_grad()
def reference_decode(
    model: VisionLanguageGenerator, image: Tensor, prompt_ids: Tensor, prompt_mask: Tensor
) -> list[list[list[int]]]:
    """Per prompt, its ``num_return_sequences`` answers (token ids, trimmed at EOS), best first."""
    g = model.generation
    if g.num_beams > 1:
        return _beam_search(model, image, prompt_ids, prompt_mask, g)
    eos, pad = model.tokenizer.eos_token_id, model.tokenizer.pad_token_id
    r = g.num_return_sequences
    image, ids, mask = (x.repeat_interleave(r, 0) for x in (image, prompt_ids, prompt_mask))
    process = warpers(g)
    generated = ids.new_zeros(len(ids), 0)
    done = torch.zeros(len(ids), dtype=torch.bool)
    for _ in range(g.max_new_tokens):
        scores = process(generated, _next_logits(model, image, ids, mask, generated))
        if g.do_sample:
            token = torch.multinomial(scores.softmax(-1), 1)[:, 0]
        else:
            token = scores.argmax(-1)
        token = torch.where(done, torch.full_like(token, pad), token)
        generated = torch.cat([generated, token[:, None]], 1)
        done |= token == eos
        if done.all():
            break
    rows = [trim(s, eos) for s in generated.tolist()]
    return [rows[i : i + r] for i in range(0, len(rows), r)]


def _beam_search(
    model: VisionLanguageGenerator,
    image: Tensor,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    g: GenerationConfig,
) -> list[list[list[int]]]:
    eos = model.tokenizer.eos_token_id
    b, nb, keep = len(prompt_ids), g.num_beams, 2 * g.num_beams
    image, ids, mask = (x.repeat_interleave(nb, 0) for x in (image, prompt_ids, prompt_mask))
    process = warpers(g)
    running = [[[] for _ in range(nb)] for _ in range(b)]  # token lists per sample and beam
    scores = torch.zeros(b, nb)
    scores[:, 1:] = -1e9  # only the first beam is live at the start: no duplicate beams
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    open_ = [True] * b
    for step in range(g.max_new_tokens):
        generated = torch.tensor([seq for beams in running for seq in beams], dtype=torch.long)
        generated = generated.view(b * nb, step)
        logp = _next_logits(model, image, ids, mask, generated).log_softmax(-1)
        logp = process(generated, logp)
        vocab = logp.shape[-1]
        total = (logp.view(b, nb, vocab) + scores[..., None]).view(b, nb * vocab)
        if g.do_sample:  # beam sampling: without replacement, then best first
            index = torch.multinomial(total.softmax(-1), keep)
            top, order = total.gather(1, index).sort(-1, descending=True)
            index = index.gather(1, order)
        else:
            top, index = total.topk(keep)
        last = step == g.max_new_tokens - 1
        new_running, new_scores = [], torch.empty(b, nb)
        for i in range(b):
            candidates = [
                (
                    float(top[i, k]),
                    running[i][int(index[i, k]) // vocab] + [int(index[i, k]) % vocab],
                )
                for k in range(keep)
            ]
            if open_[i]:  # only the best num_beams candidates may finish
                for score, seq in candidates[:nb]:
                    if seq[-1] == eos or last:
                        finished[i].append((score / (step + 1) ** g.length_penalty, seq))
                finished[i] = sorted(finished[i], key=lambda f: -f[0])[:nb]
            alive = [c for c in candidates if c[1][-1] != eos][:nb]
            new_running.append([seq for _, seq in alive])
            new_scores[i] = torch.tensor([score for score, _ in alive])
        running, scores = new_running, new_scores
        for i in range(b):  # early_stopping=False: stop once no running beam can do better
            if open_[i] and len(finished[i]) == nb:
                best_running = float(scores[i, 0]) / (step + 1) ** g.length_penalty
                open_[i] = best_running > finished[i][-1][0]
        if not any(open_):
            break
    return [[seq for _, seq in f[: g.num_return_sequences]] for f in finished]


def decoded(
    model: VisionLanguageGenerator, image: Tensor, prompt_ids: Tensor, prompt_mask: Tensor
) -> list[list[list[int]]]:
    """The model's own cached decoding in the same form as :func:`reference_decode`."""
    eos, r = model.tokenizer.eos_token_id, model.generation.num_return_sequences
    rows = [trim(s, eos) for s in model.generate_ids(image, prompt_ids, prompt_mask).tolist()]
    return [rows[i : i + r] for i in range(0, len(rows), r)]
