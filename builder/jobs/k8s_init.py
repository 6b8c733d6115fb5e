"""The init container of ``--dataset-mount init``: copy only the volumes that hold this pod's records.

It runs in the dataset image, where there is no swcli, so it is a small standard-library Python program, passed
in the container's environment and run by ``sh``. It reads ``/dataset/manifest.json`` (the per-volume record
counts), computes the pod's record range exactly as ``eval --shard $(JOB_COMPLETION_INDEX)/N`` will
(:meth:`builder.evaluate.sharding.Shard.range`), and copies every file of ``/dataset`` except the volumes outside
that range. The eval reader opens volumes lazily, so the ones left out are never missed. Names are only compared
with the manifest's, never joined into a path, so a hostile manifest can make it copy less, not write elsewhere.

A dataset image without ``python3`` (a ``--base-image`` of the user's) gets the whole dataset, as before.
"""

from __future__ import annotations

PROGRAM_ENV = "SWCLI_SLICE_COPY"

PROGRAM = """\
import json, os, shutil, sys
count, index = int(sys.argv[1]), int(os.environ["JOB_COMPLETION_INDEX"])
with open("/dataset/manifest.json") as fh:
    shards = json.load(fh)["shards"]
total = sum(s["records"] for s in shards)
start, stop = index * total // count, (index + 1) * total // count
first, skip = 0, set()
for s in shards:
    if not (first < stop and first + s["records"] > start):
        skip.add(s["file"])
    first += s["records"]
for name in sorted(os.listdir("/dataset")):
    if name in skip:
        continue
    path = os.path.join("/dataset", name)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.copytree(path, os.path.join("/copy", name), symlinks=True)
    else:
        shutil.copy2(path, os.path.join("/copy", name), follow_symlinks=False)
print(f"records {start}..{stop} of {total}: copied {len(shards) - len(skip)} of {len(shards)} volumes")
"""

# the fallback copies the entries, not the folder: `cp -a /dataset/. /copy/` also sets /copy's own times, which
# uid 1000 may not do on an emptyDir it does not own ("preserving times for '/copy/.': Operation not permitted")
SCRIPT = (f'if command -v python3 >/dev/null 2>&1; then exec python3 -I -c "${PROGRAM_ENV}" "$1"; '
          'else exec cp -a /dataset/* /copy/; fi')


def init_command(shards: int) -> list[str]:
    """The init container's command for an Indexed Job of ``shards`` completions."""
    return ["sh", "-c", SCRIPT, "slice-copy", str(shards)]


def init_env() -> list[dict]:
    return [{"name": PROGRAM_ENV, "value": PROGRAM}]
