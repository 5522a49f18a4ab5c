"""SASRec through RecBole on RecBole-format atomic files, for the peer table (`radgr bench peers`).

Runs in its own virtual environment (`make peers-venv`: RecBole 1.2.1 needs numpy < 2 and old pandas/scipy),
so it imports nothing from this project. It trains SASRec with RecBole's own trainer on the given
train/valid/test files ("benchmark" mode: the split the files define), early-stops on valid NDCG@10, then
writes for every test row the top `--depth` items of a full ranking, keyed by the original user id and
naming items by their original ids, so the project's harness scores them with the same metric code as
every other row. RecBole's own test metrics are written beside them as a cross-check.

`--refit-epochs N` is the refit protocol of `radgr train sft --split train+valid`: the valid rows join the
training file, training runs exactly N epochs (the train-only run's best epoch + 1: RecBole counts from 0)
at the same constant learning rate, and the last epoch is kept (valid is trained on, so it cannot stop it).

    .venv-recbole/bin/python bench/sasrec_recbole.py --data ../shared/data/amazon-scientific \
        --name Scientific --out runs/peers/sasrec-amazon.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path


def read_index(path: Path) -> dict[str, str]:
    """`original-id <tab> index` lines -> {index: original id}."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            original, idx = line.rsplit("\t", 1)
            out[idx.strip()] = original.strip()
    return out


def stage_split_files(data: Path, work: Path, name: str, refit: bool) -> None:
    """RecBole wants <data_path>/<dataset>/<dataset>.<split>.inter: the given files, linked; for a refit the
    training file is the train rows followed by the valid rows (each a history -> valid item row)."""
    (work / name).mkdir()
    for split in ("train", "valid", "test"):
        file = f"{name}.{split}.inter"
        if refit and split == "train":
            valid_rows = (data / f"{name}.valid.inter").read_text(encoding="utf-8").splitlines()[1:]
            train_text = (data / file).read_text(encoding="utf-8").rstrip("\n")
            (work / name / file).write_text(train_text + "\n" + "\n".join(valid_rows) + "\n", encoding="utf-8")
        else:
            os.symlink((data / file).resolve(), work / name / file)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with <name>.train/valid/test.inter")
    ap.add_argument("--name", default="Scientific")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--stopping-step", type=int, default=10, help="epochs without a better valid NDCG@10")
    ap.add_argument("--depth", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--budget-min", type=float, default=None,
                    help="stop training after this many minutes and keep the best epoch so far (stated in the output)")
    ap.add_argument("--refit-epochs", type=int, default=None,
                    help="train on train+valid for exactly this many epochs and keep the last (see the docstring)")
    args = ap.parse_args()
    refit = args.refit_epochs is not None
    if refit and args.refit_epochs < 1:
        ap.error("--refit-epochs must be >= 1")

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    args.data, args.out = args.data.resolve(), args.out.resolve()
    work = Path(tempfile.mkdtemp(prefix="recbole-"))
    os.chdir(work)  # RecBole writes log_tensorboard/ into the working directory
    stage_split_files(args.data, work, args.name, refit)
    settings = {
        "data_path": str(work), "checkpoint_dir": str(work / "saved"), "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"], "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "TO", "mode": "full", "group_by": "user"},
        "train_neg_sample_args": None, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 50,
        "metrics": ["Recall", "NDCG"], "topk": [10, 50], "valid_metric": "NDCG@10",
        "epochs": args.refit_epochs if refit else args.epochs,
        "stopping_step": args.refit_epochs + 1 if refit else args.stopping_step, "train_batch_size": 2048,
        "eval_batch_size": 2048, "learning_rate": 0.001, "seed": args.seed, "reproducibility": True,
        "use_gpu": False, "device": "cpu", "show_progress": False, "worker": 0, "log_wandb": False,
    }
    config = Config(model="SASRec", dataset=args.name, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = SASRec(config, train._dataset).to(config["device"])
    trainer = Trainer(config, model)

    best = {"score": float("-inf"), "state": None, "epoch": -1}
    curve = []
    start = time.perf_counter()

    class OutOfBudget(Exception):
        pass

    def keep_best(epoch: int, valid_score: float) -> None:  # in memory: RecBole's own checkpoint is a pickle
        curve.append({"epoch": epoch, "valid_ndcg@10": float(valid_score)})
        if refit or valid_score > best["score"]:  # a refit keeps its last epoch
            best.update(score=float(valid_score), state=copy.deepcopy(model.state_dict()), epoch=epoch)
        print(f"epoch {epoch}: valid NDCG@10 {valid_score:.4f} (best {best['score']:.4f} at {best['epoch']}), "
              f"{(time.perf_counter() - start) / 60:.1f} min", flush=True)
        if args.budget_min is not None and time.perf_counter() - start > 60 * args.budget_min:
            raise OutOfBudget

    stopped_by_budget = False
    try:
        trainer.fit(train, valid, verbose=False, saved=False, callback_fn=keep_best)
    except OutOfBudget:
        stopped_by_budget = True
    train_s = time.perf_counter() - start
    model.load_state_dict(best["state"])
    recbole_test = {k: float(v) for k, v in trainer.evaluate(test, load_best_model=False).items()}

    users, items = read_index(args.data / f"{args.name}.user2index"), read_index(args.data / f"{args.name}.item2index")
    rankings: dict[str, list[str]] = {}
    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        for batch in test:
            interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)  # padding item 0 already -inf
            top = torch.topk(scores, min(args.depth, scores.shape[1] - 1), dim=1).indices.numpy()
            user_tokens = dataset.id2token(dataset.uid_field, interaction[dataset.uid_field].numpy())
            for user, row in zip(user_tokens, top, strict=True):
                rankings[users[str(user)]] = [items[str(t)] for t in dataset.id2token(dataset.iid_field, row)]
    rank_s = time.perf_counter() - start
    out = {
        "system": f"SASRec (RecBole 1.2.1), refit on train+valid, {args.refit_epochs} epochs" if refit
        else "SASRec (RecBole 1.2.1)", "refit_epochs": args.refit_epochs,
        "key": "user_id", "rankings": rankings, "train_s": train_s,
        "rank_ms_per_session": 1000 * rank_s / max(len(rankings), 1), "best_epoch": best["epoch"],
        "stopped_by_budget": stopped_by_budget,
        "valid_curve": curve, "recbole_test": recbole_test,
        "settings": {k: v for k, v in settings.items() if k not in ("data_path", "checkpoint_dir")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(args.out)
    print(f"SASRec: best epoch {best['epoch']}, test {recbole_test}, {len(rankings)} rankings -> {args.out}")


if __name__ == "__main__":
    main()
