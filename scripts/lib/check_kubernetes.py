"""This project's rules for deploy/kubernetes, on the rendered kustomization.

Run by scripts/check-kubernetes (with the tools venv's Python, which has PyYAML) after the
schema validation; the schemas cannot say any of this:

  python check_kubernetes.py RENDERED.yaml DEPLOY.md FLOWGRAPH_BIN   the checks
  python check_kubernetes.py --self-test [-v] RENDERED.yaml DEPLOY.md
        each rule rejects a copy broken in its one way, for its own reason (-v: print why)

Rules: the agent DaemonSet (hostPID, exactly the capabilities of the table in
docs/DEPLOY.md, read-only root, the two read-only host mounts), the pipeline StatefulSet
(process id from the pod-index label, --processes = replicas = lines of the hosts file, each
line the pod's stable DNS name under the headless Service), the web view (token from a
Secret, probes), the metadata watcher's read-only RBAC, restricted-style security for every
pod but the agent's, and that references (ConfigMaps, keys, ports, service accounts, $(VAR)s)
resolve. With FLOWGRAPH_BIN, also that the real binary accepts every container's arguments
and loads every config file the manifests mount.
"""

import copy
import os
import re
import subprocess
import sys
import tempfile

import yaml

POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"DaemonSet", "StatefulSet", "Deployment"}
METADATA_RULES = {
    ("", "pods"), ("", "services"), ("", "nodes"), ("", "namespaces"),
    ("discovery.k8s.io", "endpointslices"),
}
READ_ONLY_VERBS = {"get", "list", "watch"}
# The one Secret the manifests reference but do not contain (docs/DEPLOY.md says how to make it).
EXTERNAL_SECRETS = {("flowgraph-ui", "token")}
# ConfigMaps Kubernetes itself publishes in every namespace (the API server's CA bundle).
EXTERNAL_CONFIGMAPS = {"kube-root-ca.crt"}


def documented_capabilities(deploy_md):
    """The capability table between the capabilities markers of docs/DEPLOY.md."""
    text = open(deploy_md, encoding="utf-8").read()
    m = re.search(r"<!-- capabilities: begin -->(.*?)<!-- capabilities: end -->", text, re.S)
    if not m:
        raise SystemExit(f"check-kubernetes: {deploy_md} has no <!-- capabilities: begin/end --> table")
    caps = re.findall(r"^\|\s*`CAP_([A-Z_]+)`\s*\|", m.group(1), re.M)
    if not caps:
        raise SystemExit(f"check-kubernetes: the capability table of {deploy_md} has no `CAP_...` rows")
    return set(caps)


# The query's flags (`flowgraph run --help`); each has a key in flowgraph.toml's [query].
QUERY_FLAGS = ("--ips", "--window", "--group-by", "--lateness", "--progress-interval", "--max-updates-per-piece")


def parse_args(args):
    """Flags of a container's args: --k=v, --k v, or a bare --k (True)."""
    flags, i = {}, 1
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            flags[k] = v
        elif a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[a] = args[i + 1]
            i += 1
        else:
            flags[a] = True
        i += 1
    return flags


