#!/usr/bin/env python3
"""Check scripts/cluster/sweep-job.yaml (the Kubernetes indexed Job of a trainer sweep) and the
Dockerfile of the image it runs, and print the pod's command for a test to execute.

No cluster and no Docker engine are reachable where the tests run, so this checks what can be
checked without them:
- the manifest parses as YAML, is an indexed batch/v1 Job whose pods all run the same
  `trainer sweep` command on a ReadWriteMany volume they share, and that command (its
  $VARIABLES expanded from the container's env) runs the same grid and training flags as the
  Slurm script's (given as the line its DRY_RUN=1 prints);
- with --dockerfile: every COPY source exists in the build context, every file the sources
  include at compile time (include_str!, include_bytes!) is copied into the build stage, and
  every path and program the pod's command uses is one the final image has (a COPY
  destination, a package it installs, or the volume).

Prints one line (or with --print-pod, the pod's command, env and volume mounts as JSON, for
tests/ to run them locally); exits 1 with a reason.
Needs PyYAML (scripts/requirements-tests.txt).
Usage: check_cluster.py MANIFEST --slurm-command LINE [--dockerfile FILE --context DIR] [--print-pod]
"""
import argparse
import json
import os
import re
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


def expand(line, env):
    """$NAME and ${NAME} in a shell line, from env (as the pod's shell would)."""
    def value(m):
        name = m.group(1) or m.group(2)
        if name not in env:
            fail(f"the command uses ${name}, which the container's env does not set")
        return env[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, line)


def check_job(docs, slurm_command):
    """The manifest's checks; returns (container, its command line, its env, mounts, summary)."""
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
    command = container.get("command", []) + container.get("args", [])
    if command[:2] != ["/bin/sh", "-c"] or len(command) != 3:
        fail(f"expected /bin/sh -c LINE, got {command}")
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    line = expand(command[2], env)
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
    _, slurm_grid = trainer_args(shlex.split(slurm_command))
    if k8s_grid != slurm_grid:
        fail(f"the Job runs {k8s_grid}, the Slurm script {slurm_grid}")
    summary = (
        f"indexed Job of {spec['completions']} pods ({spec.get('parallelism', 1)} at once), "
        f"--out {k8s_out} on ReadWriteMany claim {pvc}, the Slurm script's sweep: {' '.join(k8s_grid)}"
    )
    return command, env, list(mounts.values()), summary


def stages(dockerfile):
    """The Dockerfile's stages: lists of (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", open(dockerfile).read())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            out.append([])
        if not out:
            fail(f"{dockerfile}: an instruction before FROM: {line}")
        out[-1].append((word, rest.strip()))
    return out


def copies(stage):
    """(sources, destination, from-stage) of each COPY of a stage."""
    for word, rest in stage:
        if word != "COPY":
            continue
        args = shlex.split(rest)
        source_stage = next((a.split("=", 1)[1] for a in args if a.startswith("--from=")), None)
        args = [a for a in args if not a.startswith("--")]
        yield args[:-1], args[-1], source_stage


def check_dockerfile(dockerfile, context, command, mounts):
    """The image's checks against the pod's command; returns a summary."""
    all_stages = stages(dockerfile)
    build, final = all_stages[0], all_stages[-1]
    # Every source copied from the build context exists (in the context, minus .dockerignore).
    for stage in all_stages:
        for sources, _, source_stage in copies(stage):
            for src in sources if source_stage is None else []:
                if not os.path.exists(os.path.join(context, src)):
                    fail(f"{dockerfile}: COPY {src}: no such file in the build context {context}")
    ignore = os.path.join(os.path.dirname(dockerfile), os.path.basename(dockerfile) + ".dockerignore")
    ignored = []
    if os.path.exists(ignore):
        ignored = [l.strip().rstrip("/") for l in open(ignore) if l.strip() and not l.startswith("#")]
    # What the build stage has: its COPY sources (relative to its WORKDIR).
    copied = [os.path.normpath(s) for sources, _, f in copies(build) if f is None for s in sources]
    for path in copied:
        if path.split("/")[0] in ignored:
            fail(f"{dockerfile}: COPY {path}, but {ignore} excludes it")
    # Every file the sources include at compile time is in the build stage.
    included = 0
    for root, _, files in os.walk(os.path.join(context, "src")):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', open(path).read()):
                target = os.path.relpath(os.path.normpath(os.path.join(root, m.group(1))), context)
                if not any(target == c or target.startswith(c.rstrip("/") + "/") for c in copied if c != "."):
                    fail(f"{path} includes {target}, which the Dockerfile's build stage does not copy")
                included += 1
    # What the final image has: COPY destinations and apt-installed packages.
    installed = set()
    for word, rest in final:
        if word == "RUN" and "apt-get install" in rest:
            installed.update(w for w in rest.split("apt-get install", 1)[1].split() if not w.startswith("-"))
    destinations = [dest for _, dest, _ in copies(final)]
    line = command[2]
    for token in shlex.split(line.replace("&&", " ")):
        if token.startswith("/") and not any(token.startswith(m.rstrip("/") + "/") for m in mounts):
            if token not in destinations:
                fail(f"the pod's command uses {token}, which the image does not install (COPY destinations: {destinations})")
    programs = [shlex.split(part)[0] for part in re.split(r"&&|;", line.replace("exec ", ""))]
    path_dirs = ["/usr/local/bin", "/usr/bin", "/bin"]
    for program in programs:
        on_path = any(d in path_dirs and os.path.basename(d2) == program
                      for d2 in destinations for d in [os.path.dirname(d2)])
        if not (on_path or program in installed):
            fail(f"the pod's command runs {program}, which the image neither copies onto PATH nor installs")
    return f"; the image copies what it builds from ({included} compile-time includes) and installs {', '.join(programs)}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest")
    p.add_argument("--slurm-command", required=True)
    p.add_argument("--dockerfile")
    p.add_argument("--context", default=".")
    p.add_argument("--print-pod", action="store_true")
    args = p.parse_args()
    with open(args.manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    command, env, mounts, summary = check_job(docs, args.slurm_command)
    if args.dockerfile:
        summary += check_dockerfile(args.dockerfile, args.context, command, mounts)
    if args.print_pod:
        print(json.dumps({"command": command, "env": env, "mounts": mounts}))
    else:
        print(summary)


if __name__ == "__main__":
    main()
