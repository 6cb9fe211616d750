"""Run mteb on a GGUF quant with QwenEmbedEncoder.

    python examples/mteb_evaluate.py [path/to/model.gguf] [TASK ...]      # pip install "qwen-embed[mteb]"

With task names (for example `SciFact STS12`) it evaluates them (mteb downloads the data sets
once); without, it runs mteb's offline mock tasks, which check the wiring in about a minute
and need no network. `--quick` runs four mock tasks only. Without a model path a small
random-weight model is built.
"""

from __future__ import annotations

import sys

import mteb

from qwen_embed.integrations.mteb import QwenEmbedEncoder
from qwen_embed.testing import demo_model

QUICK = ("MockRetrievalTask", "MockSTSTask", "MockClassificationTask", "MockPairClassificationTask")


def main(argv: list[str]) -> None:
    args = [a for a in argv[1:] if a != "--quick"]
    model_path = args[0] if args and args[0].endswith(".gguf") else None
    tasks = [a for a in args if a != model_path]
    model = QwenEmbedEncoder(model=demo_model(model_path))
    meta = model.mteb_model_meta
    print(f"model {meta.name}, {meta.experiment_kwargs}")
    if tasks:
        results = mteb.evaluate(model, mteb.get_tasks(tasks=tasks))
        for result in results.task_results:
            print(f"{result.task_name}: main score {result.get_score():.4f}")
    elif "--quick" in argv:
        from mteb.mocks import ALL_MOCK_TASK_TEST_GRID

        chosen = [t for t in ALL_MOCK_TASK_TEST_GRID if t.metadata.name in QUICK]
        results = mteb.evaluate(model, chosen, cache=None, show_progress_bar=False)
        for result in results.task_results:
            print(f"{result.task_name}: main score {result.get_score():.4f}")
    else:
        print(mteb.mock_run(model).to_markdown())


if __name__ == "__main__":
    main(sys.argv)
