"""train_accelerate.py: a short run learns, resuming equals not stopping, interrupted saves, Hub pushes."""

import json

import pytest
from transformers import AutoModel

import train_accelerate as trainer
from partonomy_dataset import __main__ as dataset_cli

from .hub_stub import HubStub


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "partonomy"
    assert dataset_cli.main(["build", "--config", "toy", "--out", str(out), "--toy-num-images", "34"]) == 0
    return out


def run(toy_folder, output_dir, *extra):
    argv = [
        "--dataset",
        str(toy_folder),
        "--output_dir",
        str(output_dir),
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--warmup_steps",
        "2",
        "--logging_steps",
        "1",
        *extra,
    ]
    return trainer.train(*trainer.parse_args(argv))


def test_short_run_learns_and_exports_a_loadable_model(toy_folder, tmp_path):
    result = run(
        toy_folder, tmp_path / "run", "--max_steps", "40", "--learning_rate", "1e-3", "--save_steps", "0"
    )
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    for name in ("lm_loss", "span_loss", "kl_loss", "mask_loss", "bce_loss", "lr"):
        assert name in result["history"][-1]
    assert result["history"][-1]["kl_loss"] > 0  # LoRA moved the LM away from its frozen self
    model = AutoModel.from_pretrained(f"{result['final_checkpoint']}/model", trust_remote_code=True)
    assert not any("lora_" in n for n, _ in model.named_parameters())  # LoRA merged into the export


def test_adapter_and_merged_exports_load_and_agree(tmp_path):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from modeling_plum.convert import build_tiny

    torch.manual_seed(0)
    model, processor = build_tiny()
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=trainer.LORA_TARGETS)
    peft_model = get_peft_model(copy.deepcopy(model), lora)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # as after training, so that the adapter matters
            torch.nn.init.normal_(parameter, std=0.5)
    trainer.export_model(peft_model, processor, tmp_path / "merged", "merged")
    trainer.export_model(peft_model, processor, tmp_path / "adapter", "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    merged = AutoModel.from_pretrained(str(tmp_path / "merged"), trust_remote_code=True)
    adapted = AutoModel.from_pretrained(str(tmp_path / "adapter"), trust_remote_code=True)
    assert any("lora_" in n for n, _ in adapted.named_parameters())
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    ids = torch.randint(3, 300, (1, 30))
    ids[0, 1 : 1 + model.config.llava_config.image_seq_length] = model.config.image_token_index
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = peft_model.get_base_model().llava(input_ids=ids, pixel_values=pixels).logits
        plain = model.llava(input_ids=ids, pixel_values=pixels).logits
        for loaded in (merged, adapted):
            assert torch.allclose(
                loaded.llava(input_ids=ids, pixel_values=pixels).logits, expected, atol=1e-4
            )
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter did change the model
    with pytest.raises(ValueError, match="export_format must be one of"):
        trainer.export_model(peft_model, processor, tmp_path / "x", "gguf")


def test_resume_gives_the_same_losses(toy_folder, tmp_path):
    straight = run(toy_folder, tmp_path / "a", "--max_steps", "6", "--save_steps", "3")
    (tmp_path / "b").mkdir()
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    resumed = run(
        toy_folder,
        tmp_path / "b",
        "--max_steps",
        "6",
        "--save_steps",
        "3",
        "--resume_from_checkpoint",
        "latest",
    )
    assert [h["step"] for h in resumed["history"]] == [4, 5, 6]
    for a, b in zip(straight["history"][3:], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


def test_interrupted_save_keeps_the_previous_checkpoint(toy_folder, tmp_path, monkeypatch):
    calls = []
    original = trainer.export_model

    def export_then_fail(model, processor, folder, export_format):
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-save")
        original(model, processor, folder, export_format)

    monkeypatch.setattr(trainer, "export_model", export_then_fail)
    with pytest.raises(KeyboardInterrupt):
        run(toy_folder, tmp_path / "run", "--max_steps", "4", "--save_steps", "2")
    assert [p.name for p in trainer.checkpoints(tmp_path / "run")] == ["checkpoint-2"]
    assert trainer.resolve_resume("latest", tmp_path / "run").name == "checkpoint-2"
    state = json.loads((tmp_path / "run" / "checkpoint-2" / trainer.STATE_FILE).read_text())
    assert state["step"] == 2
    monkeypatch.setattr(trainer, "export_model", original)
    resumed = run(
        toy_folder,
        tmp_path / "run",
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
    )
    assert [h["step"] for h in resumed["history"]] == [3, 4]


@pytest.fixture
def local_hub_online(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)


def test_push_to_a_local_hub_survives_a_failure(toy_folder, tmp_path, local_hub_online):
    with HubStub(fail_commits=1, fail_status=507) as hub:  # a status huggingface_hub does not retry itself
        result = run(
            toy_folder,
            tmp_path / "run",
            "--max_steps",
            "4",
            "--save_steps",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "me/plum-toy",
            "--hub_token",
            "hf_test",
            "--hub_endpoint",
            hub.endpoint,
        )
    assert [h["step"] for h in result["history"]] == [1, 2, 3, 4]  # the failed upload did not stop training
    assert len(hub.commits) == 2  # checkpoint-2 (after one retry) and checkpoint-4
    assert all("model.safetensors" in c["files"] and "config.json" in c["files"] for c in hub.commits)
    final = next(c for c in hub.commits if c["summary"] == "checkpoint 4")
    assert result["commit_url"].endswith(final["oid"])  # the final push, awaited
    commit_calls = [path for method, path in hub.requests if "/commit/" in path]
    assert len(commit_calls) == 3  # one failure, our retry, the final push


def test_an_upload_that_never_succeeds_does_not_stop_training(toy_folder, tmp_path, local_hub_online):
    with HubStub(fail_commits=100, fail_status=507) as hub:
        result = run(
            toy_folder,
            tmp_path / "run",
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "me/plum-toy",
            "--hub_token",
            "hf_test",
            "--hub_endpoint",
            hub.endpoint,
            "--upload_retries",
            "2",
        )
    assert [h["step"] for h in result["history"]] == [1, 2] and not hub.commits
    assert "commit_url" not in result
    assert len([p for m, p in hub.requests if "/commit/" in p]) == 3  # the first try and 2 retries


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_stay_in_sync(toy_folder, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "run"
    with HubStub() as hub:
        env = {
            **os.environ,
            "PYTHONPATH": str(root),
            "HF_HUB_OFFLINE": "0",
            "OMP_NUM_THREADS": "1",
            "ACCELERATE_USE_CPU": "true",
        }  # gloo processes on the CPU
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            str(root / "tests" / "distributed_run.py"),
            "--dataset",
            str(toy_folder),
            "--output_dir",
            str(out),
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "1",
            "--warmup_steps",
            "1",
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "me/plum-ddp",
            "--hub_token",
            "hf_test",
            "--hub_endpoint",
            hub.endpoint,
        ]
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["steps"] == ranks[1]["steps"] == [1, 2]  # both processes stepped
    assert ranks[0]["checksum"] == pytest.approx(
        ranks[1]["checksum"], rel=0, abs=1e-9
    )  # gradients synchronised
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == [
        "checkpoint-2"
    ]
    assert len(hub.commits) == 1  # only rank 0 pushed
