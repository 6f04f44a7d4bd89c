#!/usr/bin/env python3
"""Offline checks of everything under k8s/: the chart renders to the committed manifests, every
document is well-formed with the fields Kubernetes requires, and names, images, sockets, paths,
secrets and service accounts agree with each other and with the chart's values."""
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "k8s")
problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


values = yaml.safe_load(open(os.path.join(K8S, "chart", "values.yaml")))
chart = yaml.safe_load(open(os.path.join(K8S, "chart", "Chart.yaml")))
check(chart.get("apiVersion") == "v2" and chart.get("name") == "cairn" and chart.get("version"),
      "Chart.yaml needs apiVersion v2, name cairn and a version")
rc = subprocess.call([sys.executable, os.path.join(ROOT, "tools", "render_chart.py"), "--check"])
check(rc == 0, "k8s/manifests differs from the rendered chart")

API = {"Namespace": "v1", "Service": "v1", "Secret": "v1", "ServiceAccount": "v1",
       "PersistentVolumeClaim": "v1", "Pod": "v1", "StatefulSet": "apps/v1",
       "Deployment": "apps/v1", "DaemonSet": "apps/v1", "CSIDriver": "storage.k8s.io/v1",
       "StorageClass": "storage.k8s.io/v1", "ClusterRole": "rbac.authorization.k8s.io/v1",
       "ClusterRoleBinding": "rbac.authorization.k8s.io/v1", "Role": "rbac.authorization.k8s.io/v1",
       "RoleBinding": "rbac.authorization.k8s.io/v1"}
CLUSTER_SCOPED = {"Namespace", "CSIDriver", "StorageClass", "ClusterRole", "ClusterRoleBinding"}

docs = []
for d in ("manifests",):
    for name in sorted(os.listdir(os.path.join(K8S, d))):
        for doc in yaml.safe_load_all(open(os.path.join(K8S, d, name))):
            if doc:
                docs.append((d + "/" + name, doc))
example = [doc for doc in yaml.safe_load_all(open(os.path.join(K8S, "example-claim.yaml"))) if doc]

by_kind = {}
for where, doc in docs + [("example-claim.yaml", e) for e in example]:
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    if not check(kind in API, "%s: unknown kind %r" % (where, kind)):
        continue
    check(doc.get("apiVersion") == API[kind], "%s: %s needs apiVersion %s" % (where, kind, API[kind]))
    check(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta.get("name", "")) is not None,
          "%s: %s has no valid metadata.name" % (where, kind))
    if kind not in CLUSTER_SCOPED and where != "example-claim.yaml":
        check(meta.get("namespace") == "cairn", "%s: %s %s is not in namespace cairn" % (where, kind, meta.get("name")))
    by_kind.setdefault(kind, {})[meta.get("name")] = doc

cairn_image = "%s:%s" % (values["image"]["repository"], values["image"]["tag"])
sidecar_images = set(values["sidecars"].values())
secret_names = set(by_kind.get("Secret", {}))
service_accounts = set(by_kind.get("ServiceAccount", {}))
check(values["secretName"] in secret_names, "the Secret %s is not defined" % values["secretName"])
sec = by_kind["Secret"][values["secretName"]]
check(set(sec.get("stringData", {})) == {"secret", "key"}, "the Secret must hold exactly secret and key")

