"""``afa finetune``: a tiny pre-trained digits run under SLF / ALF / AFF through the one loop,
evaluated, one table; re-running skips; a run that does not pre-train is refused."""

from __future__ import annotations

import json

import pytest
import torch

from afa.cli.main import main
from afa.runs import load_checkpoint, parse_run_config, write_config
from afa.training.plan import train_run


def _pretrained(out: str, protocol: str = "slf"):
    cfg = parse_run_config(
        {
            "data": {"name": "digits", "val_size": 60},
            # dual BN on the adversarial branch: stage 2 and eval must use the branch named
            "model": {"name": "cnn", "options": {"width": 4}, "dual_bn": True, "bn_branch": "adv"},
            "threat": {"eps": 0.1, "step_size": 0.05, "steps": 2},
            "method": {"name": "afa", "head": "linear", "head_dim": 8},
            "train": {"epochs": 1, "batch_size": 128, "val_examples": 60, "log_every": 100},
            "classifier": {"protocol": protocol, "epochs": 1},
            "eval": {"attacks": ["pgd", "cw"], "pgd_steps": 2, "cw_steps": 2},
            "out_dir": out,
            "name": "pre",
            "device": "cpu",
        }
    )
    train_run(cfg)
    return cfg


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    cfg = _pretrained(str(out))
    argv = [
        "finetune", str(cfg.run_dir), "classifier.epochs=1",
        "--protocols", "slf,alf,aff", "--attacks", "pgd", "--n", "16", "--no-sanity",
    ]  # fmt: skip
    return cfg, argv


def test_three_runs_and_one_table(finetuned, capsys):
    cfg, argv = finetuned
    assert main(argv) == 0
    printed = capsys.readouterr().out
    run = cfg.run_dir
    table = json.loads((run / "finetune.json").read_text())
    rows = {r["protocol"]: r for r in table["rows"]}
    assert list(rows) == ["slf", "alf", "aff"]
    for p, row in rows.items():
        d = run.parent / f"pre-{p}"
        assert row["run_dir"] == str(d)
        ev = json.loads((d / "eval.json").read_text())
        assert ev["bn_branch"] == "adv" == row["bn_branch"]
        assert ev["n_examples"] == row["n_examples"] == 16
        assert row["clean_acc"] == ev["clean_acc"] and row["robust_acc"] == ev["robust_acc"]
        # only the attack asked for, not the run's eval.attacks (pgd, cw)
        assert list(row["attacks"]) == list(ev["attacks"]) == ["PGD-2 (CE, BN eval)"]
        assert row["robust_acc"] <= row["attacks"]["PGD-2 (CE, BN eval)"] <= row["clean_acc"]
        assert row["train_time_s"] > 0 and row["eval_time_s"] > 0
        saved = parse_run_config(load_checkpoint(d / "last.pt")["config"])
        assert saved.classifier.protocol == p and saved.classifier.epochs == 1
        assert saved.classifier.encoder == str(run / "last.pt")
        assert saved.classifier.batch_size == (128 if p == "aff" else 512)
        stages = [json.loads(line)["stage"] for line in (d / "metrics.jsonl").open()]
        assert stages == ["classifier"]  # stage 2 only: pre-training is RUN's
        assert f"| {p.upper()} | adv | 16 |" in printed
    # pre-training (afa: adversarial) 1 epoch; ALF and AFF add their adversarial epoch
    assert {p: r["adversarial_epochs"] for p, r in rows.items()} == {"slf": 1, "alf": 2, "aff": 2}
    assert (run / "finetune.md").read_text().count("\n| ") == 4  # header + 3 rows


def test_stage_two_starts_from_the_encoder_and_trains_the_named_branch(finetuned):
    cfg, _ = finetuned
    run = cfg.run_dir
    encoder = load_checkpoint(run / "last.pt")["model"]
    for p in ("slf", "alf"):  # frozen encoder: every non-head tensor is RUN's
        model = load_checkpoint(run.parent / f"pre-{p}" / "last.pt")["model"]
        body = [k for k in encoder if not k.startswith("head.")]
        assert body and all(torch.equal(model[k], encoder[k]) for k in body), p
        assert not torch.equal(model["head.weight"], encoder["head.weight"])
    aff = load_checkpoint(run.parent / "pre-aff" / "last.pt")["model"]
    clean = [k for k in encoder if ".clean." in k and k.endswith("running_mean")]
    adv = [k for k in encoder if ".adv." in k and k.endswith("running_mean")]
    assert clean and adv
    # AFF trains the whole network on model.bn_branch (adv): the clean BN branch is untouched
    assert all(torch.equal(aff[k], encoder[k]) for k in clean)
    assert any(not torch.equal(aff[k], encoder[k]) for k in adv)


def test_rerun_skips_finished_protocols(finetuned, capsys):
    cfg, argv = finetuned
    run = cfg.run_dir
    if not (run / "finetune.json").exists():
        assert main(argv) == 0
    stamps = {
        p: (run.parent / f"pre-{p}" / "eval.json").stat().st_mtime_ns for p in ("slf", "alf", "aff")
    }
    before = json.loads((run / "finetune.json").read_text())["rows"]
    capsys.readouterr()
    assert main(argv) == 0
    assert "| AFF | adv | 16 |" in capsys.readouterr().out
    after = json.loads((run / "finetune.json").read_text())["rows"]
    assert after == before
    for p, t in stamps.items():
        assert (run.parent / f"pre-{p}" / "eval.json").stat().st_mtime_ns == t, p


def test_a_run_that_does_not_pretrain_is_refused(tmp_path, capsys):
    cfg = parse_run_config(
        {"data": {"name": "digits"}, "method": {"name": "pgd-at"}, "out_dir": str(tmp_path)}
    )
    write_config(cfg, cfg.run_dir)
    assert main(["finetune", str(cfg.run_dir), "--protocols", "slf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'pgd-at' trains its classifier end to end" in err and "acl" in err
    assert not (tmp_path / f"{cfg.run_dir.name}-slf").exists()


def test_unknown_protocol_is_refused_before_training(tmp_path, capsys):
    assert main(["finetune", str(tmp_path), "--protocols", "slf,sfl"]) == 2
    err = capsys.readouterr().err
    assert "--protocols: unknown protocol 'sfl'" in err


def test_a_protocol_batch_above_the_training_set_is_one_line(finetuned, capsys):
    cfg, _ = finetuned
    argv = ["finetune", str(cfg.run_dir), "data.train_size=100", "--protocols", "slf"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "classifier.batch_size: 512 (the slf default) exceeds the 100 training examples" in err


def test_runs_without_their_pretrained_encoder_are_refused(finetuned, tmp_path, capsys):
    cfg, argv = finetuned
    if not (cfg.run_dir.parent / "pre-slf").exists():
        assert main(argv) == 0
    capsys.readouterr()
    # a classifier-only run: its encoder is another run's
    assert main(["finetune", str(cfg.run_dir.parent / "pre-slf"), "--protocols", "alf"]) == 2
    assert "a classifier-only run (classifier.encoder:" in capsys.readouterr().err
    # a run whose own stage 2 was AFF fine-tuned its encoder away
    aff = _pretrained(str(tmp_path), protocol="aff")
    assert main(["finetune", str(aff.run_dir), "--protocols", "slf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fine-tuned the encoder" in err
    assert not (tmp_path / "pre-slf").exists()
