"""The entrypoint of model images: `docker run <model image> eval | info | --help`.

`eval` runs the very runner of `swcli model eval` on the model baked in at /opt/swcli/model against the dataset
mounted at /dataset (`--volumes-from` a dataset container, or `-v DIR:/dataset`) and writes /output. Failures are
one line on stderr and a non-zero exit code, like the CLI.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MODEL_DIR = Path(os.environ.get("SWCLI_MODEL_DIR", "/opt/swcli/model"))
DATASET_DIR = Path(os.environ.get("SWCLI_DATASET_DIR", "/dataset"))
OUTPUT_DIR = Path(os.environ.get("SWCLI_OUTPUT_DIR", "/output"))

USAGE = f"""usage: docker run [--volumes-from DATASET_CONTAINER | -v DATASET_DIR:/dataset] -v OUT:/output IMAGE [eval|info|--help]

  eval   run the model over every record of the dataset at {DATASET_DIR}; write metrics.json, results.jsonl
         and run.json to {OUTPUT_DIR} (default command). Options: --batch-size N, --device cpu|cuda,
         --shard I/N (default: JOB_COMPLETION_INDEX/JOB_COMPLETION_COUNT when set), --output DIR
  merge  PARTS_DIR --output DIR [--wait SECONDS]: cmp over the shard parts in PARTS_DIR's subfolders,
         first waiting up to SECONDS for every shard's part to finish (what the Kubernetes merge Job does)
  info   print the model manifest baked into the image
The image runs as uid 1000: give it a writable /output (e.g. `--user $(id -u):$(id -g)`, or a folder it may write).
"""


def _eval(args: list[str]) -> int:
    from builder.cli._summary import print_summary
    from builder.errors import EvalError
    from builder.services.model_eval import EvalOptions, evaluate

    batch_size = device = shard = None
    output = OUTPUT_DIR
    it = iter(args)
    for arg in it:
        if arg == "--batch-size":
            batch_size = int(next(it))
        elif arg == "--device":
            device = next(it)
        elif arg == "--shard":
            shard = next(it)
        elif arg == "--output":
            output = Path(next(it))
        else:
            raise EvalError(f"unknown eval option {arg!r}; see --help")
    if not (DATASET_DIR / "manifest.json").is_file():
        raise EvalError(f"no dataset mounted at {DATASET_DIR}: run with --volumes-from <dataset container> "
                        f"or -v <dataset dir>:{DATASET_DIR}")
    result = evaluate(EvalOptions(model=str(MODEL_DIR), dataset=str(DATASET_DIR), output_dir=output,
                                  batch_size=batch_size, device=device, record=False, shard=shard))
    if result.metrics is not None:
        print_summary(result.metrics, result.run)
    print(f"outputs: {output}")
    return 0


def _merge(args: list[str]) -> int:
    """`merge PARTS_DIR --output DIR [--wait SECONDS]`: every subfolder of PARTS_DIR is one shard part."""
    from builder.api.model import PipelineHandler
    from builder.cli._summary import print_summary
    from builder.errors import EvalError
    from builder.loader import load_class
    from builder.services.model_build import model_source
    from builder.services.model_eval import make_handler
    from builder.services.sharding import merge_parts, wait_for_parts

    usage = "usage: merge PARTS_DIR --output DIR [--wait SECONDS]"
    if not args or args[0].startswith("-"):
        raise EvalError(usage)
    parts_dir, options = Path(args[0]), dict(zip(args[1::2], args[2::2]))
    if len(args) % 2 == 0 or "--output" not in options or set(options) - {"--output", "--wait"}:
        raise EvalError(usage)
    try:
        wait = float(options.get("--wait", 0))
    except ValueError:
        raise EvalError(f"--wait takes seconds, got {options['--wait']!r}") from None
    # load the handler (and with it torch and the like) before waiting: the imports overlap the shards' work
    root, spec, _ = model_source(str(MODEL_DIR))
    handler = make_handler(load_class(spec.ppl, root, PipelineHandler, spec_file=spec.path, field="run.ppl"), spec.ppl, None)
    if wait > 0:
        _warm_metrics()
        wait_for_parts(parts_dir, wait, log=print)
    parts = sorted(p for p in parts_dir.iterdir() if p.is_dir()) if parts_dir.is_dir() else []
    metrics, run = merge_parts(parts, Path(options["--output"]), handler)
    print_summary(metrics, run)
    print(f"outputs: {options['--output']}")
    return 0


def _warm_metrics() -> None:
    """Import scikit-learn's metrics now, while the merge would only wait: it is most of `cmp`'s time (~1.5 s)."""
    try:
        import sklearn.metrics  # noqa: F401
    except ImportError:  # a handler without @multi_classification may not need it
        pass


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "eval"
    if command in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    from builder.errors import SwcliError

    try:
        if command == "eval":
            return _eval(args[1:])
        if command == "merge":
            return _merge(args[1:])
        if command == "info":
            print(json.dumps(json.loads((MODEL_DIR / "manifest.json").read_text()), indent=2))
            return 0
        print(f"swcli: error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    except SwcliError as err:
        print(f"swcli: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
