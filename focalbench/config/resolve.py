"""Resolution of config words that stand for values computed from the data:
`loss.alpha=inverse_freq` (one weight per class from the training annotations). The words are
resolved before the run id is computed (engine/resolve.py reads the data and calls these), so the
run id, config.yaml and the CSV record the values, and a word and its values typed by hand are one
run.
"""

from __future__ import annotations

from focalbench.errors import InputError

# loss.alpha words, resolved to a per-class list before the run id is computed
# (engine/resolve.py: resolve_alpha): inverse_freq -> inverse_freq_alpha(training class counts)
ALPHA_WORDS = ("inverse_freq",)
# the mean alpha of inverse_freq: Lin et al.'s 0.25, so a balanced training set gets 0.25 each
INVERSE_FREQ_MEAN = 0.25
# losses that take a per-class alpha list: focal one weight per class, softmax_focal one per class
# and then the background; poly1 as focal
PER_CLASS_ALPHA_LOSSES = ("focal", "softmax_focal", "poly1")
# losses whose alpha may be a word of ALPHA_WORDS: the sigmoid ones with one alpha per class
ALPHA_WORD_LOSSES = ("focal", "poly1")


def inverse_freq_alpha(counts: list[int] | tuple[int, ...]) -> tuple[float, ...]:
    """loss.alpha=inverse_freq: alpha_c = min(1, 0.25 * (1 / n_c) / mean_k(1 / n_k)).

    counts [C]: the training annotations of each class (non-crowd, in label order). The classic
    inverse-frequency class weight (scikit-learn's class_weight="balanced" is n / (C n_c), the
    same up to scale) rescaled so the mean alpha is INVERSE_FREQ_MEAN, the focal loss paper's
    default: a balanced set gets exactly 0.25 per class, a class k times rarer than another a k
    times larger alpha. Clipped to 1, which a class reaches once its 1 / n_c is 4x the mean (one
    rare class among many; the mean is then below 0.25); a class without annotations counts as 1
    (it has no positives, so its alpha only weighs its negatives). Per-class focal alpha is the
    request of ultralytics#10406; class-balanced loss (Cui et al. 2019, arXiv 1901.05555) would
    use the effective number (1 - beta^n_c) / (1 - beta) instead of n_c: not done here. Rounded
    to 4 significant digits, so the list reads well in config.yaml and the CSV.
    """
    if not counts:
        raise InputError("loss.alpha=inverse_freq: the training set has no classes")
    inverse = [1.0 / max(int(n), 1) for n in counts]
    mean = sum(inverse) / len(inverse)
    return tuple(float(f"{min(1.0, INVERSE_FREQ_MEAN * w / mean):.4g}") for w in inverse)
