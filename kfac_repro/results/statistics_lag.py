"""How long a batch-normalised run's evaluations trail its training: the lag of BN's moving statistics.

Evaluation runs in inference mode, normalising with BN's moving averages of the batch statistics; while the weights
move fast those averages describe weights long gone, and the validation curve trails the network's real progress
(measured here: Fig. 6's SGD+BN at batch 2048 had an inference-mode training loss of 610 at update 10 where its
training-mode loss was 2.6). Each evaluation also reads training examples in inference mode (`train_eval_loss`),
and each logged row carries the training-mode mean loss over the updates since the row before (`train_loss`); a
mean over updates that came before the evaluation is no lower than the loss at it while the curve descends, so an
evaluation whose inference-mode loss exceeds LAG_FACTOR times that mean is lagging. The factor sits above the noise
of the two estimates: in the runs of the cpu profile without BN the ratio reached 1.28 on the plateau (1.81 once, at
a K-FAC run's first evaluation), where BN arms at batch 1024-2048 started at 1.6-570. The lag ends at the first
evaluation that is not lagging: the averages catch up once the weights slow down, and a ratio above the factor
later is noise, not lag.
"""

from __future__ import annotations

from kfac_repro.results.runs import Run

LAG_FACTOR = 1.5
INFERENCE_COLUMNS = ("val_loss", "val_error", "train_eval_loss", "train_eval_error")


def uses_batch_norm(run: Run) -> bool:
    return bool(run.setting("model", "batch_norm"))


def statistics_lag(run: Run) -> int:
    """The last update of the run's first evaluations at which train_eval_loss > LAG_FACTOR × train_loss (module
    docstring); 0 for a run without BN, without both columns, or whose first evaluation does not lag. A level of an
    inference-mode metric (INFERENCE_COLUMNS) reached at or before it is read off a lagging curve."""
    if not uses_batch_norm(run) or not {"train_loss", "train_eval_loss"} <= set(run.metrics.columns):
        return 0
    lag = 0
    for row in run.metrics.dropna(subset=["train_loss", "train_eval_loss"]).itertuples():
        if not row.train_eval_loss > LAG_FACTOR * row.train_loss:
            break
        lag = int(row.step)
    return lag
