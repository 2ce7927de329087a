"""Wang et al. 2020, HAT: a SuperTransformer, a latency predictor measured on this machine, evolutionary search.

Paper (WMT'14 En-De): models searched under a latency budget on the target
hardware are 3x faster and 3.7x smaller than Transformer-Big at the same BLEU,
with 12,041x less search cost than the Evolved Transformer. Ours, on
Shakespeare: the SuperTransformer is the baseline Transformer's shape (4
layers, width 128, 4 heads of 32, FFN 512; configs/baseline_char_transformer.py),
the space SPACE below it (depth, per-layer heads and FFN width, and the hidden
width in 3 buckets: 64, 96, 128), trained SUPERNET_STEPS steps with sandwich
sampling; latency measured for LATENCY_SAMPLES sampled architectures (plus the
largest and smallest) on this machine's device, a fitted cost model on them
(experiments/nas.py); evolution (population 10, 20 generations, 5 parents, 3
mutations; random search as the control with as many evaluations) at budgets of
25, 50 and 75 % of the largest model's latency, each candidate scored by its
inherited-weight loss on SCORE_BATCHES batches of the selection works
(`nas.budget_by`: "latency" through the cost model, falling back to exact
FLOPs if its held-out error is over 10 %; "flops" or "params" exactly). Each
budget exports three models: the searched one (`evolution`), the deepest
full-size-layer model within it (`layers`) and the largest uniformly narrower
full-depth one (`narrow`), the hand-scaled baselines.

Variants [_quick]:
- `search`: the supernet, the latency table and model, the searches;
- `found_BUDGET_KIND`: the export of one found model (from the `search` run of
  the same seed, searched first if missing), BUDGET 25, 50 or 75, KIND
  evolution, layers or narrow;
- `retrain_BUDGET_KIND`: that model trained from scratch with the baseline's
  recipe for RETRAIN_STEPS steps (half the baseline's 4,000: 27 runs at 3 seeds);
- `tune_BUDGET_KIND`: that model fine-tuned from its inherited weights for
  FINETUNE_STEPS steps instead;
- `found_largest`: the supernet's full-size slice as a standalone export, the
  reference beside which `experiments.benchmark_inference` times the found
  models (the latency the budgets are fractions of);
- `found_sample_I` / `retrain_sample_I` (I < RANK_SAMPLES): architectures drawn
  from the whole space, retrained for RANK_STEPS, for HAT's check that the
  inherited-weight loss ranks architectures as retraining does (Kendall's tau).
"""
from configs import baseline_char_transformer, common

SPACE = {"depths": [1, 2, 3, 4], "heads": [1, 2, 4], "ffn": [128, 256, 512], "widths": [64, 96, 128]}
SUPERNET_STEPS = 4000
RETRAIN_STEPS = 2000
LATENCY_SAMPLES = 200
SCORE_BATCHES = 4
BUDGETS = (25, 50, 75)
KINDS = ("evolution", "layers", "narrow")
SELECTION_OFFSET = 5  # the selection works score the candidates (Cymbeline, Julius Caesar, Othello, The Tempest)
# The runs' folders ({seed} is the run's own seed, experiments.provenance.seeded_path).
SEARCH = "runs/wang2020_hat_char_transformer_search{quick}/seed_{seed}"
FOUND = "runs/wang2020_hat_char_transformer_found_{chosen}{quick}/seed_{seed}/export/params.safetensors"
RANK_SAMPLES = 10  # architectures retrained for the inherited-vs-retrained rank check (Kendall's tau)
RANK_STEPS = 1000
EXPORTS = (*(f"{b}_{k}" for b in BUDGETS for k in KINDS), *(f"sample_{i}" for i in range(RANK_SAMPLES)))
FINETUNE_STEPS = 500
LARGEST = "largest"  # the supernet's full-size slice, exported as the reference the found models are timed against
VARIANTS = ("search", *(f"{stage}_{name}" for stage in ("found", "retrain", "tune") for name in EXPORTS),
            f"found_{LARGEST}")


def get_config(arg: str = "search"):
    arg = common.parse_arg(arg, __file__, variant=("search", VARIANTS), quick=False)
    config = baseline_char_transformer.get_config("quick" if arg.quick else "")
    config.dataset.selection_offset = SELECTION_OFFSET
    stage, _, chosen = arg.variant.partition("_")
    quick = "_quick" if arg.quick else ""
    if stage in ("retrain", "tune"):
        config.model_from = FOUND.replace("{chosen}", chosen).replace("{quick}", quick)
        config.train.num_steps = 30 if arg.quick else (RANK_STEPS if chosen.startswith("sample") else RETRAIN_STEPS)
        if stage == "tune":  # from the inherited weights, a short fine-tune at the baseline's peak rate
            config.init_from = config.model_from
            config.train.num_steps = 30 if arg.quick else FINETUNE_STEPS
        return config
    config.runner = "nas"
    config.train.num_steps = 60 if arg.quick else SUPERNET_STEPS
    config.nas = {"space": SPACE, "sampling": "sandwich", "latency_samples": 12 if arg.quick else LATENCY_SAMPLES,
                  "latency_repeats": 3 if arg.quick else 20, "budget_fractions": [b / 100 for b in BUDGETS],
                  "score_batches": 1 if arg.quick else SCORE_BATCHES, "population": 4 if arg.quick else 10,
                  "generations": 3 if arg.quick else 20, "parents": 2 if arg.quick else 5,
                  "mutations": 1 if arg.quick else 3, "mutation_probability": 0.3, "export": "", "budget_by": "latency",
                  "rank_samples": 3 if arg.quick else RANK_SAMPLES,
                  "search": SEARCH.replace("{quick}", quick)}
    if stage == "found":
        config.nas.export = chosen
    return config
