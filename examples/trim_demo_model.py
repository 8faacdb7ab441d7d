"""Trim the default model's Acoustic Model at several sparsity targets and compare with a linear probe.

The recipe behind the trimming table in the README. Same data as examples/train_default_model.py
(held-out voices and noises for validation and test). For each target it writes the kept head and
channel indices and the retrained head, which `--rebuild` turns back into trimmed checkpoints
from the untrimmed one (the training machine returns files under 16 MB).

    python3 examples/trim_demo_model.py --words data/words --noise data/noise --base runs/kws12 --out runs/trim
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default_model import add_set_arguments, build_sets  # noqa: E402


def linear_probe(model, sets, device, epochs: int = 30, seed: int = 0) -> dict:
    """A linear layer on the frozen Acoustic Model's mean/max/std-pooled frames: the cheapest head there is."""
    import torch
    import torch.nn.functional as F

    from hear_edge.reference.model import Decoder

    def pooled(data):
        rows = []
        with torch.no_grad():
            for start in range(0, len(data.clips), 256):
                clips = torch.stack([torch.from_numpy(c) for c in data.clips[start:start + 256]]).to(device)
                log_mel, frames, _ = model.preprocessor(clips[:, None], torch.full((len(clips),), clips.shape[1],
                                                                                     device=device))
                hidden, lengths = model.acoustic_model(log_mel, frames)
                rows.append(Decoder.pool(hidden, lengths))
        return torch.cat(rows), torch.tensor(data.targets, device=device)

    torch.manual_seed(seed)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (pooled(sets[s]) for s in ("train", "val", "test"))
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    probe = torch.nn.Linear(train_x.shape[1], len(sets["train"].labels)).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3, weight_decay=1e-4)
    best = (-1.0, 0.0)
    for _ in range(epochs):
        for index in torch.randperm(len(train_x), device=device).split(256):
            loss = F.cross_entropy(probe((train_x[index] - mean) / std), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val = float((probe((val_x - mean) / std).argmax(1) == val_y).float().mean())
            test = float((probe((test_x - mean) / std).argmax(1) == test_y).float().mean())
        best = max(best, (val, test))
    return {"val_accuracy": best[0], "test_accuracy": best[1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words")
    parser.add_argument("--noise")
    parser.add_argument("--base", required=True, help="folder with model.pt, model.config.json, model.labels.txt")
    parser.add_argument("--out", required=True)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    add_set_arguments(parser, work="/tmp/kws-trim-build", train_per_class=4000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mask-lr", type=float, default=5e-3)
    parser.add_argument("--sparsity-weight", type=float, default=100.0)
    parser.add_argument("--sparsity-measure", default="gates", choices=["gates", "sigmoid"])
    parser.add_argument("--rebuild", action="store_true",
                        help="turn <out>/trim_<target>.pt (indices and head) into trimmed checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from hear_edge.reference.model import load_checkpoint
    from hear_edge.training.toolkit import evaluate, write_sidecars
    from hear_edge.training.trim import TrimMasks, remove_masked_units, trim

    base, out = Path(args.base), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rebuild:
        checks = {}
        for target in args.targets:
            saved = torch.load(out / f"trim_{target}.pt", weights_only=True)
            model = load_checkpoint(base / "model.pt", base / "model.config.json")
            model.eval()
            masks = TrimMasks(model)
            masks.set_kept_units(json.loads(saved["kept_units"]))
            head = {k: v for k, v in saved.items() if k != "kept_units"}
            model.load_state_dict({**model.state_dict(), **head})
            trimmed = remove_masked_units(model, masks)
            torch.save(trimmed.state_dict(), out / f"trimmed_{target}.pt")
            labels = (base / "model.labels.txt").read_text().splitlines()
            write_sidecars(out / f"trimmed_{target}.pt", labels, trimmed.config)
            # the trimmed model against the masked one it came from, on clips of 1, 6 and 10 s
            generator = torch.Generator().manual_seed(0)
            differences = []
            with torch.no_grad():
                for seconds in (1.0, 6.0, 10.0):
                    wave = torch.randn(1, 1, int(seconds * 16000), generator=generator) * 0.1
                    length = torch.tensor([wave.shape[-1]])
                    differences.append(float((trimmed(wave, length) - model(wave, length)).abs().max()))
            checks[str(target)] = {"max_abs_logit_diff_trimmed_vs_masked": max(differences)}
            logging.info("rebuilt %s: trimmed vs masked max |logit diff| %.2e", out / f"trimmed_{target}.pt",
                         max(differences))
        (out / "rebuild.json").write_text(json.dumps(checks, indent=2) + "\n")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    sets = build_sets(args.words, args.noise, Path(args.work), args.train_per_class, args.val_per_class,
                      args.test_per_class, args.workers)
    report = {"build_minutes": (time.perf_counter() - started) / 60, "args": vars(args),
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    model = load_checkpoint(base / "model.pt", base / "model.config.json").to(device)
    report["untrimmed"] = {"val_accuracy": evaluate(model, sets["val"], device),
                           "test_accuracy": evaluate(model, sets["test"], device)}
    report["linear_probe"] = linear_probe(model, sets, device)
    logging.info("untrimmed %s, linear probe %s", report["untrimmed"], report["linear_probe"])
    report["trimmed"] = {}
    for target in args.targets:
        result = trim(base / "model.pt", None, out / f"trimmed_{target}.pt", target_sparsity=target,
                      config=base / "model.config.json", epochs=args.epochs, batch_size=args.batch_size,
                      mask_learning_rate=args.mask_lr, sparsity_weight=args.sparsity_weight, patience=2,
                      train_data=sets["train"], val_data=sets["val"], progress=False,
                      sparsity_measure=args.sparsity_measure)
        trimmed = load_checkpoint(result.checkpoint, result.config_file).to(device)
        entry = {"test_accuracy": evaluate(trimmed, sets["test"], device), "val_accuracy": result.best_val_accuracy,
                 "sparsity": result.sparsity, "best_epoch": result.best_epoch, "kept_heads": result.kept_heads,
                 "kept_channels": result.kept_channels, "acoustic_parameters": result.acoustic_parameters,
                 "acoustic_macs_10s": result.acoustic_macs_10s, "history": result.history}
        report["trimmed"][str(target)] = entry
        logging.info("target %.2f: %s", target, {k: v for k, v in entry.items() if k != "history"})
        head = {k: v for k, v in torch.load(result.checkpoint, weights_only=True).items()
                if not k.startswith("acoustic_model.")}
        torch.save({**head, "kept_units": json.dumps(result.kept_units)}, out / f"trim_{target}.pt")
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    report["minutes"] = (time.perf_counter() - started) / 60
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
