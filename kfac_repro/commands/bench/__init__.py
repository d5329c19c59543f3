"""`kfac-repro bench`: benchmarks that print measured figures (never pass/fail), one module per concern: the
reproduction's costs (`costs`), K-FAC's own speed (`kfac_speed`), the Keras front end (`keras_front`)."""

from __future__ import annotations

import click

from kfac_repro.commands.bench import costs, keras_front, kfac_speed


@click.group()
def bench() -> None:
    """Benchmarks: every arm's cost per update, step time against SGD, fit step time against Adam, inversion time,
    async inversion, step time of the newer layer blocks against Adam, the paper profile on a GPU, the Keras suite's
    time to target."""


for _command in (costs.arms, costs.paper_scale, costs.gpu, kfac_speed.step, kfac_speed.inversion, kfac_speed.layers,
                 kfac_speed.async_, keras_front.fit, keras_front.keras_suite):
    bench.add_command(_command)
