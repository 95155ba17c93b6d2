"""docs/JOB.md's loopback recipes, run as written: start a head, caption a small corpus with
`ray job submit`, `ray job status`. Only two things change: the ports are free ones (so parallel
clusters cannot collide; the extra `ray start` ports too), and the final `ray stop`, which would kill
every Ray process of the user, is replaced by stopping this cluster's own processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from doc_blocks import REPO, runnable

from jobs import ray_cluster


def _isolated(text: str, port: int, dash: int, extra_ports: list[int]) -> str:
    client, agent_http, agent_grpc, rt_agent, metrics = extra_ports
    assert text.rstrip().splitlines()[-1].startswith("ray stop"), "the recipe ends with ray stop"
    text = "\n".join(text.rstrip().splitlines()[:-1])
    text = text.replace("--port 6379", f"--port {port}").replace("8265", str(dash))
    extra = (
        f" --ray-client-server-port {client} --dashboard-agent-listen-port {agent_http}"
        f" --dashboard-agent-grpc-port {agent_grpc} --runtime-env-agent-port {rt_agent}"
        f" --metrics-export-port {metrics}"
    )
    return re.sub(r"--disable-usage-stats", "--disable-usage-stats" + extra, text, count=1)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ray-loopback-token", "ray-loopback-noauth"])
def test_loopback_recipe_as_documented(name: str, tmp_path: Path) -> None:
    block = runnable(name)
    work = tmp_path / "repo"  # what `--working-dir .` ships: the code, not the repo's other files
    for part in ("jobs", "pipeline", "captioner", "synthetic"):
        shutil.copytree(REPO / part, work / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".gitignore", work / ".gitignore")
    temp = ray_cluster.short_temp_dir()
    home = temp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(HOME=str(home), RAY_TMPDIR=str(temp), PATH=f"{ray_cluster.VENV_BIN}{os.pathsep}{env['PATH']}")
    port, dash, *extra = (ray_cluster.free_port() for _ in range(7))
    script = "set -euo pipefail\n" + _isolated(block.text, port, dash, extra)
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # every process of the cluster is in this group: that is what we stop
    )
    cluster = ray_cluster.LocalCluster(temp, home, port, dash, 2, proc.pid, env)
    try:
        out, _ = proc.communicate(timeout=400)
        token_made = (home / ".ray" / "auth_token").exists()  # the home goes with the cluster's temp dir
    finally:
        left = ray_cluster.stop_local_cluster(cluster)
    where = f"{block.doc.name}:{block.line}"
    assert proc.returncode == 0, f"{where}:\n{out[-4000:]}"
    # Once at the end of `ray job submit`, once from `ray job status`.
    assert out.count("Job 'caption-loopback' succeeded") == 2, f"{where}:\n{out[-4000:]}"
    summary = json.loads((work / "caption_out" / "summary.json").read_text())
    assert summary["complete"] and summary["counts"] == {"ok": 4}, summary
    assert token_made == (name == "ray-loopback-token")
    assert not left, left
