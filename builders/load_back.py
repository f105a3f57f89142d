"""Load a built repository folder back the way a user would, printing each line before running it.

    python builders/load_back.py demo/hub digits_cnn_seed

Every line printed after ``>>>`` is exactly what runs (pasted into ``python`` in this order, the lines run
as shown): load the test split through ``load_zoo`` (datasets, cached by the folder's contents), pick the
best model of the last epoch, rebuild it as a torch module and check it reproduces its recorded test
accuracy on the zoo's image data. Exit code 1 when it does not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def transcript(repo: str, config: str) -> list[str]:
    """The lines of the session, with the repository folder and config filled in."""
    r, c = json.dumps(repo), json.dumps(config)
    return [
        "from modelzoos.loading import build_module, config_info, evaluate_row, load_zoo",
        f'ds = load_zoo({r}, {c}, split="test")  # datasets.load_dataset, cached by the folder\'s contents',
        "ds",
        f'last = load_zoo({r}, {c}, split="test", filters=[("epoch", "==", max(ds["epoch"]))])',
        'row = max(last.with_format("numpy"), key=lambda r: r["test_acc"])  # the best model of the last epoch',
        f"info = config_info({r}, {c})",
        "model = build_module(row, info)",
        "model",
        "loss, acc = evaluate_row(row, info)  # test loss and accuracy on the zoo's image data",
        "print(f\"model {row['model_id']}, epoch {row['epoch']}: recorded test_acc {row['test_acc']:.4f}, "
        "rebuilt module {acc:.4f}\")",
    ]


def main(repo: str, config: str) -> int:
    namespace: dict = {}
    for line in transcript(str(Path(repo).resolve()), config):
        print(">>> " + line, flush=True)
        exec(compile(line, "<load_back>", "single"), namespace)  # "single": expressions echo as in the REPL
    return 0 if abs(namespace["acc"] - float(namespace["row"]["test_acc"])) < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
