"""Tests the four claims of Shen et al. (2024) on a study's per-example results.

Claims (arXiv 2401.12014): (a) compressed models lose robustness; (b) larger
networks lose more robustness, even when compressed to a similar size as the
smaller ones; (c) distilled students are more robust than pruned networks of
the same size; (d) 8-bit post-training quantization (PTQ) is the most robust
compression.

Modules: `data` (the input `StudyData(rows, examples)` and the per-example
tables), `comparisons` (which models each claim compares, and the result
records), `inference` (the interval of a seed-mean paired effect),
`analysis` (`test_claims`, `sanity_checks`), `report` (Markdown and the
forest plot).

Quantities, per model, seed and shift type T (domain | corruption |
adversarial):
* clean accuracy on the SAME examples as T's cells (the first n source test
  examples for corruption and adversarial; the whole source test split for
  domain, whose target splits are other example sets);
* shifted accuracy = mean over T's cells and levels; drop = clean - shifted;
  robustness R = (shifted - c) / (clean - c), chance-corrected with c = 1 /
  number of classes: a model at chance has no robustness to give, so a
  collapsed model cannot look robust by having little left to lose (with
  c = 0, R = shifted / clean, a model pruned to 67 % clean accuracy had the
  highest corruption R of all models).
* adversarial: per threat model (L2 if "l2" is in the attack's name, else
  L-inf) and eps, an example counts as robust only if EVERY attack of that
  threat model failed on it (transfer attacks included); eps = 0 is not a
  shift; an eps at which every model is at 0 % is left out of R.
* Cells, levels, examples and seeds are those that every model with data for
  T shares (pairing needs the same ones); anything dropped is noted.

Usable models only: a model whose clean accuracy (mean over seeds) is more
than `max_clean_drop` below its original's is left out of every comparison,
and the report lists it. Its verdicts are those of the models that work.

Effects, per seed, then averaged over seeds, oriented so that POSITIVE = THE
WAY THE PAPER CLAIMS:
* (a) each compressed model (prune, quantize, distill) vs its own original:
  R(original) - R(compressed), pooled (mean) over all of them.
* (b) each pair of architectures S < L (by their originals' size), same
  method (and, for pruning, the same scope and structure), L compressed to
  within 15 % of S-compressed's size (one-shot and gradual schedules count
  as one method: the schedule is how the grid reaches a usable model at a
  sparsity, not another kind of pruning): lost(L) - lost(S) with lost =
  R(own original) - R(compressed). Secondary lines: absolute robustness at
  equal size, R(S compressed) - R(L compressed); the same setting (e.g. the
  same sparsity) regardless of size; compressed L vs uncompressed S.
* (c) each student vs its teacher pruned to within 15 % of its size AND vs
  its no-KD control: two components, each pooled over the students, and
  both must hold (an intersection-union test); the cell's effect is the
  smaller of the two. Fewer than two students cap the overall verdict at
  inconclusive (one student is one architecture, not a trend).
* (d) int8 PTQ vs the pruned models AND vs the distilled ones of the same
  original at a compression ratio within 15 % (two components, both must
  hold, as in (c)); int4 is a separate, secondary line; "reliable" is a
  TOST equivalence test of int8 against its original with the margin
  `equivalence_margin` (equivalent if the 90 % interval lies inside it).
Every effect is also given on the accuracy drop, oriented the same way.

Inference (`inference`): the seed is the unit of replication. Each effect is
a mean over seeds of per-seed paired effects; its interval adds to the
seeds' spread (at the t quantile on S - 1 degrees of freedom) the variance
that sampling the test examples adds (crossed seed x example random effects,
ANOVA estimator; at the normal quantile). A simulation with a known truth
(tests/study/claims_calibration_test.py, and the claims calibration
benchmark for the full table) checks that it holds its level.

Verdicts: the primary endpoints are the paper's two shift types, domain and
adversarial (`primary`); their deciding cells (4 claims x 2 shift types) are
one family, Bonferroni-corrected to a family-wise error rate `alpha`, so
their intervals hold simultaneously. Corruption cells (our extension) are a
secondary family, corrected the same way, and do not enter the overall
verdicts. A component of an intersection-union test gets its cell's level
split over the components, so the interval of the minimum holds. A cell is
*supported* if its interval lies above zero, *contradicted* if below,
*inconclusive* otherwise, *not testable* without the comparisons. Overall,
per claim, over the primary cells: *supported* if some is supported and none
contradicted, *contradicted* in the mirror case, *mixed* if both occur,
*inconclusive* if none is decided. Secondary analyses are uncorrected 95 %
intervals, labelled as such.

Negative control: per seed, a second, independently initialised copy of an
original (method "replicate") is compared with it as if it were compressed,
R(original) - R(replicate), at the corrected level of the claims' cells on
that shift type (the same test the claims get); its true effect is zero, so
it must come out inconclusive.

Each primary cell reports its minimum detectable effect: the true effect it
would find with 80 % power at its corrected level, from its estimated
variance components, and the same for a study with 10 seeds.
"""
