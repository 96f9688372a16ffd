"""The engine: the one path every smoother runs through.

::

    images -> work items -> batch former -> fused op -> base model -> votes -> tally -> decider -> answers

- ``items``: :class:`Segment` (a run of one image's units in one forward) and the :class:`Work`
  protocol a smoother implements; ``runs`` merges segments into fused-op calls.
- ``batching``: :class:`BatchFormer`, which fills every forward up to ``batch_size`` rows with
  pending units of as many images as needed, one group key per forward.
- ``tally``: :class:`Tally`, per-slot counts on the model's device.
- ``deciders``: :class:`Everything` (full counts), :class:`TwoStage` (fixed n0 + n sampling),
  :class:`Margins` (exact early exit of the
  deterministic smoothers), :class:`Sequential` (anytime-valid decisions of the sampling ones:
  the hybrid mixture / Clopper-Pearson rule, or the union bound) and :class:`SequentialPredict`
  (their anytime-valid PREDICT).
- ``audit``: the exact false-certification rate and expected samples of a sequential rule on a
  Bernoulli stream (dynamic programming over the looks), with its selection of c_A on a
  two-class stream (``exact_total``), and vectorized simulations of both.
- ``works``: :class:`SeededWork`, units of ops keyed by one seed per call (l0, SSN, uniform).
- ``loop``: :func:`run`, the loop itself.

How a smoother plugs in
-----------------------
1. **Units.** Number the units of an image 0, 1, ... (ablation positions, offsets, sample
   indices); unit ``u`` of image ``i`` must always give the same model input, whatever forward
   it lands in (for sampled units, key the randomness by (image, unit): see ``mix_seed`` and
   the ``granule`` of ops keyed by one seed per call). Order the units so that an early
   prefix is informative when the decider may stop early.
2. **Work.** An object with ``build(segments) -> inputs`` (the model input of every row of a
   list of :class:`Segment`, in order: any object, e.g. a tuple (kept-token pixels, kept token
   indices) for token-dropping ViTs; it may reuse one buffer across calls), ``forward(inputs,
   start, stop) -> logits`` (one forward over rows start .. stop - 1), ``votes(logits) ->
   int64 [N, K]``, ``granule`` (1 unless the op draws its randomness per call), and optionally
   ``groups(image, first, end) -> [(key, first, end), ...]``: units with different keys never
   share a forward (ViTs: key = number of kept tokens; order units so each key is a contiguous
   run). The input builder is per Work, so per smoother and per group.
3. **Decider.** ``Everything(total)`` for full counts, ``Margins(total, levels, slots)`` for a
   deterministic certificate at given levels (levels in votes: certified iff the leader's
   margin ``D >= L``), ``Sequential(...)`` for sampled units.
4. **Run.** ``run(work, decider, [(slot, image), ...], num_classes, device, batch_size)``
   returns the counts per slot and the units each slot used; answers are then on the decider
   (``prediction``, ``certified``) or come from the certificate functions on the counts.
"""
from fastsmooth.engine.deciders import (
    Decider,
    Everything,
    Margins,
    Sequential,
    SequentialPredict,
    TwoStage,
    look_alphas,
    margins,
    schedule,
)
from fastsmooth.engine.items import Segment, Work, mix_seed, one_group, runs, spread
from fastsmooth.engine.loop import Run, run
from fastsmooth.engine.batching import BatchFormer
from fastsmooth.engine.tally import NonFiniteLogitsError, Tally

__all__ = [
    "BatchFormer",
    "Decider",
    "Everything",
    "Margins",
    "NonFiniteLogitsError",
    "Run",
    "Segment",
    "Sequential",
    "SequentialPredict",
    "Tally",
    "TwoStage",
    "Work",
    "look_alphas",
    "margins",
    "mix_seed",
    "one_group",
    "run",
    "runs",
    "schedule",
    "spread",
]
