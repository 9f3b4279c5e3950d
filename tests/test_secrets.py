"""No secret from the environment ends up in any file a run writes (a real offline W&B run)."""

from __future__ import annotations

import os
from pathlib import Path

from cli import SMALL_SYNTHETIC_SET, run_module

from hpa.core.secrets import REDACTED, redact

SECRETS = {
    "WANDB_API_KEY": "wandbsecret0123456789abcdef0123456789abcd",
    "MY_SERVICE_KEY": "servicekey-7f3a9c",
    "HF_TOKEN": "hf_tokenvalue_91b2",
    "DB_PASSWORD": "pa55w0rd-42x",
    "AWS_SECRET_ACCESS_KEY": "awssecret/abc+def",
}


def test_redact_replaces_secret_values_and_secret_keys() -> None:
    config = {"a": "x-hf_tokenvalue_91b2-y", "api_token": "anything", "n": [1, "plain"]}
    redacted = redact(config, secrets=["hf_tokenvalue_91b2"])
    assert redacted == {"a": f"x-{REDACTED}-y", "api_token": REDACTED, "n": [1, "plain"]}


def test_no_secret_in_any_file_of_an_offline_wandb_run(tmp_path: Path) -> None:
    environment = {**os.environ, **SECRETS, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    environment["WANDB_DIR"] = str(tmp_path / "run")
    run_dir = tmp_path / "run"
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={tmp_path / 'data'}",
        *SMALL_SYNTHETIC_SET,
        "model=cnn",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        "data.num_workers=0",
        "logger=wandb",
        # a user passing a token to the config through the environment
        "+notify.token=${oc.env:HF_TOKEN}",
        "+notify.url='https://example.org/?key=${oc.env:MY_SERVICE_KEY}'",
        env=environment,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    written = [path for path in run_dir.rglob("*") if path.is_file()]
    assert any("wandb" in path.parts for path in written)  # the W&B run was recorded
    assert any(path.suffix == ".ckpt" for path in written)
    for name, secret in SECRETS.items():
        assert secret not in output, f"{name} in the console output"
        for path in written:
            assert secret.encode() not in path.read_bytes(), f"{name} in {path}"
    log = (run_dir / "train.log").read_text()
    assert "token: '***'" in log or f"token: {REDACTED}" in log
