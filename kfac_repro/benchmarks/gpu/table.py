"""results/gpu/*.csv: what `kfac-repro bench gpu` measured on one device, one row per quantity, the device, its
driver and TensorFlow's build in every row, and the ratios it prints (no TensorFlow here: the report reads it).

Quantities per model and batch: seconds per update of SGD (`SGD`), of K-FAC with statistics every step and no
inversion in float32 and bfloat16 products (`EVERY_STEP`, `EVERY_STEP_BF16`), of K-FAC as the spec's paper profile
configures it (`AMORTISED`); seconds of one full inversion on the host and on the device (`HOST_INVERSION`,
`DEVICE_INVERSION`); the device's peak memory (`PEAK_MEMORY`, bytes, n/a on a CPU). Model `fit`: seconds per step of
Keras `fit` with K-FAC and with Adam (`FIT_KFAC`, `FIT_ADAM`). Model `product`: multiply-adds per second of a square
matrix product in float32 and bfloat16 (`PRODUCT_F32`, `PRODUCT_BF16`; batch_size holds its side).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

SGD = "sgd_update"
EVERY_STEP = "kfac_update_stats_every_step"
EVERY_STEP_BF16 = "kfac_update_stats_every_step_bfloat16"
AMORTISED = "kfac_update_amortised"
HOST_INVERSION = "inversion_host"
DEVICE_INVERSION = "inversion_device"
PEAK_MEMORY = "peak_memory"
FIT_KFAC = "fit_step_kfac"
FIT_ADAM = "fit_step_adam"
PRODUCT_F32 = "product_rate_float32"
PRODUCT_BF16 = "product_rate_bfloat16"
NOT_AVAILABLE = "n/a"
PAPER_MODELS = {"resnet50": "resnet50-bs512", "alexnet": "alexnet-bs2048", "googlenet": "googlenet-bs256"}
"""The paper profile's full-size models, each with the spec whose K-FAC arm `bench gpu` measures."""
CONTEXT = ("time_utc", "commit", "device", "driver", "tensorflow", "build", "scale")


@dataclass(frozen=True)
class Row:
    """One measured quantity: value (median; None where not available) and its range over `repeats`; `note` says
    why a value is missing (a method that failed)."""

    model: str
    batch_size: int
    quantity: str
    value: float | None
    low: float | None
    high: float | None
    unit: str
    repeats: int
    note: str = ""


COLUMNS = (*(f.name for f in fields(Row)), *CONTEXT)


def _text(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else repr(value)


def _number(text: str) -> float | None:
    return None if text == NOT_AVAILABLE else float(text)


def write_rows(path: Path, rows: Sequence[Row], context: dict[str, str]) -> None:
    """All `rows` with `context` (the CONTEXT fields) in each, through a temporary file renamed over `path`: a
    reader, or a run killed while writing, sees the previous complete table or this one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            fields_ = asdict(row)
            writer.writerow({**fields_, **{k: _text(fields_[k]) for k in ("value", "low", "high")},
                             **{k: context.get(k, "") for k in CONTEXT}})
    temporary.replace(path)


@dataclass(frozen=True)
class Table:
    """A profile's rows and the context they were measured in (the first row's)."""

    rows: list[Row]
    context: dict[str, str]

    def get(self, model: str, batch_size: int, quantity: str) -> Row | None:
        return next((r for r in self.rows if (r.model, r.batch_size, r.quantity) == (model, batch_size, quantity)),
                    None)


def read_table(path: Path) -> Table:
    """The table `write_rows` wrote; ValueError naming the file and line of a malformed row."""
    with path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    rows = []
    for line, record in enumerate(records, start=2):
        try:
            rows.append(Row(record["model"], int(record["batch_size"]), record["quantity"],
                            _number(record["value"]), _number(record["low"]), _number(record["high"]),
                            record["unit"], int(record["repeats"]), record.get("note") or ""))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}, line {line}: not a row of `bench gpu` ({error})") from error
    context = {k: records[0].get(k) or "" for k in CONTEXT} if records else {}
    return Table(rows, context)


@dataclass(frozen=True)
class Ratio:
    """`numerator / denominator` of one model and batch; `target` the issue's goal for it, if any."""

    model: str
    batch_size: int
    what: str
    value: float
    target: float | None = None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value <= self.target

    def text(self) -> str:
        goal = "" if self.target is None else f"  (target ≤ {self.target:g}: {'met' if self.met else 'not met'})"
        return f"{self.model:10}{self.batch_size:>6}  {self.what:40}{self.value:8.3f}{goal}"


# (what, numerator, denominator, target, models the target is set for (empty: every model)); for product rates
# the ratio of times is the inverse ratio of rates.
RATIOS: tuple[tuple[str, str, str, float | None, tuple[str, ...]], ...] = (
    ("K-FAC amortised / SGD", AMORTISED, SGD, 1.3, ("resnet50",)),
    ("K-FAC stats every step / SGD", EVERY_STEP, SGD, None, ()),
    ("device inversion / host inversion", DEVICE_INVERSION, HOST_INVERSION, 1.0, ()),
    ("bfloat16 / float32 (K-FAC every step)", EVERY_STEP_BF16, EVERY_STEP, 1.0, ()),
    ("fit K-FAC / Adam", FIT_KFAC, FIT_ADAM, None, ()),
    ("bfloat16 / float32 (product time)", PRODUCT_F32, PRODUCT_BF16, 1.0, ()),
)


def ratios(rows: Iterable[Row]) -> list[Ratio]:
    """Every ratio of `RATIOS` whose two quantities were measured (same model and batch), in the rows' order; the
    issue's targets: K-FAC amortised ≤ 1.3 × SGD on ResNet-50, device inversion and bfloat16 faster."""
    rows = list(rows)
    values = {(r.model, r.batch_size, r.quantity): r.value for r in rows}
    found = []
    for model, batch in dict.fromkeys((r.model, r.batch_size) for r in rows):
        for what, numerator, denominator, target, models in RATIOS:
            top, bottom = values.get((model, batch, numerator)), values.get((model, batch, denominator))
            if top is None or bottom is None or bottom == 0 or not math.isfinite(top / bottom):
                continue
            goal = target if not models or model in models else None
            found.append(Ratio(model, batch, what, top / bottom, goal))
    return found
