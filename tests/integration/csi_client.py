"""A kubelet-like CSI client: drives cairn-csi's socket through CSI v1 calls and checks results.

Run by csi_plugin.sh, which starts the cluster and the plugin; the environment names the
socket, the kubelet directory, the node mount and the commands to restart things.
"""
import errno
import grpc
import os
import subprocess
import sys
import time

import csi_pb2 as csi

E = os.environ
SOCK, KUBELET, NODE_MOUNT = E["CSI_SOCK"], E["KUBELET"], E["NODE_MOUNT"]
MiB = 1 << 20
channel = grpc.insecure_channel("unix://" + SOCK)


def rpc(service, method, request, response):
    call = channel.unary_unary("/csi.v1.%s/%s" % (service, method),
                               request_serializer=request.SerializeToString,
                               response_deserializer=response.FromString)
    return call(request, timeout=60)


def ok(what):
    print("ok:", what, flush=True)


def fail(what):
    print("FAIL:", what, flush=True)
    sys.exit(1)


def expect_code(code, fn, what):
    try:
        fn()
    except grpc.RpcError as e:
        if e.code() != code:
            fail("%s: got %s (%s), want %s" % (what, e.code(), e.details(), code))
        return
    fail("%s: succeeded, want %s" % (what, code))


def mount_cap(mode=csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER, flags=()):
    c = csi.VolumeCapability()
    c.mount.mount_flags.extend(flags)
    c.access_mode.mode = mode
    return c


def block_cap():
    c = csi.VolumeCapability()
    c.block.SetInParent()
    c.access_mode.mode = csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
    return c


def create(name, size, caps=None, params=None):
    r = csi.CreateVolumeRequest(name=name)
    r.capacity_range.required_bytes = size
    r.volume_capabilities.extend(caps if caps is not None else [mount_cap()])
    for k, v in (params or {}).items():
        r.parameters[k] = v
    return rpc("Controller", "CreateVolume", r, csi.CreateVolumeResponse)


def delete(vid):
    return rpc("Controller", "DeleteVolume", csi.DeleteVolumeRequest(volume_id=vid),
               csi.DeleteVolumeResponse)


def publish(vid, target, readonly=False, cap=None):
    r = csi.NodePublishVolumeRequest(volume_id=vid, target_path=target, readonly=readonly)
    r.volume_capability.CopyFrom(cap or mount_cap())
    return rpc("Node", "NodePublishVolume", r, csi.NodePublishVolumeResponse)


def unpublish(vid, target):
    return rpc("Node", "NodeUnpublishVolume",
               csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target),
               csi.NodeUnpublishVolumeResponse)


def stats(vid, path):
    r = rpc("Node", "NodeGetVolumeStats", csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=path),
            csi.NodeGetVolumeStatsResponse)
    return {u.unit: u for u in r.usage}, r.volume_condition


def probe():
    return rpc("Identity", "Probe", csi.ProbeRequest(), csi.ProbeResponse).ready.value


def target(pod, vol="v"):
    return os.path.join(KUBELET, "pods", pod, "volumes", "kubernetes.io~csi", vol, "mount")


