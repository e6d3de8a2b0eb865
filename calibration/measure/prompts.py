"""Synthetic prompts that mean what the workload says: unique unless it declares sharing.

Every prompt is drawn from its own random stream, keyed by the seed, the *run* and the request
id, so no two requests share a prefix by accident, and no run finds the previous run's prompts
in a server's prefix cache (a server that caches prefixes, as vLLM V1 does by default, would
otherwise serve a repeated benchmark from its cache). The run key is drawn afresh for every run
unless given, and recorded, so a run can be repeated exactly.

The only shared tokens are those the workload declares: a request that names its prompt blocks
by hash ids (trace requests, `Request.block_hashes`, each id covering `hash_block_tokens`
tokens) gets, for each named block, tokens drawn from that id (and the run) alone, so requests
naming the same blocks share exactly those blocks and nothing after them.

Prompts are token ids when the server takes them, otherwise text of as many common English words
(each one token in common BPE vocabularies), the word standing for the id it replaces.
"""

from __future__ import annotations

import secrets

import numpy as np

from simulator.workload import Request

# Token ids for synthetic prompts: above the special and byte tokens of common vocabularies and
# below the vocabulary size of the smallest model in the catalog (8192).
PROMPT_TOKEN_RANGE = (1000, 8000)
# Frequent English words, each a single token in common BPE vocabularies, for text prompts.
_WORD_LIST = (
    "the of and to in is was for that with as on by at from his her are be this which or an had "
    "not but what all were when we there can more if no man out other so time up into only new "
    "some could these two may first then do any like my now over such our made after also did "
    "many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three"
)
WORDS = _WORD_LIST.split()


def new_run_key() -> int:
    """A fresh run key: prompts of this run share nothing with any other run's."""
    return secrets.randbelow(2**31)


def prompt_ids(request: Request, seed: int, run: int = 0, hash_block_tokens: int | None = None) -> np.ndarray:
    """`request.prompt_tokens` token ids: the request's own, except the blocks it names by hash id."""
    tokens = np.random.default_rng([seed, run, request.request_id]).integers(
        *PROMPT_TOKEN_RANGE, size=request.prompt_tokens
    )
    if request.block_hashes and hash_block_tokens:
        for k, block_id in enumerate(request.block_hashes):
            start = k * hash_block_tokens
            if start >= tokens.size:
                break
            end = min(start + hash_block_tokens, tokens.size)
            named = np.random.default_rng([seed, run, 1, block_id]).integers(*PROMPT_TOKEN_RANGE, size=hash_block_tokens)
            tokens[start:end] = named[: end - start]
    return tokens


def token_prompt(request: Request, seed: int, run: int = 0, hash_block_tokens: int | None = None) -> list[int]:
    """The prompt as a list of token ids."""
    return prompt_ids(request, seed, run, hash_block_tokens).tolist()


def text_prompt(request: Request, seed: int, run: int = 0, hash_block_tokens: int | None = None) -> str:
    """The prompt as text: one common word per token id (about `prompt_tokens` tokens)."""
    ids = prompt_ids(request, seed, run, hash_block_tokens)
    return " ".join(WORDS[i] for i in (ids - PROMPT_TOKEN_RANGE[0]) % len(WORDS))