class Checker:
    def __init__(self, docs, caps):
        self.docs = docs
        self.caps = caps
        self.problems = []
        self.by = {}
        for d in docs:
            self.by[(d["kind"], d["metadata"]["name"])] = d

    def need(self, cond, msg):
        if not cond:
            self.problems.append(msg)
        return cond

    def get(self, kind, name):
        obj = self.by.get((kind, name))
        self.need(obj is not None, f"{kind} {name} is missing")
        return obj

    # -- helpers -----------------------------------------------------------------------------
    def env_of(self, container):
        return {e["name"]: e for e in container.get("env") or []}

    def configmap_value(self, name, key):
        cm = self.by.get(("ConfigMap", name))
        if cm is None:
            return None
        return (cm.get("data") or {}).get(key)

    def resolve_env(self, container):
        """Each env var's value as the check will use it (sample values for downward-API ones)."""
        out = {}
        for name, e in self.env_of(container).items():
            if "value" in e:
                out[name] = e["value"]
                continue
            src = e.get("valueFrom") or {}
            if "configMapKeyRef" in src:
                out[name] = self.configmap_value(src["configMapKeyRef"]["name"], src["configMapKeyRef"]["key"]) or ""
            elif "secretKeyRef" in src:
                out[name] = "secret-value"
            elif "fieldRef" in src:
                out[name] = "0" if src["fieldRef"]["fieldPath"] == POD_INDEX else "sample"
            else:
                out[name] = "sample"
        return out

    def mounted_file(self, pod, container, path):
        """(configmap, key) behind a file path in a container, through its volume mounts."""
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for m in container.get("volumeMounts") or []:
            mp = m["mountPath"].rstrip("/")
            if not path.startswith(mp + "/"):
                continue
            rel = path[len(mp) + 1:]
            vol = volumes.get(m["name"]) or {}
            sources = []
            if "configMap" in vol:
                sources.append(vol["configMap"])
            for s in (vol.get("projected") or {}).get("sources") or []:
                if "configMap" in s:
                    sources.append(s["configMap"])
            for cm in sources:
                for item in cm.get("items") or []:
                    if item["path"] == rel:
                        return cm["name"], item["key"]
                if not cm.get("items") and self.configmap_value(cm["name"], rel) is not None:
                    return cm["name"], rel
        return None

    # -- every object ------------------------------------------------------------------------
    def check_common(self):
        namespaces = [d["metadata"]["name"] for d in self.docs if d["kind"] == "Namespace"]
        if not self.need(len(namespaces) == 1, f"expected one Namespace, found {namespaces}"):
            return
        self.ns = namespaces[0]
        images = set()
        for d in self.docs:
            kind, name = d["kind"], d["metadata"]["name"]
            if kind not in CLUSTER_SCOPED:
                self.need(d["metadata"].get("namespace") == self.ns,
                          f"{kind} {name}: not in namespace {self.ns}")
            if kind in WORKLOADS:
                images |= self.check_workload(d)
            if kind == "Service":
                self.check_service(d)
        self.need(len(images) == 1, f"the workloads do not share one image: {sorted(images)}")

    def check_workload(self, w):
        kind, name = w["kind"], w["metadata"]["name"]
        where = f"{kind} {name}"
        spec = w["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels") or {}
        for k, v in (spec["selector"].get("matchLabels") or {}).items():
            self.need(labels.get(k) == v, f"{where}: the selector's {k}={v} is not a pod label")
        sa = pod.get("serviceAccountName")
        self.need(sa and ("ServiceAccount", sa) in self.by, f"{where}: service account {sa!r} is not defined")
        self.need(pod.get("automountServiceAccountToken") is False,
                  f"{where}: mounts a service account token (it never talks to the API server)")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for v in volumes.values():
            refs = [v["configMap"]] if "configMap" in v else []
            refs += [s["configMap"] for s in (v.get("projected") or {}).get("sources") or [] if "configMap" in s]
            for cm in refs:
                if cm["name"] in EXTERNAL_CONFIGMAPS:
                    continue
                if self.need(("ConfigMap", cm["name"]) in self.by, f"{where}: volume {v['name']}: ConfigMap {cm['name']} is not defined"):
                    for item in cm.get("items") or []:
                        self.need(self.configmap_value(cm["name"], item["key"]) is not None,
                                  f"{where}: volume {v['name']}: ConfigMap {cm['name']} has no key {item['key']}")
        images = set()
        for c in pod["containers"]:
            cw = f"{where}, container {c['name']}"
            images.add(c["image"])
            self.need("command" not in c, f"{cw}: sets command (the image's entrypoint is flowgraph; give args)")
            args = c.get("args") or []
            self.need(args and not args[0].startswith("-"), f"{cw}: args do not start with a flowgraph subcommand")
            env = self.env_of(c)
            for a in args:
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    self.need(var in env, f"{cw}: args use $({var}), which is not in its env")
            for e in env.values():
                src = e.get("valueFrom") or {}
                if "configMapKeyRef" in src:
                    r = src["configMapKeyRef"]
                    self.need(self.configmap_value(r["name"], r["key"]) is not None,
                              f"{cw}: env {e['name']}: ConfigMap {r['name']} has no key {r['key']}")
                if "secretKeyRef" in src:
                    r = src["secretKeyRef"]
                    self.need((r["name"], r["key"]) in EXTERNAL_SECRETS,
                              f"{cw}: env {e['name']}: Secret {r['name']}/{r['key']} is not one docs/DEPLOY.md tells to create")
            for m in c.get("volumeMounts") or []:
                self.need(m["name"] in volumes, f"{cw}: mounts undefined volume {m['name']}")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str):
                    self.need(port in ports, f"{cw}: {probe} uses undefined port {port}")
            res = c.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            self.need("cpu" in req and "memory" in req, f"{cw}: no cpu and memory requests")
            self.need("memory" in lim, f"{cw}: no memory limit")
            sc = c.get("securityContext") or {}
            self.need(sc.get("readOnlyRootFilesystem") is True, f"{cw}: root filesystem not read-only")
            self.need(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation is not false")
            self.need(sc.get("privileged") is not True, f"{cw}: privileged")
            self.need((sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{cw}: does not drop ALL capabilities")
            if name != "flowgraph-agent":
                self.check_restricted(pod, c, cw)
        return images

    def check_restricted(self, pod, c, cw):
        """Pod Security "restricted", for every pod but the agent's."""
        psc, sc = pod.get("securityContext") or {}, c.get("securityContext") or {}
        self.need(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{cw}: runAsNonRoot is not true")
        self.need(sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, f"{cw}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        self.need(seccomp == "RuntimeDefault", f"{cw}: seccompProfile is not RuntimeDefault")
        self.need(not (sc.get("capabilities") or {}).get("add"), f"{cw}: adds capabilities")
        for host in ("hostPID", "hostNetwork", "hostIPC"):
            self.need(not pod.get(host), f"{cw}: {host}")
        self.need(not any("hostPath" in v for v in pod.get("volumes") or []), f"{cw}: mounts a hostPath")

    def check_service(self, svc):
        name = svc["metadata"]["name"]
        sel = svc["spec"].get("selector") or {}
        targets = [w for w in self.docs if w["kind"] in WORKLOADS
                   and all((w["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())]
        if not self.need(sel and targets, f"Service {name}: its selector {sel} matches no workload's pods"):
            return
        ports = {p.get("name") for w in targets for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort")
            if isinstance(tp, str):
                self.need(tp in ports, f"Service {name}: targetPort {tp} is no port of its pods")

    # -- the agent ---------------------------------------------------------------------------
    def check_agent(self):
        ds = self.get("DaemonSet", "flowgraph-agent")
        if not ds:
            return
        pod = ds["spec"]["template"]["spec"]
        self.need(pod.get("hostPID") is True, "agent: hostPID is not true (pids and /proc must be the node's)")
        if pod.get("hostNetwork"):
            self.need(pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
                      "agent: on the host network without dnsPolicy ClusterFirstWithHostNet (the Kafka service would not resolve)")
        (c,) = pod["containers"]
        args = parse_args(c.get("args") or [])
        self.need((c.get("args") or [""])[0] == "agent" and args.get("--output") == "kafka",
                  "agent: not `flowgraph agent --output kafka`")
        sc = c.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        added = set(caps.get("add") or [])
        self.need(added == self.caps,
                  f"agent: capabilities {sorted(added)} are not exactly the documented set {sorted(self.caps)} (docs/DEPLOY.md)")
        self.need(len(caps.get("add") or []) == len(added), "agent: a capability is listed twice")
        self.need(sc.get("runAsUser") == 0, "agent: runAsUser is not 0 (added capabilities reach root only)")
        mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
        host_paths = {v["hostPath"]["path"]: v["name"] for v in pod.get("volumes") or [] if "hostPath" in v}
        self.need(set(host_paths) == {"/sys/kernel/btf", "/etc/machine-id"},
                  f"agent: host paths {sorted(host_paths)} are not exactly /sys/kernel/btf and /etc/machine-id")
        for path, vol in host_paths.items():
            m = mounts.get(vol)
            if self.need(m is not None, f"agent: host path {path} is not mounted"):
                self.need(m["mountPath"] == path, f"agent: host path {path} is mounted at {m['mountPath']}")
                self.need(m.get("readOnly") is True, f"agent: host path {path} is not mounted read-only")

    # -- the pipeline ------------------------------------------------------------------------
    def check_pipeline(self):
        sts = self.get("StatefulSet", "flowgraph-pipeline")
        if not sts:
            return
        name, spec = sts["metadata"]["name"], sts["spec"]
        pod = spec["template"]["spec"]
        replicas = spec.get("replicas", 1)
        svc = self.get("Service", spec.get("serviceName", ""))
        self.need(spec.get("podManagementPolicy") == "Parallel",
                  "pipeline: podManagementPolicy is not Parallel (the processes must start together)")
        (c,) = pod["containers"]
        args = parse_args(c.get("args") or [])
        self.need((c.get("args") or [""])[0] == "run", "pipeline: not `flowgraph run`")
        # The web view reports the query of its own --config: a flag here it would not see.
        given = [f for f in QUERY_FLAGS if f in args]
        self.need(not given, f"pipeline: {', '.join(given)} in its args, which the web view does not see (set it in flowgraph.toml)")
        self.need(str(args.get("--workers", "")).isdigit() and int(args["--workers"]) >= 1,
                  "pipeline: no --workers N")
        self.need(str(args.get("--processes")) == str(replicas),
                  f"pipeline: --processes={args.get('--processes')} but the StatefulSet has {replicas} replicas")
        env = self.env_of(c)
        pid_env = (env.get("FLOWGRAPH_PROCESS_ID") or {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        self.need(pid_env == POD_INDEX, f"pipeline: env FLOWGRAPH_PROCESS_ID is not the downward API's {POD_INDEX}")
        self.need(args.get("--process-id") == "$(FLOWGRAPH_PROCESS_ID)",
                  "pipeline: --process-id is not $(FLOWGRAPH_PROCESS_ID) (the pod index)")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        timely = ports.get("timely")
        self.need(timely is not None, "pipeline: no container port named timely")
        hosts_path = args.get("--hosts")
        if not self.need(isinstance(hosts_path, str), "pipeline: no --hosts FILE"):
            return
        ref = self.mounted_file(pod, c, hosts_path)
        if not self.need(ref is not None, f"pipeline: --hosts {hosts_path} is not a mounted ConfigMap key"):
            return
        text = self.configmap_value(*ref) or ""
        # As `flowgraph run` reads it: blank lines and # comments do not count.
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        self.need(len(lines) == replicas,
                  f"pipeline: the hosts file (ConfigMap {ref[0]}, key {ref[1]}) has {len(lines)} lines for {replicas} replicas")
        if svc:
            self.need(svc["spec"].get("clusterIP") == "None", f"pipeline: Service {svc['metadata']['name']} is not headless")
            self.need(svc["spec"].get("publishNotReadyAddresses") is True,
                      "pipeline: the headless Service does not publish not-ready addresses (processes must resolve each other before ready)")
            self.need(any(p.get("targetPort") == "timely" or p.get("port") == timely for p in svc["spec"]["ports"]),
                      "pipeline: the headless Service has no timely port")
            for i, line in enumerate(lines):
                want = f"{name}-{i}.{svc['metadata']['name']}.{self.ns}.svc.cluster.local:{timely}"
                self.need(line == want, f"pipeline: hosts line {i + 1} is {line!r}, expected {want!r}")

    # -- the web view ------------------------------------------------------------------------
    def check_ui(self):
        dep = self.get("Deployment", "flowgraph-ui")
        if not dep:
            return
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        args = parse_args(c.get("args") or [])
        self.need((c.get("args") or [""])[0] == "ui" and args.get("--from-kafka") is True,
                  "ui: not `flowgraph ui --from-kafka`")
        # It reports the query of its own --config, so that must be the pipeline's file.
        sts = self.get("StatefulSet", "flowgraph-pipeline")
        if sts:
            ppod = sts["spec"]["template"]["spec"]
            (pc,) = ppod["containers"]
            pconfig, config = parse_args(pc.get("args") or []).get("--config"), args.get("--config")
            theirs = self.mounted_file(ppod, pc, pconfig) if isinstance(pconfig, str) else None
            mine = self.mounted_file(pod, c, config) if isinstance(config, str) else None
            self.need(theirs is not None and mine == theirs,
                      f"ui: --config is {mine} (ConfigMap, key), not the pipeline's {theirs}")
        listen = str(args.get("--listen", ""))
        port = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}.get("http")
        self.need(listen == f"0.0.0.0:{port}", f"ui: --listen {listen!r} is not 0.0.0.0 on the http port ({port})")
        tok = (self.env_of(c).get("FLOWGRAPH_UI_TOKEN") or {}).get("valueFrom", {})
        self.need("secretKeyRef" in tok, "ui: FLOWGRAPH_UI_TOKEN does not come from a Secret")
        live = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
        ready = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
        self.need(live == "/healthz", "ui: the liveness probe is not GET /healthz")
        self.need(ready == "/readyz", "ui: the readiness probe is not GET /readyz")
        self.get("Service", "flowgraph-ui")

    # -- RBAC of the metadata watcher --------------------------------------------------------
    def check_rbac(self):
        role = self.get("ClusterRole", "flowgraph-metadata")
        binding = self.get("ClusterRoleBinding", "flowgraph-metadata")
        self.get("ServiceAccount", "flowgraph-metadata")
        if role:
            granted = set()
            for rule in role.get("rules") or []:
                self.need(set(rule.get("verbs") or []) <= READ_ONLY_VERBS,
                          f"metadata RBAC: verbs {rule.get('verbs')} beyond get, list, watch")
                self.need(not rule.get("resourceNames") and not rule.get("nonResourceURLs"),
                          "metadata RBAC: resourceNames or nonResourceURLs are not expected")
                for g in rule.get("apiGroups") or []:
                    for r in rule.get("resources") or []:
                        granted.add((g, r))
            self.need(granted == METADATA_RULES,
                      f"metadata RBAC: grants {sorted(granted)}, expected exactly {sorted(METADATA_RULES)}")
        if binding:
            self.need(binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flowgraph-metadata"},
                      "metadata RBAC: the binding does not refer to ClusterRole flowgraph-metadata")
            self.need(binding.get("subjects") == [{"kind": "ServiceAccount", "name": "flowgraph-metadata", "namespace": self.ns}],
                      f"metadata RBAC: the binding's subject is not ServiceAccount {self.ns}/flowgraph-metadata alone")

    def run(self):
        self.check_common()
        if self.problems:
            return self.problems
        self.check_agent()
        self.check_pipeline()
        self.check_ui()
        self.check_rbac()
        return self.problems

    # -- with the binary ---------------------------------------------------------------------
    def check_binary(self, flowgraph):
        """The real CLI accepts every container's args; every mounted --config loads."""
        configs = {}
        for w in self.docs:
            if w["kind"] not in WORKLOADS:
                continue
            pod = w["spec"]["template"]["spec"]
            for c in pod["containers"]:
                cw = f"{w['kind']} {w['metadata']['name']}, container {c['name']}"
                env = self.resolve_env(c)
                args = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), ""), a)
                        for a in c.get("args") or []]
                # clap parses every argument before --help: an unknown flag or a bad value fails.
                r = subprocess.run([flowgraph, *args, "--help"], capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    msg = " ".join(r.stderr.split())
                    self.problems.append(f"{cw}: {os.path.basename(flowgraph)} rejects its args {args}: {msg}")
                cfg = parse_args(c.get("args") or []).get("--config")
                if isinstance(cfg, str):
                    ref = self.mounted_file(pod, c, cfg)
                    if self.need(ref is not None, f"{cw}: --config {cfg} is not a mounted ConfigMap key"):
                        configs.setdefault(ref, cw)
        for (cm, key), cw in configs.items():
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(self.configmap_value(cm, key))
            try:
                r = subprocess.run([flowgraph, "replay", "--config", f.name, "--input", "/dev/null"],
                                   capture_output=True, text=True, timeout=30)
            finally:
                os.unlink(f.name)
            if r.returncode != 0:
                msg = " ".join(r.stderr.split()).replace(f.name, f"ConfigMap {cm} key {key}")
                self.problems.append(f"{cw}: its config does not load: {msg}")
        return self.problems


def load(rendered):
    with open(rendered, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def container(docs, kind, name):
    return find(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def self_test(docs, caps):
    """Each rule of the brief must reject a copy broken in that one way."""

    def add_sys_admin(d):
        container(d, "DaemonSet", "flowgraph-agent")["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")

    def drop_perfmon(d):
        container(d, "DaemonSet", "flowgraph-agent")["securityContext"]["capabilities"]["add"].remove("PERFMON")

    def no_host_pid(d):
        find(d, "DaemonSet", "flowgraph-agent")["spec"]["template"]["spec"]["hostPID"] = False

    def writable_btf(d):
        for m in container(d, "DaemonSet", "flowgraph-agent")["volumeMounts"]:
            m["readOnly"] = False

    def more_replicas(d):
        find(d, "StatefulSet", "flowgraph-pipeline")["spec"]["replicas"] += 1

    def fixed_process_id(d):
        c = container(d, "StatefulSet", "flowgraph-pipeline")
        c["args"] = [a if not a.startswith("--process-id") else "--process-id=0" for a in c["args"]]

    def pod_name_env(d):
        c = container(d, "StatefulSet", "flowgraph-pipeline")
        for e in c["env"]:
            if e["name"] == "FLOWGRAPH_PROCESS_ID":
                e["valueFrom"]["fieldRef"]["fieldPath"] = "metadata.name"

    def hosts_wrong_namespace(d):
        cm = next(x for x in d if x["kind"] == "ConfigMap" and x["metadata"]["name"].startswith("flowgraph-pipeline-hosts"))
        cm["data"]["hosts"] = cm["data"]["hosts"].replace(".flowgraph.svc.", ".default.svc.")

    def rbac_writes(d):
        find(d, "ClusterRole", "flowgraph-metadata")["rules"][0]["verbs"].append("update")

    def ui_literal_token(d):
        c = container(d, "Deployment", "flowgraph-ui")
        for e in c["env"]:
            if e["name"] == "FLOWGRAPH_UI_TOKEN":
                e.pop("valueFrom")
                e["value"] = "change-me"

    def pipeline_as_root(d):
        find(d, "StatefulSet", "flowgraph-pipeline")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False

    def missing_configmap_key(d):
        c = container(d, "DaemonSet", "flowgraph-agent")
        for e in c["env"]:
            if "configMapKeyRef" in e.get("valueFrom", {}):
                e["valueFrom"]["configMapKeyRef"]["key"] = "bootstrap"

    def pipeline_query_flag(d):
        container(d, "StatefulSet", "flowgraph-pipeline")["args"].append("--group-by=process")

    def ui_other_config(d):
        c = container(d, "Deployment", "flowgraph-ui")
        c["args"] = [a if not a.startswith("--config") else "--config=/etc/flowgraph/other.toml" for a in c["args"]]

    # Each broken copy must be rejected, and for its own reason.
    cases = [
        (add_sys_admin, "not exactly the documented set"),
        (drop_perfmon, "not exactly the documented set"),
        (no_host_pid, "hostPID is not true"),
        (writable_btf, "/sys/kernel/btf is not mounted read-only"),
        (more_replicas, "lines for 3 replicas"),
        (fixed_process_id, "--process-id is not"),
        (pod_name_env, "env FLOWGRAPH_PROCESS_ID is not"),
        (hosts_wrong_namespace, "hosts line 1 is"),
        (rbac_writes, "beyond get, list, watch"),
        (ui_literal_token, "does not come from a Secret"),
        (pipeline_as_root, "runAsNonRoot is not true"),
        (missing_configmap_key, "has no key bootstrap"),
        (pipeline_query_flag, "which the web view does not see"),
        (ui_other_config, "not the pipeline's"),
    ]
    results = []
    for case, expected in cases:
        broken = copy.deepcopy(docs)
        case(broken)
        problems = Checker(broken, caps).run()
        results.append((case.__name__, any(expected in p for p in problems), problems))
    return results


def main(argv):
    if argv[:1] == ["--self-test"]:
        verbose = "-v" in argv
        rendered, deploy_md = [a for a in argv[1:] if a != "-v"][:2]
        docs, caps = load(rendered), documented_capabilities(deploy_md)
        results = self_test(docs, caps)
        for name, ok, problems in results:
            if verbose or not ok:
                why = "; ".join(problems) or "accepted"
                print(f"check-kubernetes: self-test {name}: {'rejected' if ok else 'NOT rejected for its reason'}: {why}",
                      file=sys.stderr)
        if all(ok for _, ok, _ in results):
            print(len(results))
            return 0
        return 1
    rendered, deploy_md, flowgraph = argv[:3]
    docs, caps = load(rendered), documented_capabilities(deploy_md)
    checker = Checker(docs, caps)
    problems = checker.run()
    if not problems:
        problems = checker.check_binary(flowgraph)
    for p in problems:
        print(f"check-kubernetes: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
