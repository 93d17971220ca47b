"""The candidate lists of Chapter 12: graded relevance that may depend on the rest of the list.

Each list answers one query with ``n`` candidates. A candidate's features are ``FEATURES``
numbers: a one-hot *topic* among ``TOPICS``, a *quality* in [0, 1), and ``NOISE`` features of
pure noise. Every list is generated from a seeded :class:`torch.Generator`, so a split is a seed
and nothing is downloaded or stored.

* ``context=True`` (the contextual task): the query asks for the list's *dominant* topic, the one
  that about half of its candidates share, and which topic that is changes from list to list. A
  candidate's relevance is ``on_topic + (quality > 0.5)`` (0, 1 or 2), so the same features are
  relevant in one list and irrelevant in another: a scorer that sees one candidate at a time cannot
  know, while one that sees the whole list can count the topics.
* ``context=False`` (the control): the query always asks for topic 0, so a candidate's features
  alone fix its relevance, and a per-candidate scorer can be perfect.

The lists come in the order of a *prior ranking*, the output of an earlier ranking stage that saw
a hidden signal the features do not hold. ``hidden`` is how much that signal moves relevance:
with ``hidden=0`` the prior order is random and carries nothing; with ``hidden > 0`` relevance is
``on_topic + (quality + hidden * h > 0.5)`` for a hidden ``h`` and the list is sorted by ``h``
plus a little noise, so the position in the list is information (what PRM's position embedding
feeds back to the re-ranker).

    >>> from autograder.data import ranking
    >>> x, rel = ranking.generate(4, 10, seed=0)          # (4, 10, 8) features, (4, 10) grades
"""

from __future__ import annotations

import torch

TOPICS = 4
NOISE = 3
FEATURES = TOPICS + 1 + NOISE  # one-hot topic, quality, noise


def generate(n_lists: int, n: int = 10, seed: int = 0, context: bool = True,
             hidden: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_lists`` lists of ``n`` candidates: features ``(n_lists, n, FEATURES)`` float32 and
    relevance grades ``(n_lists, n)`` float32 in {0, 1, 2}, each list in its prior order."""
    g = torch.Generator().manual_seed(seed)
    if context:
        dominant = torch.randint(0, TOPICS, (n_lists, 1), generator=g)
    else:
        dominant = torch.zeros(n_lists, 1, dtype=torch.long)
    others = (dominant + torch.randint(1, TOPICS, (n_lists, n), generator=g)) % TOPICS
    on = torch.rand(n_lists, n, generator=g) < 0.5
    topic = torch.where(on, dominant, others)
    quality = torch.rand(n_lists, n, generator=g)
    noise = torch.randn(n_lists, n, NOISE, generator=g)
    h = torch.randn(n_lists, n, generator=g)
    x = torch.cat([torch.nn.functional.one_hot(topic, TOPICS).float(), quality[..., None], noise], -1)
    relevance = (topic == dominant).float() + (quality + hidden * h > 0.5).float()
    prior = h + 0.3 * torch.randn(n_lists, n, generator=g) if hidden > 0 else torch.rand(n_lists, n, generator=g)
    order = prior.argsort(-1, descending=True)
    return x.gather(1, order[..., None].expand_as(x)), relevance.gather(1, order)


def pad(x: torch.Tensor, relevance: torch.Tensor, lengths: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut list ``i`` to its first ``lengths[i]`` candidates: the features and relevance with
    zeros in the cut positions, and the ``(n_lists, n)`` bool mask, True at real candidates."""
    mask = torch.arange(x.shape[1]) < lengths[:, None]
    return x * mask[..., None], relevance * mask, mask
