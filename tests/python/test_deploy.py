"""deploy/ refers only to what the binary accepts: every flag and environment variable in the
Dockerfile, the compose file, the Kubernetes manifests, the systemd units with their example
environment files, and the `pumas serve` commands in docs/DEPLOY.md is checked against
`pumas serve <role> --help`; the units pass `systemd-analyze verify` where it exists."""

import functools
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO, pumas_bin

DEPLOY = REPO / "deploy"
ROLES = ("index", "fetch", "mapper", "gateway")


@functools.cache
def accepted(*command: str) -> tuple:
    """(flags, environment variables) that `pumas <command> --help` lists."""
    out = subprocess.run([pumas_bin(), *command, "--help"], check=True, capture_output=True, text=True).stdout
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out)) | {"--help"}
    env = set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", out))
    return flags, env


def check_args(args: list, where: str) -> str:
    """Checks a `pumas ...` argument list; returns the role for `serve <role>` (else "")."""
    args = [str(a) for a in args]
    if args[:1] == ["serve"]:
        assert len(args) > 1 and args[1] in ROLES, f"{where}: unknown role in {args}"
        command = ("serve", args[1])
    else:
        command = (args[0],)
    flags, _ = accepted(*command)
    for arg in args:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert flag in flags, f"{where}: `pumas {' '.join(command)}` has no flag {flag}"
    # The binary itself agrees that the arguments parse (positional values included).
    probe = subprocess.run([pumas_bin(), *args, "--help"], capture_output=True, text=True)
    assert probe.returncode == 0, f"{where}: pumas {' '.join(args)} does not parse: {probe.stderr}"
    return command[1] if command[0] == "serve" else ""


def check_env(names, role: str, where: str) -> None:
    _, env = accepted("serve", role)
    for name in names:
        assert name in env, f"{where}: `pumas serve {role}` reads no variable {name}"


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))
    cmd = yaml.safe_load(re.search(r"^CMD (.*)$", text, re.M).group(1))
    assert entry == ["pumas"]
    check_args(cmd, "Dockerfile CMD")
    health = yaml.safe_load(re.search(r"CMD (\[\"pumas\", \"healthcheck\".*\])", text).group(1))
    check_args(health[1:], "Dockerfile HEALTHCHECK")
    assert re.search(r"^USER 10001", text, re.M), "the runtime image runs as a non-root user"
    _, up_env = accepted("up")
    for name in re.findall(r"\b(PUMAS_[A-Z_]+)=", text):
        assert name in up_env, f"Dockerfile: `pumas up` reads no variable {name}"


def test_compose():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    roles = set()
    for name, service in compose["services"].items():
        role = check_args(service["command"], f"compose {name}")
        roles.add(role)
        check_env(service.get("environment", {}).keys(), role, f"compose {name}")
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "pumas"], test
        check_args(test[2:], f"compose {name} healthcheck")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose["volumes"] or source.startswith("./"), f"{name}: volume {source}"
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {source} is not in deploy/"
    assert roles == set(ROLES)


def k8s_documents():
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def test_kubernetes_manifests():
    docs = list(k8s_documents())
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).exists(), resource
    config_maps = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Secret"}
    services = [d for _, d in docs if d["kind"] == "Service"]
    roles = set()
    for file, doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        labels = pod["metadata"]["labels"]
        assert all(doc["spec"]["selector"]["matchLabels"][k] == labels[k]
                   for k in doc["spec"]["selector"]["matchLabels"]), f"{file}: selector"
        for container in pod["spec"]["containers"]:
            where = f"{file} {container['name']}"
            role = check_args(container["args"], where)
            roles.add(role)
            names = {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                names |= set(config_maps[source["configMapRef"]["name"]]["data"])
            check_env(names, role, where)
            for e in container.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], f"{where}: {ref}"
            ports = {p["containerPort"] for p in container["ports"]}
            listen = container["args"][container["args"].index("--listen") + 1]
            assert int(listen.rsplit(":", 1)[1]) in ports, f"{where}: listen port not exposed"
            for probe in ("livenessProbe", "readinessProbe"):
                # The gateway is probed over TCP (its gRPC health follows its backends).
                kind = "tcpSocket" if role == "gateway" else "grpc"
                assert container[probe][kind]["port"] == int(listen.rsplit(":", 1)[1]), f"{where}: {probe} port"
        for volume in pod["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{file}: {volume}"
    assert roles == set(ROLES)
    for service in services:
        selector = service["spec"]["selector"]
        assert any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
                   for _, d in docs if d["kind"] in ("Deployment", "StatefulSet")), f"service {service['metadata']['name']} selects nothing"


def test_systemd_units_and_environment_files(tmp_path):
    for role in ROLES:
        unit = (DEPLOY / "systemd" / f"pumas-{role}.service").read_text()
        exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
        words = shlex.split(exec_start)
        assert words[0] == "/usr/local/bin/pumas"
        assert check_args(words[1:], f"pumas-{role}.service") == role
        env_file = re.search(r"^EnvironmentFile=-?/etc/pumas/(.*)$", unit, re.M).group(1)
        names = [line.split("=", 1)[0].lstrip("# ").strip()
                 for line in (DEPLOY / "systemd" / env_file).read_text().splitlines()
                 if re.match(r"^#? ?[A-Z][A-Z0-9_]*=", line)]
        check_env(names, role, f"systemd/{env_file}")
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the units' syntax was not verified")
    # verify insists that ExecStart exists: check copies that point at the built binary.
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/usr/local/bin/pumas", pumas_bin())
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(tmp_path.glob("*.service")))],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_deploy_doc_commands():
    doc = (REPO / "docs" / "DEPLOY.md").read_text()
    commands = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", doc, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            match = re.search(r"(?:^|\s)pumas (serve \w+.*|healthcheck .*)$", line)
            if match:
                commands.append(shlex.split(match.group(1)))
    roles = {c[1] for c in commands if c[0] == "serve"}
    assert roles == set(ROLES), f"DEPLOY.md shows {roles}"
    for command in commands:
        check_args(command, f"DEPLOY.md: pumas {' '.join(command)}")
