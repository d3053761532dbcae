#!/usr/bin/env python3
"""Check scripts/cluster/sweep-job.yaml, the Kubernetes indexed Job of a trainer sweep.

No cluster is reachable where the tests run, so this checks what can be checked without one:
the manifest parses as YAML, is an indexed batch/v1 Job whose pods all run the same
`trainer sweep` command on a ReadWriteMany volume they share, and that command runs the same
grid and training flags as the Slurm script's (given as the line its DRY_RUN=1 prints).

Needs PyYAML (scripts/requirements-tests.txt). Prints one line; exits 1 with a reason.
Usage: check_cluster.py MANIFEST --slurm-command LINE
"""
import argparse
import shlex
import sys

import yaml


def fail(why):
    print(f"check_cluster: FAILED: {why}", file=sys.stderr)
    sys.exit(1)


def trainer_args(argv):
    """The sweep's grid and training flags: argv from `sweep` on, without --out's value."""
    if "sweep" not in argv:
        fail(f"no `trainer sweep` in {argv}")
    args = argv[argv.index("sweep") + 1 :]
    if "--out" not in args:
        fail(f"no --out in {args}")
    i = args.index("--out")
    out = args[i + 1]
    grid = args[:i] + args[i + 2 :]
    # Where the data lives is the machine's business, not the sweep's.
    if "--data-dir" in grid:
        j = grid.index("--data-dir")
        grid = grid[:j] + grid[j + 2 :]
    return out, grid


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest")
    p.add_argument("--slurm-command", required=True)
    args = p.parse_args()
    with open(args.manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    jobs = [d for d in docs if d.get("kind") == "Job"]
    claims = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    if len(jobs) != 1:
        fail(f"{len(jobs)} Jobs in the manifest")
    job = jobs[0]
    spec = job["spec"]
    if job.get("apiVersion") != "batch/v1" or spec.get("completionMode") != "Indexed":
        fail("not an indexed batch/v1 Job")
    if not (isinstance(spec.get("completions"), int) and spec["completions"] >= 1):
        fail(f"completions {spec.get('completions')}")
    if spec.get("parallelism", 1) > spec["completions"]:
        fail("more pods at once than completions")
    pod = spec["template"]["spec"]
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        fail(f"restartPolicy {pod.get('restartPolicy')}")
    (container,) = pod["containers"]
    if not container.get("image"):
        fail("no image")
    line = " ".join(container.get("command", []) + container.get("args", []))
    if "exec trainer sweep" not in line:
        fail(f"the pods do not run `trainer sweep`: {line}")
    k8s_out, k8s_grid = trainer_args(shlex.split(line.split("exec ", 1)[1]))
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    shared = [n for n, path in mounts.items() if k8s_out.startswith(path.rstrip("/") + "/")]
    if not shared:
        fail(f"--out {k8s_out} is on no mounted volume ({mounts})")
    pvc = volumes[shared[0]].get("persistentVolumeClaim", {}).get("claimName")
    if pvc not in claims or "ReadWriteMany" not in claims[pvc]["spec"]["accessModes"]:
        fail(f"--out's volume is not a ReadWriteMany claim of the manifest ({pvc})")
    _, slurm_grid = trainer_args(shlex.split(args.slurm_command))
    if k8s_grid != slurm_grid:
        fail(f"the Job runs {k8s_grid}, the Slurm script {slurm_grid}")
    print(
        f"indexed Job of {spec['completions']} pods ({spec.get('parallelism', 1)} at once), "
        f"--out {k8s_out} on ReadWriteMany claim {pvc}, the Slurm script's sweep: {' '.join(k8s_grid)}"
    )


if __name__ == "__main__":
    main()