workload_labels = []
for kind in ("StatefulSet", "Deployment", "DaemonSet"):
    for name, w in by_kind.get(kind, {}).items():
        spec = w["spec"]
        tmpl = spec["template"]
        labels = tmpl["metadata"]["labels"]
        workload_labels.append(labels)
        sel = spec["selector"]["matchLabels"]
        check(all(labels.get(k) == v for k, v in sel.items()), "%s %s: selector does not match its pods" % (kind, name))
        pod = tmpl["spec"]
        vols = {v["name"] for v in pod.get("volumes", [])}
        vols |= {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        if "serviceAccountName" in pod:
            check(pod["serviceAccountName"] in service_accounts,
                  "%s %s: service account %s not defined" % (kind, name, pod["serviceAccountName"]))
        for v in pod.get("volumes", []):
            if "secret" in v:
                check(v["secret"]["secretName"] in secret_names, "%s %s: unknown secret" % (kind, name))
        for c in pod["containers"]:
            check(c.get("name") and c.get("image"), "%s %s: a container without name or image" % (kind, name))
            check(c["image"] == cairn_image or c["image"] in sidecar_images,
                  "%s %s/%s: image %s is neither the cairn image nor a listed sidecar" % (kind, name, c["name"], c["image"]))
            for m in c.get("volumeMounts", []):
                check(m["name"] in vols, "%s %s/%s: mounts undeclared volume %s" % (kind, name, c["name"], m["name"]))
            text = " ".join(c.get("command", []) + c.get("args", []))
            if "--csi-address" in text or "cairn-csi" in text:
                check("/csi/csi.sock" in text, "%s %s/%s: not on /csi/csi.sock" % (kind, name, c["name"]))

for name, s in by_kind.get("Service", {}).items():
    sel = s["spec"]["selector"]
    check(any(all(l.get(k) == v for k, v in sel.items()) for l in workload_labels),
          "Service %s selects no pods" % name)
prom = open(os.path.join(K8S, "monitoring", "prometheus.yml")).read()
for svc in re.findall(r"(cairn-[a-z]+-metrics)\.cairn\.svc", prom):
    check(svc in by_kind.get("Service", {}), "prometheus.yml scrapes %s, which is not a Service" % svc)

driver = values["driverName"]
csid = by_kind.get("CSIDriver", {}).get(driver)
if check(csid is not None, "no CSIDriver named %s" % driver):
    check(csid["spec"].get("attachRequired") is False, "CSIDriver: attachRequired must be false")
sc = by_kind.get("StorageClass", {}).get(values["storageClass"]["name"])
if check(sc is not None, "no StorageClass %s" % values["storageClass"]["name"]):
    check(sc["provisioner"] == driver, "StorageClass provisioner is not %s" % driver)
    check(sc.get("allowVolumeExpansion") is True, "StorageClass must allow expansion")

node = by_kind["DaemonSet"]["cairn-csi-node"]["spec"]["template"]["spec"]
cs = {c["name"]: c for c in node["containers"]}
kub = values["kubeletDir"]
check({"cairn-mount", "cairn-csi", "node-driver-registrar", "liveness-probe"} <= set(cs),
      "node DaemonSet needs cairn-mount, cairn-csi, node-driver-registrar and liveness-probe")
mnt = cs["cairn-mount"]
check(mnt.get("securityContext", {}).get("privileged") is True, "cairn-mount must be privileged")
check(any(m["mountPath"] == "/var/lib/cairn" and m.get("mountPropagation") == "Bidirectional"
          for m in mnt["volumeMounts"]), "cairn-mount must share /var/lib/cairn Bidirectional")
plugin = cs["cairn-csi"]
ptext = " ".join(plugin["command"])
check("--no-remount" in ptext and "--mode node" in ptext, "the node plugin must run --mode node --no-remount")
check(any(m["mountPath"] == kub and m.get("mountPropagation") == "Bidirectional"
          for m in plugin["volumeMounts"]), "cairn-csi must mount %s Bidirectional" % kub)
check("--kubelet-dir %s" % kub in ptext, "cairn-csi --kubelet-dir must be %s" % kub)
reg = " ".join(cs["node-driver-registrar"]["args"])
check("--kubelet-registration-path=%s/plugins/%s/csi.sock" % (kub, driver) in reg, "registrar path")
pdir = [v for v in node["volumes"] if v["name"] == "plugin-dir"][0]["hostPath"]["path"]
check(pdir == "%s/plugins/%s" % (kub, driver), "plugin-dir hostPath must be %s/plugins/%s" % (kub, driver))
ctrl = by_kind["Deployment"]["cairn-csi-controller"]["spec"]["template"]["spec"]
names = {c["name"] for c in ctrl["containers"]}
check({"cairn-csi", "csi-provisioner", "csi-resizer", "liveness-probe"} <= names, "controller containers")
meta = by_kind["StatefulSet"]["cairn-meta"]["spec"]
check(meta["replicas"] in (1, 3, 5) and meta["volumeClaimTemplates"], "meta: 1, 3 or 5 replicas with storage")

pvcs = [e for e in example if e["kind"] == "PersistentVolumeClaim"]
pods = [e for e in example if e["kind"] == "Pod"]
check(len(pvcs) == 1 and pvcs[0]["spec"]["accessModes"] == ["ReadWriteMany"]
      and pvcs[0]["spec"]["storageClassName"] == values["storageClass"]["name"],
      "example: one ReadWriteMany claim of the cairn StorageClass")
check(len(pods) == 2 and all(any(v.get("persistentVolumeClaim", {}).get("claimName") == pvcs[0]["metadata"]["name"]
                                 for v in p["spec"]["volumes"]) for p in pods),
      "example: two pods sharing the claim")

# The node mount's container script, run by sh with mount.cairn replaced by a recorder (and the
# node mount's path by a scratch directory): the options it mounts with, with and without the
# chart's nodeMountOptions.
node = by_kind.get("DaemonSet", {}).get("cairn-csi-node")
mounter = [c for c in (node or {}).get("spec", {}).get("template", {}).get("spec", {})
           .get("containers", []) if c.get("name") == "cairn-mount"]
if check(len(mounter) == 1, "no cairn-mount container in the cairn-csi-node DaemonSet"):
    c = mounter[0]
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    check(env.get("MOUNT_OPTIONS") == values["nodeMountOptions"],
          "cairn-mount: MOUNT_OPTIONS is not the chart's nodeMountOptions")
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "bin"))
        stub = os.path.join(tmp, "bin", "mount.cairn")
        with open(stub, "w") as f:
            f.write('#!/bin/sh\nprintf "%%s\\n" "$@" > %s/args\n' % tmp)
        os.chmod(stub, 0o755)
        script = c["command"][-1].replace("/var/lib/cairn/node-mount", os.path.join(tmp, "nm"))
        for extra, want in (("", ",allow_other"), ("cipher=xchacha20poly1305,readahead_kb=8192",
                                                    ",allow_other,cipher=xchacha20poly1305,readahead_kb=8192")):
            run_env = dict(os.environ, PATH=os.path.join(tmp, "bin") + ":" + os.environ["PATH"],
                           NAMESPACE="cairn", META_REPLICAS="2", MOUNT_OPTIONS=extra)
            subprocess.run(["sh", "-c", script], env=run_env, check=False)
            args = open(os.path.join(tmp, "args")).read().split("\n") if os.path.exists(
                os.path.join(tmp, "args")) else []
            check(args[:2] == ["cairn-meta-0.cairn-meta.cairn.svc:7000,cairn-meta-1.cairn-meta.cairn.svc:7000:/",
                               os.path.join(tmp, "nm")] and "-o" in args
                  and args[args.index("-o") + 1].endswith(want)
                  and args[args.index("-o") + 1].startswith("secretfile=/etc/cairn/secret,keyfile=/etc/cairn/key"),
                  "cairn-mount with MOUNT_OPTIONS=%r ran mount.cairn with %r" % (extra, args))
            if os.path.exists(os.path.join(tmp, "args")):
                os.unlink(os.path.join(tmp, "args"))

cf = open(os.path.join(K8S, "Containerfile")).read()
froms = re.findall(r"^FROM (\S+)", cf, re.M)
check(len(froms) == 2 and all(f.startswith("debian:") for f in froms), "Containerfile: two Debian stages")
for b in ("cairn-meta", "cairn-chunk", "mount.cairn", "cairn", "cairn-csi"):
    check("/src/build/bin/%s " % b in cf or "/src/build/bin/%s\n" % b in cf, "Containerfile does not copy %s" % b)
runtime = re.search(r"--no-install-recommends(.*?)&&", cf, re.S).group(1).replace("\\", " ").split()
for pkg in runtime:
    out = subprocess.run(["apt-cache", "policy", pkg], stdout=subprocess.PIPE, text=True).stdout
    check("Candidate:" in out and "(none)" not in out.split("Candidate:")[1].split("\n")[0],
          "Containerfile: Debian has no package %s" % pkg)

for p in problems:
    print("PROBLEM:", p)
print("%d documents checked, %d problems" % (len(docs) + len(example), len(problems)))
sys.exit(1 if problems else 0)
