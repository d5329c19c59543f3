"""What a spec's `distribution.workers` becomes on one host: the first N GPUs, or N logical CPU devices on a host
without GPUs; a GPU host with fewer GPUs than workers is refused with what to pass instead. (MirroredStrategy over
logical CPU devices is exercised in subprocesses by test_distributed.py.)"""

import pytest

from kfac_repro.distribute.strategy import local_devices


def test_workers_take_the_first_gpus_of_a_host_with_enough() -> None:
    assert local_devices(4, gpus=8) == ["/device:GPU:0", "/device:GPU:1", "/device:GPU:2", "/device:GPU:3"]
    assert local_devices(8, gpus=8)[-1] == "/device:GPU:7"


def test_a_host_without_gpus_gets_one_logical_cpu_device_per_worker() -> None:
    assert local_devices(4, gpus=0) == ["/device:CPU:0", "/device:CPU:1", "/device:CPU:2", "/device:CPU:3"]


def test_fewer_gpus_than_workers_is_an_error_saying_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"distribution.workers is 8 but this host has 4 GPU\(s\).*"
                                         r"--set distribution.workers=4.*one `kfac-repro worker` process per GPU"):
        local_devices(8, gpus=4)

