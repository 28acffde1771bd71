#!/usr/bin/env python3
"""Runs docs/deploy/docker-compose.yml with plain podman commands.

podman-compose 1.0.3 (Debian 12) cannot run a service with network_mode:
host (it adds the project network too, which podman refuses), and podman
4.3 without systemd runs no health checks by itself. This driver covers what
the cluster's compose file uses, with every service on the host's network:
YAML anchors and merge keys, ${VAR}, ${VAR:-default} and $$, several -f
files (later ones override per service, key by key), image, entrypoint,
command, environment, user, restart, stop_signal, named volumes and bind
mounts, healthcheck (run with `podman healthcheck run`), and depends_on with
service_started, service_healthy and service_completed_successfully.

  compose-run.py -p NAME -f FILE [-f FILE...] [--timeout S] up
  compose-run.py -p NAME -f FILE [-f FILE...] down
  compose-run.py -p NAME -f FILE [-f FILE...] logs
  compose-run.py -p NAME -f FILE [-f FILE...] exec SERVICE CMD...

up starts the services in dependency order and returns once every service
with a health check is healthy and every one-shot service depended on has
exited 0 (as `docker compose up -d --wait`); down removes the project's
containers and volumes (found by label, so a failed up is cleaned too).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import yaml

LABEL = "io.pgshard.compose.project"


def interpolate(v):
    if isinstance(v, dict):
        return {k: interpolate(x) for k, x in v.items()}
    if isinstance(v, list):
        return [interpolate(x) for x in v]
    if not isinstance(v, str):
        return v

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3)
        val = os.environ.get(name)
        if op == ":-" and not val:
            return default
        if op == "-" and val is None:
            return default
        return val or ""

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", sub, v)


def merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if k in a else v
        return out
    return b


def load(files):
    services, volumes = {}, {}
    for f in files:
        with open(f) as fh:
            doc = yaml.safe_load(fh) or {}
        doc = interpolate(doc)
        base = os.path.dirname(os.path.abspath(f))
        for name, svc in (doc.get("services") or {}).items():
            svc = dict(svc)
            svc.setdefault("_dir", base)
            services[name] = merge(services.get(name, {}), svc)
        volumes.update(doc.get("volumes") or {})
    return services, volumes


def env_list(env):
    if isinstance(env, dict):
        return [f"{k}={'' if v is None else v}" for k, v in env.items()]
    return list(env or [])


def deps(svc):
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {k: "service_started" for k in d}
    return {k: (v or {}).get("condition", "service_started") for k, v in d.items()}


def order(services):
    done, out = set(), []

    def visit(n, stack=()):
        if n in done:
            return
        if n in stack:
            sys.exit(f"compose-run: dependency cycle at {n}")
        for d in deps(services[n]):
            visit(d, stack + (n,))
        done.add(n)
        out.append(n)

    for n in services:
        visit(n)
    return out


def podman(*args, check=True, capture=False):
    r = subprocess.run(["podman", *args], text=True,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and r.returncode != 0:
        sys.exit(f"compose-run: podman {' '.join(args[:3])}...: exit {r.returncode}"
                 + (f": {r.stderr.strip()}" if capture else ""))
    return r


def cname(project, svc):
    return f"{project}_{svc}_1"


def run_args(project, name, svc):
    if svc.get("network_mode") != "host":
        sys.exit(f"compose-run: service {name}: only network_mode: host is supported here "
                 "(add compose-host.yml)")
    a = ["run", "-d", "--name", cname(project, name), "--label", f"{LABEL}={project}",
         "--network", "host"]
    for e in env_list(svc.get("environment")):
        a += ["-e", e]
    for v in svc.get("volumes") or []:
        src, _, rest = v.partition(":")
        if src.startswith(".") or src.startswith("/"):
            src = os.path.normpath(os.path.join(svc["_dir"], src))
        else:
            src = f"{project}_{src}"
        a += ["-v", f"{src}:{rest}"]
    if "user" in svc:
        a += ["--user", str(svc["user"])]
    if svc.get("restart") not in (None, "no"):
        a += ["--restart", svc["restart"]]
    if "stop_signal" in svc:
        a += ["--stop-signal", svc["stop_signal"]]
    ep = svc.get("entrypoint")
    if ep is not None:
        a += ["--entrypoint", json.dumps(ep) if isinstance(ep, list) else ep]
    a.append(svc["image"])
    cmd = svc.get("command")
    if isinstance(cmd, str):
        cmd = ["sh", "-c", cmd]
    a += cmd or []
    return a


def healthy(project, name, svc):
    hc = svc.get("healthcheck")
    if not hc:
        return state(project, name)[0] == "running"
    test = hc["test"]
    c = cname(project, name)
    if test[0] == "CMD":
        r = subprocess.run(["podman", "exec", c, *test[1:]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    else:
        r = subprocess.run(["podman", "exec", c, "sh", "-c", test[1]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def state(project, name):
    r = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
               cname(project, name), check=False, capture=True)
    if r.returncode != 0:
        return "missing", -1
    s, code = r.stdout.split()
    return s, int(code)


def wait_for(project, services, name, cond, deadline):
    svc = services[name]
    while time.monotonic() < deadline:
        s, code = state(project, name)
        if cond == "service_completed_successfully":
            if s == "exited" and code == 0:
                return
            if s == "exited" and svc.get("restart") in (None, "no"):
                sys.exit(f"compose-run: {name} exited with status {code}")
        elif cond == "service_healthy":
            if s == "running" and healthy(project, name, svc):
                return
        elif s in ("running", "exited"):
            return
        time.sleep(0.5)
    sys.exit(f"compose-run: timed out waiting for {name} ({cond})")


def up(project, services, volumes, timeout):
    deadline = time.monotonic() + timeout
    for v in volumes:
        vn = f"{project}_{v}"
        if podman("volume", "exists", vn, check=False).returncode != 0:
            podman("volume", "create", "--label", f"{LABEL}={project}", vn, capture=True)
    completed = set()
    for name in order(services):
        for d, cond in deps(services[name]).items():
            wait_for(project, services, d, cond, deadline)
            if cond == "service_completed_successfully":
                completed.add(d)
        if state(project, name)[0] == "missing":
            podman(*run_args(project, name, services[name]), capture=True)
            print(f"compose-run: started {name}", flush=True)
    for name, svc in services.items():
        if svc.get("healthcheck"):
            wait_for(project, services, name, "service_healthy", deadline)
        elif name in completed:
            wait_for(project, services, name, "service_completed_successfully", deadline)
    print("compose-run: every service is healthy", flush=True)


def down(project):
    r = podman("ps", "-a", "-q", "--filter", f"label={LABEL}={project}", capture=True)
    ids = r.stdout.split()
    if ids:
        podman("rm", "-f", "-t", "10", *ids, capture=True)
    r = podman("volume", "ls", "-q", "--filter", f"label={LABEL}={project}", capture=True)
    vols = r.stdout.split()
    if vols:
        podman("volume", "rm", "-f", *vols, capture=True)


def logs(project, services):
    for name in services:
        print(f"----- {name} ({' '.join(map(str, state(project, name)))})", flush=True)
        podman("logs", "--tail", "40", cname(project, name), check=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-p", dest="project", required=True)
    p.add_argument("-f", dest="files", action="append", required=True)
    p.add_argument("--timeout", type=float, default=300, help="up: seconds to wait for health")
    p.add_argument("cmd", choices=["up", "down", "logs", "exec"])
    p.add_argument("args", nargs=argparse.REMAINDER)
    o = p.parse_args()
    services, volumes = load(o.files)
    if o.cmd == "up":
        up(o.project, services, volumes, o.timeout)
    elif o.cmd == "down":
        down(o.project)
    elif o.cmd == "logs":
        logs(o.project, services)
    else:
        if not o.args:
            sys.exit("compose-run: exec SERVICE CMD...")
        sys.exit(subprocess.run(["podman", "exec", cname(o.project, o.args[0]), *o.args[1:]]).returncode)


if __name__ == "__main__":
    main()
