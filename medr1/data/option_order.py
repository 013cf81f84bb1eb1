"""Option order: permuting a question's options so that a fixed letter can neither earn reward nor score.

A policy trained by GRPO on multiple-choice answers is paid whenever its letter matches the gold letter.
If gold letters are unevenly spread over positions (AfriMed-QA's training split: 32 % "B", 9 % "D"), or
if the model already prefers one letter (SmolLM2-135M answers "A" to two thirds of MedQA), the cheapest
way up the reward is to say that letter more often. The first demo did exactly that: its trained
adapter answered "A" to every question of every benchmark. Two defences live here:

- Training (`training_draws`): every time a question is drawn for a GRPO step its options are permuted,
  with gold positions *balanced* over each pass through the pool (per option count), so that no letter
  is right more often than another. The permutation is a pure function of (seed, pass, pool order), so a
  resumed run sees the same draws. All `num_generations` completions of a draw share one prompt, hence
  one permutation: the group compares like with like.
- Evaluation (`cyclic_shift`): a question asked K times with its options rotated by 0..K-1 positions.
  A model that answers by letter gets 1/K of them right and none consistently; one that answers by
  content gets the same verdict under every rotation (`medr1.task.letter_bias` scores that).

Options that point at other options or positions ("Both A and B", "All of the above", "None of these")
make sense only in their printed order; such questions keep it, in training and in evaluation, and are
counted (`refers_to_other_options`). Texts like "1, 2 and 3" refer to numbered statements in the stem,
not to options, and are shuffled.

No torch here; `medr1.data` types only.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from medr1.data.schema import LETTERS, Question

# "All of the above", "none of these", "both of the above", "all the options", "neither"...
_POSITIONAL = re.compile(
    r"\b(?:all|none|both|neither|either|any)\b(?:\s+(?:of|the|these|those|above|below|options?|choices?|answers?|"
    r"statements?\s+above))*\s+(?:above|below|these|those|options?|choices?|answers?)\b|"
    r"^\s*(?:all|none|both|neither)\s*[.!]?\s*$",
    re.IGNORECASE,
)
# "A and B", "A, B & C", "A or D", "only A", "both B and C", "(a) and (c)": option letters named in an option.
_LETTER = r"\(?([A-Za-z])\)?"
_LETTER_LIST = re.compile(rf"(?<![\w'-]){_LETTER}\s*(?:,\s*{_LETTER}\s*)*(?:,?\s*(?:and|or|&|\+)\s*){_LETTER}(?![\w'-])")
_ONLY_LETTER = re.compile(r"\b(?:only|both|options?|choices?)\s+\(?([A-Z])\)?(?![\w'-])", re.IGNORECASE)


def refers_to_other_options(q: Question) -> bool:
    """Whether an option of `q` refers to other options by letter or position, so that reordering the
    options would change what it means.

    >>> q = Question("1", "?", {"A": "x", "B": "y", "C": "Both A and B"}, "C", "toy")
    >>> refers_to_other_options(q), refers_to_other_options(dataclasses.replace(q, options={
    ...     "A": "x", "B": "y", "C": "1, 2 and 3"}))
    (True, False)
    """
    letters = set(q.options)
    for text in q.options.values():
        if _POSITIONAL.search(text):
            return True
        for m in _LETTER_LIST.finditer(text):
            named = {g.upper() for g in m.groups() if g}
            # Lower case counts too ("a and c"): keeping an order that needed no keeping costs nothing,
            # shuffling one that did makes a wrong question.
            if len(named) >= 2 and named <= letters:
                return True
        if any(g in letters for g in _ONLY_LETTER.findall(text)):  # lower case "a" is the article
            return True
    return False


def permute_options(q: Question, order: Sequence[int], **meta: Any) -> Question:
    """`q` with its options reordered: the new option i is the old option `order[i]`; letters are
    reassigned from "A" and the gold letter follows its text.

    Args:
        q: the question.
        order: a permutation of range(len(q.options)).
        **meta: extra `meta` entries for the new question (e.g. `shift=1`).

    Returns:
        A new `Question` with the same id; `meta["option_order"]` records `order`.

    >>> q = Question("1", "?", {"A": "x", "B": "y", "C": "z"}, "A", "toy")
    >>> p = permute_options(q, [2, 0, 1])
    >>> p.options, p.answer
    ({'A': 'z', 'B': 'x', 'C': 'y'}, 'B')
    """
    texts = list(q.options.values())
    if sorted(order) != list(range(len(texts))):
        raise ValueError(f"order {list(order)} is not a permutation of {len(texts)} options (question {q.id!r})")
    gold_index = list(q.options).index(q.answer)
    options = {LETTERS[i]: texts[j] for i, j in enumerate(order)}
    answer = LETTERS[list(order).index(gold_index)]
    return dataclasses.replace(q, options=options, answer=answer,
                               meta={**q.meta, "option_order": list(order), **meta})


def cyclic_shift(q: Question, shift: int) -> Question:
    """`q` with its options rotated left by `shift` positions (shift 0 = as given; the option that was
    at position `shift` becomes "A"). Letters are reassigned and the gold follows its text.

    >>> q = Question("1", "?", {"A": "x", "B": "y", "C": "z"}, "A", "toy")
    >>> s = cyclic_shift(q, 1)
    >>> s.options, s.answer
    ({'A': 'y', 'B': 'z', 'C': 'x'}, 'C')
    """
    n = len(q.options)
    return permute_options(q, [(i + shift) % n for i in range(n)], shift=shift)


def eval_shifts(q: Question, permutations: int) -> list[int]:
    """The option rotations `q` is asked with when evaluating with K = `permutations`: 0..K-1, capped at
    the option count (a rotation by n is the original order), and only 0 for questions whose options
    refer to other options (rotating them would change their meaning).

    >>> eval_shifts(Question("1", "?", {"A": "x", "B": "y"}, "A", "toy"), 4)
    [0, 1]
    """
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    if permutations == 1 or refers_to_other_options(q):
        return [0]
    return list(range(min(permutations, len(q.options))))


def _balanced_targets(n_free: int, fixed: Counter, letters: str) -> list[str]:
    """Gold letters for `n_free` shufflable questions so that, with the `fixed` gold letters of questions
    that keep their order, every letter is as close to an equal share as possible (water filling)."""
    counts = Counter({letter: fixed.get(letter, 0) for letter in letters})
    out = []
    for _ in range(n_free):
        letter = min(letters, key=lambda x: (counts[x], letters.index(x)))
        counts[letter] += 1
        out.append(letter)
    return out


def balanced_permutations(questions: Sequence[Question], rng: random.Random, *,
                          avoid_rotations: int = 0) -> list[Question]:
    """One pass of the pool with options permuted so that gold letters are balanced per option count.

    Questions whose options refer to other options keep their order (and their gold letter, which the
    others then balance around). For the rest a gold position is dealt from a balanced, shuffled deck and
    the other options are placed in random order around it. With `avoid_rotations` = K, no question is
    given an order that is a rotation by 0..K-1 of its written order (the orders evaluation asks with
    `eval_permutations` = K), so that those orders stay unseen (the fit check); given the gold position
    only one arrangement of the others is such a rotation, so questions of 3 or more options always have
    another. Questions that must keep their order, or have 2 options, cannot avoid it: ValueError.
    """
    by_count: dict[int, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        by_count[len(q.options)].append(i)
    out: list[Question | None] = [None] * len(questions)
    for n, indices in sorted(by_count.items()):
        letters = LETTERS[:n]
        fixed = [i for i in indices if refers_to_other_options(questions[i])]
        if avoid_rotations and (fixed or n < 3):
            q = questions[fixed[0] if fixed else indices[0]]
            raise ValueError(f"question {q.id!r} cannot be trained in an order other than the {avoid_rotations} "
                             f"rotations evaluation asks: " + ("its options refer to each other" if fixed else
                                                               f"it has {n} options"))
        fixed_set = set(fixed)
        free = [i for i in indices if i not in fixed_set]
        for i in fixed:
            out[i] = dataclasses.replace(questions[i], meta={**questions[i].meta, "option_order": list(range(n)),
                                                             "fixed_order": True})
        deck = _balanced_targets(len(free), Counter(questions[i].answer for i in fixed), letters)
        rng.shuffle(deck)
        for i, target in zip(free, deck, strict=True):
            q = questions[i]
            gold_index = list(q.options).index(q.answer)
            others = [j for j in range(n) if j != gold_index]
            position = letters.index(target)
            while True:
                rng.shuffle(others)
                order = others[:position] + [gold_index] + others[position:]
                # order is the rotation by s when order[i] == (i + s) % n; s is set by the gold's place
                if (gold_index - position) % n >= avoid_rotations or \
                        order != [(k + gold_index - position) % n for k in range(n)]:
                    break
            out[i] = permute_options(q, order)
    return out  # type: ignore[return-value]


def keep_options(q: Question, k: int, rng: random.Random) -> Question:
    """`q` with `k` of its options: the gold one and `k - 1` distractors drawn by `rng`, in their printed
    order (letters reassigned from "A", gold follows its text). Questions whose options refer to other
    options, or that have `k` or fewer options, come back unchanged.

    >>> q = Question("1", "?", {"A": "w", "B": "x", "C": "y", "D": "z"}, "C", "toy")
    >>> p = keep_options(q, 2, random.Random(0))
    >>> len(p.options), p.options[p.answer]
    (2, 'y')
    """
    n = len(q.options)
    if k >= n or refers_to_other_options(q):
        return q
    if k < 2:
        raise ValueError(f"a question needs at least 2 options, asked to keep {k}")
    gold_index = list(q.options).index(q.answer)
    kept = sorted([gold_index, *rng.sample([j for j in range(n) if j != gold_index], k - 1)])
    texts = list(q.options.values())
    options = {LETTERS[i]: texts[j] for i, j in enumerate(kept)}
    return dataclasses.replace(q, options=options, answer=LETTERS[kept.index(gold_index)],
                               meta={**q.meta, "kept_options": kept})


def vary_option_counts(questions: Sequence[Question], counts: Sequence[int], rng: random.Random) -> list[Question]:
    """One pass of the pool with each question cut to an option count dealt from a balanced, shuffled
    deck of `counts` (capped at the question's own count; see `keep_options`).

    Why: a pool with one option count (AfriMed-QA: all five) trains the letter prior of five-letter prompts
    only; the model's habits on the four-letter prompts of MedQA and MedMCQA, or PubMedQA's three, are
    whatever the updates happen to leave there (the first balanced demo answered "B" to 96 % of MedQA).
    Mixing the counts puts every letter range the evaluation uses under the same balancing.
    """
    deck = [counts[i % len(counts)] for i in range(len(questions))]
    rng.shuffle(deck)
    return [keep_options(q, k, rng) for q, k in zip(questions, deck, strict=True)]


def training_draws(questions: Sequence[Question], n_draws: int, *, seed: int, shuffle_options: bool = True,
                   option_counts: Sequence[int] = (), avoid_rotations: int = 0) -> list[Question]:
    """The sequence of questions GRPO trains on, one per prompt group, materialised in advance.

    Passes over the pool are concatenated until `n_draws` questions: pass p visits the pool in an order
    shuffled by `Random(f"{seed}:{p}")` (pass 0 in pool order, which the pool's builder already
    shuffled) and, with `shuffle_options`, permutes each question's options with gold positions balanced
    within the pass. Everything is a function of (questions, seed), so a resumed run that rebuilds the
    draws gets the same ones, and the trainer, told not to reshuffle, walks them in order.

    Args:
        questions: the training pool.
        n_draws: how many prompt groups the training needs (steps x prompts per step).
        seed: the run's seed.
        shuffle_options: permute options; False keeps every question as written.
        option_counts: when given, each pass first cuts every question to a count dealt from these
            (`vary_option_counts`), then balances gold letters per resulting count.
        avoid_rotations: K > 0: no draw is a rotation by 0..K-1 of its question's written order (the fit
            check's held-out orders; `balanced_permutations`). Needs `shuffle_options`.

    Returns:
        `n_draws` questions; each has `meta["draw_pass"]` and, when shuffled, `meta["option_order"]`.
    """
    if not questions:
        raise ValueError("no training questions to draw from")
    if avoid_rotations and not shuffle_options:
        raise ValueError("avoid_rotations needs shuffle_options: unshuffled draws are rotation 0")
    draws: list[Question] = []
    p = 0
    while len(draws) < n_draws:
        rng = random.Random(f"{seed}:{p}")
        order = list(questions)
        if p > 0:
            rng.shuffle(order)
        if option_counts:
            order = vary_option_counts(order, option_counts, rng)
        batch = balanced_permutations(order, rng, avoid_rotations=avoid_rotations) if shuffle_options else order
        draws += [dataclasses.replace(q, meta={**q.meta, "draw_pass": p}) for q in batch]
        p += 1
    return draws[:n_draws]


def gold_letter_shares(questions: Sequence[Question]) -> dict[int, dict[str, float]]:
    """{option count: {letter: share of gold answers}} (shares in [0, 1]), for the data card and tests."""
    by_count: dict[int, Counter] = defaultdict(Counter)
    for q in questions:
        by_count[len(q.options)][q.answer] += 1
    return {n: {letter: c[letter] / sum(c.values()) for letter in LETTERS[:n]} for n, c in sorted(by_count.items())}


def shuffle_report(pool: Sequence[Question], *, seed: int, shuffle_options: bool = True,
                   option_counts: Sequence[int] = (), avoid_rotations: int = 0) -> dict[str, Any]:
    """What option shuffling does to one pass over `pool`: gold-letter shares before and after (per
    option count) and how many questions keep their order because an option refers to others."""
    after = training_draws(pool, len(pool), seed=seed, shuffle_options=shuffle_options,
                           option_counts=option_counts, avoid_rotations=avoid_rotations) if pool else []
    return {
        "shuffle_options": shuffle_options,
        "n_questions": len(pool),
        "n_fixed_order": sum(refers_to_other_options(q) for q in pool),
        **({"avoided_rotations": avoid_rotations} if avoid_rotations else {}),
        "gold_shares_before": gold_letter_shares(pool),
        "gold_shares_after": gold_letter_shares(after),
    }


__all__ = ["balanced_permutations", "cyclic_shift", "eval_shifts", "gold_letter_shares", "keep_options",
           "permute_options", "refers_to_other_options", "shuffle_report", "training_draws", "vary_option_counts"]
