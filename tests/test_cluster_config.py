"""Cluster descriptions (TF_CONFIG and --cluster files): malformed input is refused naming the source and the field,
before any process starts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kfac_repro.distribute.cluster import ClusterConfigError, load_cluster_file, parse_tf_config


def tf_config(cluster: dict, role: str = "worker", index: int = 0) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": role, "index": index}})


def test_chief_and_workers_in_order() -> None:
    spec = parse_tf_config(tf_config({"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "worker", 1))
    assert spec.workers == ("a:1", "b:2", "c:3") and spec.index == 2 and not spec.is_chief


def test_a_chief_given_as_a_string_is_refused_not_split_into_characters() -> None:
    with pytest.raises(ClusterConfigError, match=r"TF_CONFIG: cluster\.chief: expected a list of 'host:port' "
                                                 r"strings .* found a str"):
        parse_tf_config(tf_config({"chief": "a:1", "worker": ["b:2"]}))


def test_a_cluster_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(b'{"workers": ["h\xff:1"]}')
    with pytest.raises(ClusterConfigError, match=r"cluster\.json: not UTF-8 text \(byte 0xff at offset 15\)"):
        load_cluster_file(path, 0)


def test_the_worker_command_reports_a_bad_cluster_file_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(b'{"workers": ["h\xff:1"]}')
    result = subprocess.run([sys.executable, "-m", "cli", "worker", "cifar10-async", "--arm", "sgd-bn", "--profile",
                             "smoke", "--run-dir", str(tmp_path / "run"), "--cluster", str(path), "--index", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not UTF-8 text" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
