"""Two processes with gloo on the CPU train like one process with the same global batch; two torchrun
launches on this machine as two nodes (c10d rendezvous on 127.0.0.1), killed and launched again, resume to
the weights of the one-node two-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _tiny_model(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from adaptctl.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, num_labels=2)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _recipe(tmp: Path, model: Path, batch_size: int) -> Path:
    rows = ["text,label"] + [f"great happy lovely day number {i},pos" if i % 2 else f"awful sad broken thing {i},neg"
                             for i in range(96)]
    (tmp / "data.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp / f"recipe-{batch_size}.yaml"
    recipe.write_text(f"""
name: dist
task: classification
model: {{base: {model}}}
data: {{source: data.csv, text: text, label: label, splits: {{validation: 0.25, test: 0.0}}, max_length: 32}}
method: {{name: full}}
train: {{epochs: 3, batch_size: {batch_size}, learning_rate: 1.0e-3, precision: fp32, logging_steps: 1}}
""")
    return recipe


def _train(recipe: Path, run_dir: Path, nproc: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "adaptctl", "train", str(recipe), "--run-dir", str(run_dir), "--nproc", str(nproc)]
    subprocess.run([sys.executable, "-m", "adaptctl", "prepare", str(recipe), "--run-dir", str(run_dir)], check=True, env=env)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "train" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    """The one-node two-process run (adaptctl train --nproc 2): its folder, recipe and manifest."""
    root = tmp_path_factory.mktemp("distributed")
    model = _tiny_model(root / "model")
    recipe = _recipe(root, model, 4)
    return {"root": root, "model": model, "recipe": recipe, "run": root / "two",
            "manifest": _train(recipe, root / "two", 2)}


def test_two_processes_match_one_with_the_same_global_batch(two_processes):
    tmp_path = two_processes["root"]
    one = _train(_recipe(tmp_path, two_processes["model"], 8), tmp_path / "one", 1)
    two = two_processes["manifest"]
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 8
    assert two["steps"] == one["steps"]
    # Same global batch, same number of steps: the losses agree (the data order differs between samplers).
    assert two["metrics"]["eval_loss"] == pytest.approx(one["metrics"]["eval_loss"], rel=0.05)
    rows = [json.loads(line) for line in (tmp_path / "two" / "train" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert len(train_steps) == len(set(train_steps)), "each step is logged once, by rank 0"
    assert not list((tmp_path / "two" / "train").glob(".model.tmp*"))
    assert (tmp_path / "two" / "train" / "model" / "model.safetensors").exists()


def test_dpo_trains_under_two_processes(tmp_path):
    """Preference alignment goes through the Trainer's distributed path like every task: two gloo processes,
    global batch 2 x 4, one adapter written once by rank 0, held-out DPO loss finite and the log not doubled."""
    import math

    import tiny_generation as tg
    from test_preference import pair_recipe, write_pairs

    llama = tg.save_tiny_llama(tmp_path / "llama")
    raw = pair_recipe(llama, write_pairs(tmp_path / "pairs.jsonl"))
    raw["train"].update(batch_size=4, max_steps=4)
    manifest = _train(tg.write_recipe(tmp_path / "dpo.yaml", raw), tmp_path / "run", 2)
    assert manifest["world_size"] == 2 and manifest["global_batch_size"] == 8 and manifest["steps"] == 4
    assert math.isfinite(manifest["metrics"]["eval_loss"])
    assert (tmp_path / "run" / "train" / "model" / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), "each step is logged once, by rank 0"


def test_grpo_trains_under_two_processes(tmp_path):
    """GRPO goes through the same distributed path: two gloo processes each sample completions for their
    share of the prompts (a group's completions may span both), rewards are gathered before the advantages,
    one adapter is written once by rank 0, and the log is not doubled."""
    import tiny_generation as tg
    from test_reinforcement import REWARD_CODE, grpo_recipe, sums

    llama = tg.save_tiny_llama(tmp_path / "llama")
    (tmp_path / "my_rewards.py").write_text(REWARD_CODE)
    raw = grpo_recipe(llama, sums(tmp_path / "sums.jsonl"), tmp_path / "my_rewards.py")
    raw["train"].update(batch_size=2, save_every=None)
    manifest = _train(tg.write_recipe(tmp_path / "grpo.yaml", raw), tmp_path / "run", 2)
    assert manifest["world_size"] == 2 and manifest["global_batch_size"] == 4 and manifest["steps"] == 2
    assert manifest["generated_tokens"] > 0 and manifest["rewards"][3]["name"] == "digits"
    assert (tmp_path / "run" / "train" / "model" / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2] and all("rewards/answer_match/mean" in r for r in rows if "loss" in r)


# ------------------------------------------------------------------ two nodes
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_nodes(recipe: Path, run_dir: Path, logs: Path, attempt: int) -> list[subprocess.Popen]:
    """Two torchrun launches of one process each, as two machines would start them (`srun torchrun ...`): the
    same rendezvous endpoint and id, c10d, gloo.  Logs: node<N>-<attempt>.log."""
    port, env = _free_port(), {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"nodes-{port}",
               "--local_addr", "127.0.0.1", "-m", "adaptctl", "train", str(recipe), "--run-dir", str(run_dir)]
    return [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=(logs / f"node{node}-{attempt}.log").open("w")) for node in (0, 1)]


def _kill_tree(pid: int):
    """SIGKILL a launch and every process under it: torchrun starts its workers in sessions of their own, so
    a kill of its process group alone leaves them training."""
    import psutil

    launch = psutil.Process(pid)
    processes = [*launch.children(recursive=True), launch]
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=60)


def _kill_at_first_checkpoint(nodes: list[subprocess.Popen], run_dir: Path, timeout: float = 300) -> Path:
    """SIGKILL both nodes (a preempted job) once a whole checkpoint is on disk."""
    from adaptctl.training.checkpoints import checkpoints, is_whole

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        whole = [c for c in checkpoints(run_dir / "train" / "checkpoints") if is_whole(c)]
        if whole or any(node.poll() is not None for node in nodes):
            break
        time.sleep(0.02)
    for node in nodes:
        _kill_tree(node.pid)
        node.wait(timeout=60)
    assert whole, "no checkpoint before the nodes ended"
    return whole[-1]


def test_two_nodes_killed_and_launched_again_resume_to_the_one_node_run(two_processes, tmp_path):
    """--nnodes 2 with c10d on 127.0.0.1 trains what --nproc 2 on one node trains: killed after a checkpoint and
    launched again, the two nodes resume from it and end with the one-node run's weights and steps."""
    from safetensors.torch import load_file
    from torch.testing import assert_close

    run = tmp_path / "nodes"
    # a checkpoint every 2 steps: the nodes are killed well before the end (checkpoints change no weight);
    # prepare is train's to run, on rank 0 (the other node waits at the barrier)
    recipe = tmp_path / "recipe.yaml"
    text = two_processes["recipe"].read_text().replace("source: data.csv", f"source: {two_processes['root'] / 'data.csv'}")
    recipe.write_text(text.replace("logging_steps: 1", "logging_steps: 1, save_every: 2"))
    kept = _kill_at_first_checkpoint(_launch_nodes(recipe, run, tmp_path, 1), run)
    assert json.loads((run / "train" / "manifest.json").read_text())["status"] == "running"
    assert not (run / "train" / "model").exists()

    nodes = _launch_nodes(recipe, run, tmp_path, 2)
    codes = [node.wait(timeout=600) for node in nodes]
    assert codes == [0, 0], (tmp_path / "node0-2.log").read_text()[-3000:] + (tmp_path / "node1-2.log").read_text()[-3000:]
    reference, manifest = two_processes["manifest"], json.loads((run / "train" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "complete"
    assert int(kept.name.split("-")[1]) <= manifest["resumed_from_step"] < reference["steps"] == manifest["steps"]
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, reference["steps"] + 1))
    ours = load_file(run / "train" / "model" / "model.safetensors")
    theirs = load_file(two_processes["run"] / "train" / "model" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name, weight in theirs.items():
        assert_close(ours[name], weight, rtol=0, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