def wait_for(cond, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        try:
            if cond():
                return
        except (OSError, grpc.RpcError):  # a broken mount, or the plugin restarting
            pass
        time.sleep(0.5)
    fail("timed out after %d s: %s" % (seconds, what))


def write_file(path, size):
    """Writes `size` bytes; returns the errno of the first failure (write, fsync or close) or 0."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        return e.errno
    err = 0
    try:
        buf = os.urandom(MiB)
        for _ in range(size // MiB):
            os.write(fd, buf)
        os.fsync(fd)
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        err = err or e.errno
    return err


# --- Identity ---
info = rpc("Identity", "GetPluginInfo", csi.GetPluginInfoRequest(), csi.GetPluginInfoResponse)
assert info.name == "csi.cairn.io" and info.vendor_version, info
caps = rpc("Identity", "GetPluginCapabilities", csi.GetPluginCapabilitiesRequest(),
           csi.GetPluginCapabilitiesResponse).capabilities
assert any(c.service.type == csi.PluginCapability.Service.CONTROLLER_SERVICE for c in caps), caps
assert any(c.volume_expansion.type == csi.PluginCapability.VolumeExpansion.ONLINE for c in caps), caps
assert probe() is True
ok("identity: plugin info, capabilities (controller service, online expansion), probe ready")

# --- Controller ---
ccaps = {c.rpc.type for c in rpc("Controller", "ControllerGetCapabilities",
                                 csi.ControllerGetCapabilitiesRequest(),
                                 csi.ControllerGetCapabilitiesResponse).capabilities}
assert {csi.ControllerServiceCapability.RPC.CREATE_DELETE_VOLUME,
        csi.ControllerServiceCapability.RPC.EXPAND_VOLUME} <= ccaps, ccaps
v = create("pvc-1", 100 * MiB).volume
assert v.volume_id == "pvc-1" and v.capacity_bytes == 100 * MiB, v
assert create("pvc-1", 100 * MiB).volume.volume_id == "pvc-1"
expect_code(grpc.StatusCode.ALREADY_EXISTS, lambda: create("pvc-1", 200 * MiB), "same name, other size")
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: create("", MiB), "empty name")
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: create("pvc-x", MiB, caps=[]), "no capabilities")
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: create("pvc-x", MiB, caps=[block_cap()]), "block")
for hostile in ("../etc", "a/b", "/abs", ".hidden", "x" * 200, "nul\0byte"):
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: create(hostile, MiB), "name %r" % hostile)
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: create("pvc-x", MiB, params={"colour": "red"}),
            "unknown parameter")
assert os.path.isdir(os.path.join(NODE_MOUNT, "volumes", "pvc-1"))
assert sorted(os.listdir(os.path.join(NODE_MOUNT, "volumes"))) == ["pvc-1"], \
    os.listdir(os.path.join(NODE_MOUNT, "volumes"))
ok("CreateVolume: made /volumes/pvc-1 with a 100 MiB quota; idempotent; ALREADY_EXISTS and "
   "INVALID_ARGUMENT as the spec says; hostile names made nothing")

r = csi.ValidateVolumeCapabilitiesRequest(volume_id="pvc-1")
r.volume_capabilities.extend([mount_cap(m) for m in (1, 2, 3, 4, 5, 6, 7)])
res = rpc("Controller", "ValidateVolumeCapabilities", r, csi.ValidateVolumeCapabilitiesResponse)
assert len(res.confirmed.volume_capabilities) == 7, res
r = csi.ValidateVolumeCapabilitiesRequest(volume_id="pvc-1")
r.volume_capabilities.extend([block_cap()])
res = rpc("Controller", "ValidateVolumeCapabilities", r, csi.ValidateVolumeCapabilitiesResponse)
assert not res.HasField("confirmed") and res.message, res
r = csi.ValidateVolumeCapabilitiesRequest(volume_id="pvc-nope")
r.volume_capabilities.extend([mount_cap()])
expect_code(grpc.StatusCode.NOT_FOUND,
            lambda: rpc("Controller", "ValidateVolumeCapabilities", r,
                        csi.ValidateVolumeCapabilitiesResponse), "validate unknown volume")
ok("ValidateVolumeCapabilities: every access mode confirmed for mounts, block refused, "
   "NOT_FOUND for an unknown volume")

# --- Node ---
ni = rpc("Node", "NodeGetInfo", csi.NodeGetInfoRequest(), csi.NodeGetInfoResponse)
assert ni.node_id == E["NODE_ID"], ni
ncaps = {c.rpc.type for c in rpc("Node", "NodeGetCapabilities", csi.NodeGetCapabilitiesRequest(),
                                 csi.NodeGetCapabilitiesResponse).capabilities}
assert csi.NodeServiceCapability.RPC.GET_VOLUME_STATS in ncaps, ncaps
ta, tb, tr = target("pod-a"), target("pod-b"), target("pod-r")
publish("pvc-1", ta)
publish("pvc-1", ta)  # idempotent
publish("pvc-1", tb)
with open(os.path.join(ta, "shared.txt"), "w") as f:
    f.write("written through pod a\n")
with open(os.path.join(tb, "shared.txt")) as f:
    assert f.read() == "written through pod a\n"
publish("pvc-1", tr, readonly=True)
try:
    open(os.path.join(tr, "nope"), "w")
    fail("a read-only publish accepted a write")
except OSError as e:
    assert e.errno == errno.EROFS, e
with open(os.path.join(tr, "shared.txt")) as f:
    assert f.read() == "written through pod a\n"
expect_code(grpc.StatusCode.ALREADY_EXISTS, lambda: publish("pvc-1", tr), "republish read-only target read-write")
ok("NodePublishVolume: two targets share the data (RWX), idempotent, read-only publish refuses writes")

outside = os.path.join(os.path.dirname(KUBELET), "outside-target")
for bad_target in (outside, KUBELET, target("pod-x") + "/../../../../escape", "relative/path",
                   target("pod-x") + "\0"):
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: publish("pvc-1", bad_target),
                "target %r" % bad_target)
assert not os.path.exists(outside)
for bad_id in ("../../etc", "pvc-1/../..", "/etc"):
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: publish(bad_id, target("pod-x")), "volume %r" % bad_id)
expect_code(grpc.StatusCode.NOT_FOUND, lambda: publish("pvc-none", target("pod-x")), "unknown volume")
expect_code(grpc.StatusCode.INVALID_ARGUMENT,
            lambda: publish("pvc-1", target("pod-x"), cap=mount_cap(flags=["bogus"])), "bad mount flag")
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: publish("pvc-1", target("pod-x"), cap=block_cap()),
            "block publish")
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: publish("", target("pod-x")), "empty volume id")
assert not os.path.exists(target("pod-x")), "a refused publish left a target behind"
ok("hostile targets and volume ids refused (INVALID_ARGUMENT / NOT_FOUND); nothing made outside")

# Quota: df shows the claim's size, writes past it fail with EDQUOT, stats report usage.
st = os.statvfs(ta)
assert st.f_blocks * st.f_frsize == 100 * MiB, (st.f_blocks, st.f_frsize)
err = write_file(os.path.join(ta, "big"), 150 * MiB)
assert err == errno.EDQUOT, "writing 150 MiB into a 100 MiB volume: errno %s" % err
usage, cond = stats("pvc-1", ta)
b, i = usage[csi.VolumeUsage.BYTES], usage[csi.VolumeUsage.INODES]
assert b.total == 100 * MiB and b.used <= 100 * MiB and b.available == b.total - b.used, b
assert i.used >= 2, i
assert not cond.abnormal, cond
ok("quota: df in the volume shows 100 MiB, a 150 MiB write fails with EDQUOT, stats %d of %d bytes"
   % (b.used, b.total))

r = csi.ControllerExpandVolumeRequest(volume_id="pvc-1")
r.capacity_range.required_bytes = 300 * MiB
res = rpc("Controller", "ControllerExpandVolume", r, csi.ControllerExpandVolumeResponse)
assert res.capacity_bytes == 300 * MiB and not res.node_expansion_required, res
assert os.statvfs(ta).f_blocks * os.statvfs(ta).f_frsize == 300 * MiB
assert write_file(os.path.join(ta, "big"), 150 * MiB) == 0
r.volume_id = "pvc-none"
expect_code(grpc.StatusCode.NOT_FOUND,
            lambda: rpc("Controller", "ControllerExpandVolume", r, csi.ControllerExpandVolumeResponse),
            "expand unknown volume")
ok("ControllerExpandVolume: quota raised online to 300 MiB, df follows, the 150 MiB write fits")

# A pod's container holds its own bind of the target in its own mount namespace; the plugin
# restarts: the pod keeps reading and writing.
podview = E["POD_VIEW"]
reader = subprocess.Popen(
    ["unshare", "-m", "--propagation", "private", "sh", "-c",
     'mkdir -p "$2" && mount --bind "$1" "$2" && i=0; while [ $i -lt 600 ]; do '
     'cat "$2/shared.txt" > /dev/null || exit 1; echo $i > "$2/heartbeat-pod" || exit 1; '
     'i=$((i+1)); sleep 0.2; done', "sh", ta, podview])
time.sleep(1)
subprocess.check_call(["bash", "-c", E["RESTART_PLUGIN"]])
wait_for(lambda: probe(), 30, "plugin back after restart")
time.sleep(2)
assert reader.poll() is None, "the pod's reader died when the plugin restarted"
before = open(os.path.join(ta, "heartbeat-pod")).read()
time.sleep(1.5)
assert open(os.path.join(ta, "heartbeat-pod")).read() != before, "the pod stopped writing"
publish("pvc-1", ta)  # the restarted plugin knows the target is already published
ok("cairn-csi restarted: a reader in its own mount namespace kept reading and writing")

# The mount process dies: the plugin notices, mounts again and binds every target again.
killed = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
    except OSError:
        continue
    if argv[0].endswith(b"mount.cairn") and NODE_MOUNT.encode() in argv:
        os.kill(int(pid), 9)  # the FUSE daemon of this test's node mount
        killed += 1
assert killed == 1, killed
t0 = time.time()
wait_for(lambda: open(os.path.join(ta, "shared.txt")).read() == "written through pod a\n", 60,
         "target a working again after the mount process died")
wait_for(lambda: open(os.path.join(tr, "shared.txt")).read() == "written through pod a\n", 30,
         "read-only target working again")
try:
    open(os.path.join(tr, "nope"), "w")
    fail("the re-bound read-only target accepted a write")
except OSError as e:
    assert e.errno == errno.EROFS, e
reader.kill()
reader.wait()
ok("node mount process killed: mounted again and every target re-bound in %.1f s "
   "(read-only kept)" % (time.time() - t0))

# Unpublish: idempotent, and safe on a broken mount.
for t in (ta, tb, tr):
    unpublish("pvc-1", t)
    unpublish("pvc-1", t)
    assert not os.path.exists(t), t
unpublish("pvc-1", target("pod-never"))
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: unpublish("pvc-1", "/etc"), "unpublish /etc")
ok("NodeUnpublishVolume: targets gone, repeat and never-published targets fine, /etc refused")

# Mount flags are honoured.
tn = target("pod-n")
publish("pvc-1", tn, cap=mount_cap(flags=["noexec", "nosuid"]))
flags = os.statvfs(tn).f_flag
assert flags & os.ST_NOEXEC and flags & os.ST_NOSUID and not flags & os.ST_RDONLY, flags
unpublish("pvc-1", tn)
ok("mount flags noexec and nosuid applied to the bind")

# Unpublish of a target whose mount is dead (its FUSE daemon gone): detached, no error.
dead_src, tdead = os.path.join(E["T"], "dead-mount"), target("pod-dead")
os.makedirs(dead_src, exist_ok=True)
os.makedirs(tdead, exist_ok=True)
subprocess.check_call([E["MOUNT_BIN"], E["MOUNT_SRC"], dead_src, "-o", E["MOUNT_OPTS"]])
subprocess.check_call(["mount", "--bind", dead_src, tdead])
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
    except OSError:
        continue
    if argv[0].endswith(b"mount.cairn") and dead_src.encode() in argv:
        os.kill(int(pid), 9)
try:
    os.statvfs(tdead)
    fail("the target's mount should be dead")
except OSError as e:
    assert e.errno in (errno.ENOTCONN, errno.ECONNABORTED), e
unpublish("pvc-1", tdead)
assert not os.path.exists(tdead)
subprocess.call(["umount", "-l", dead_src])
ok("NodeUnpublishVolume on a dead mount (ENOTCONN): detached and removed")

# Static provisioning: a volume made by the admin tool is published like any other.
static_dir = os.path.join(NODE_MOUNT, "volumes", "static-1")
subprocess.check_call(["bash", "-c", E["CAIRN"] + " volume create static-1 --size 50M >/dev/null"])
with open(os.path.join(static_dir, "data.txt"), "w") as f:
    f.write("provisioned by hand\n")
ts = target("pod-s")
publish("static-1", ts)
assert open(os.path.join(ts, "data.txt")).read() == "provisioned by hand\n"
assert os.statvfs(ts).f_blocks * os.statvfs(ts).f_frsize == 50 * MiB
unpublish("static-1", ts)
ok("static provisioning: an existing /volumes directory published as a volume")

# Delete: data gone, idempotent; a StorageClass asking for trash keeps the data.
delete("pvc-1")
delete("pvc-1")
# (the node mount's kernel caches names for up to its entry timeout, 1 s)
wait_for(lambda: not os.path.exists(os.path.join(NODE_MOUNT, "volumes", "pvc-1")), 10,
         "pvc-1 gone from the node mount")
create("pvc-2", 10 * MiB, params={"onDelete": "trash"})
with open(os.path.join(NODE_MOUNT, "volumes", "pvc-2", "keep.txt"), "w") as f:
    f.write("keep me\n")
delete("pvc-2")
trash = os.path.join(NODE_MOUNT, "volumes", ".trash")
wait_for(lambda: any(d.startswith("pvc-2-") for d in os.listdir(trash)), 10, "pvc-2 in the trash")
kept = [d for d in os.listdir(trash) if d.startswith("pvc-2-")]
assert len(kept) == 1 and open(os.path.join(trash, kept[0], "keep.txt")).read() == "keep me\n", kept
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: delete(""), "delete without id")
delete("../../etc")  # no such volume can exist: nothing happens
assert os.path.isdir("/etc")
ok("DeleteVolume: data removed (idempotent), onDelete=trash keeps it in /volumes/.trash")

# An inode limit from the StorageClass: stats report inodes used against it, creation past it
# fails with EDQUOT.
create("pvc-3", 10 * MiB, params={"inodeLimit": "5"})
expect_code(grpc.StatusCode.ALREADY_EXISTS, lambda: create("pvc-3", 10 * MiB), "same name, other inode limit")
expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: create("pvc-4", MiB, params={"inodeLimit": "-1"}),
            "bad inodeLimit")
t3 = target("pod-i")
publish("pvc-3", t3)
made = 0
try:
    for k in range(10):
        open(os.path.join(t3, "f%d" % k), "w").close()
        made += 1
    fail("more files than the inode limit")
except OSError as e:
    assert e.errno == errno.EDQUOT, e
assert made == 5, made
usage, _ = stats("pvc-3", t3)
inodes = usage[csi.VolumeUsage.INODES]
assert inodes.total == 5 and inodes.used == 5 and inodes.available == 0, inodes
unpublish("pvc-3", t3)
ok("inodeLimit: 5 files, the 6th fails with EDQUOT; stats report 5 of 5 inodes used")

# Meta unreachable: Probe says not ready.
subprocess.check_call(["bash", "-c", E["STOP_META"]])
wait_for(lambda: probe() is False, 30, "probe not ready with meta down")
ok("Probe reports not ready while meta is unreachable")
