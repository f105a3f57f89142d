"""Load a built repository folder back the way a user would, printing each line before running it.

    python builders/load_back.py demo/hub digits_cnn_seed

Runs ``datasets.load_dataset`` on the folder (offline), rebuilds the best last-epoch model of the test
split as a torch module and checks it reproduces its recorded test accuracy on the zoo's image data.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(repo: str, config: str) -> int:
    from modelzoos.loading import build_module, config_info, evaluate_row, load_zoo

    path = str(Path(repo).resolve())
    lines = [
        "from modelzoos.loading import load_zoo  # datasets.load_dataset, cached by the folder's contents",
        f'ds = load_zoo("{path}", "{config}", split="test")',
        f'last = load_zoo("{path}", "{config}", split="test", filters=[("epoch", "==", EPOCH)])',
    ]
    print("\n".join(">>> " + line for line in lines[:2]))
    ds = load_zoo(path, config, split="test")
    print(ds)
    epoch = max(ds["epoch"])
    print(">>> " + lines[2].replace("EPOCH", str(epoch)))
    last = load_zoo(path, config, split="test", filters=[("epoch", "==", epoch)])
    best = max(range(len(last)), key=lambda i: last[i]["test_acc"])
    row = last.with_format("numpy")[best]
    print(">>> from modelzoos.loading import build_module, config_info, evaluate_row")
    print(f'>>> info = config_info("{path}", "{config}")')
    info = config_info(path, config)
    print(">>> model = build_module(row, info)")
    print(build_module(row, info))
    print(">>> evaluate_row(row, info)  # (test loss, test accuracy) on the zoo's image data")
    _, acc = evaluate_row(row, info)
    print(f"model {int(row['model_id'])}, epoch {epoch}: recorded test_acc {float(row['test_acc']):.4f}, "
          f"rebuilt module {acc:.4f}")
    return 0 if abs(acc - float(row["test_acc"])) < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
