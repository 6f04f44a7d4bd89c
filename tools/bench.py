#!/usr/bin/env python3
"""cairn beside MooseFS on the same machine: the same workloads on

  cairn          a local cluster (1 meta, 3 chunk servers, 3 replicas, encryption on),
  moosefs        MooseFS from Debian, 1 master and 3 chunk servers, goal 3, as shipped,
  moosefs-fsync  the same with HDD_FSYNC_BEFORE_CLOSE = 1 on its chunk servers (as shipped,
                 MooseFS acknowledges fsync without its chunk servers syncing to disk): the
                 peer of the figure that needs equal durability, the sequential write with
                 fsync. It runs every workload in the first round and that write in every
                 round (--fsync-peer-full-rounds): its other figures are compared with
                 nothing, and running them every round would take the benchmark past 20
                 minutes on a 2-core machine,
  local          a plain directory on the same disk (the ceiling),

run interleaved (every round runs every system once), several rounds, medians printed as a
markdown table and written as JSON. Each turn brings up a fresh instance of its system and
stops it after, so that only the system measured runs during its turn. Run through
tools/bench.sh, which installs what it needs.

  tools/bench.sh [--quick] [--rounds N] [--systems cairn,moosefs,...] [--json FILE]

MooseFS refuses loopback addresses between its own daemons, so its daemons and mfsmount run in
a network namespace whose only device is its loopback, with documentation addresses
(192.0.2.1 and 192.0.2.2) added there. Everything is torn down at the end.
"""
import argparse
import concurrent.futures
import datetime
import io
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CAIRN_BIN", os.path.join(ROOT, "build", "bin"))
MIB = 1 << 20


def sh(cmd, timeout=600, check=True, **kw):
    r = subprocess.run(cmd, shell=isinstance(cmd, str), check=False, timeout=timeout,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def pids_matching(needle):
    """Processes whose command line contains `needle` (the daemons this run started)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and "bench.py" not in cmd:
            out.append(int(p))
    return out


def proc_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError):
            pass
    return total


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Cairn:
    name = "cairn"
    label = "cairn (1 meta, 3 chunk servers, 3 replicas, encrypted)"

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "cairn")
        self.mnt = os.path.join(tmp, "cairn-mnt")

    def up(self):
        sh(["bash", os.path.join(ROOT, "tools", "cluster.sh"), "up", "--dir", self.dir, "--mount",
            self.mnt, "--chunks", "3", "--replicas", "3"], timeout=180)

    def down(self):
        sh(["bash", os.path.join(ROOT, "tools", "cluster.sh"), "down", "--dir", self.dir],
           timeout=120, check=False)

    def pids(self):
        out = {}
        piddir = os.path.join(self.dir, "pids")
        for f in sorted(os.listdir(piddir)) if os.path.isdir(piddir) else []:
            try:
                with open(os.path.join(piddir, f)) as fh:
                    out[f[:-4]] = int(fh.read().strip())
            except (OSError, ValueError):
                pass
        return out


class MooseFS:
    """One MooseFS instance (master + 3 chunk servers + mfsmount) on its own address."""
    NS = f"cairn-bench-{os.getpid()}"

    def __init__(self, tmp, fsync, ip):
        self.name = "moosefs-fsync" if fsync else "moosefs"
        self.fsync = fsync
        self.ip = ip
        self.dir = os.path.join(tmp, self.name)
        self.mnt = os.path.join(tmp, self.name + "-mnt")
        self.label = ("MooseFS, goal 3, chunk servers fsync (HDD_FSYNC_BEFORE_CLOSE = 1)"
                      if fsync else "MooseFS, goal 3, as shipped")

    @classmethod
    def make_namespace(cls):
        sh(["ip", "netns", "add", cls.NS])
        sh(["ip", "netns", "exec", cls.NS, "ip", "link", "set", "lo", "up"])
        for ip in ("192.0.2.1", "192.0.2.2"):
            sh(["ip", "netns", "exec", cls.NS, "ip", "addr", "add", ip + "/32", "dev", "lo"])

    @classmethod
    def remove_namespace(cls):
        sh(["ip", "netns", "del", cls.NS], check=False)

    def in_ns(self, args, **kw):
        return sh(["nsenter", f"--net=/run/netns/{self.NS}"] + args, **kw)

    def cfg(self, path, lines):
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def up(self):
        master = os.path.join(self.dir, "master")
        os.makedirs(master)
        os.makedirs(self.mnt)
        shutil.copy("/var/lib/mfs/metadata.mfs.empty", os.path.join(master, "metadata.mfs"))
        self.cfg(os.path.join(self.dir, "exports.cfg"), ["* / rw,alldirs,maproot=0"])
        self.cfg(os.path.join(self.dir, "master.cfg"), [
            "WORKING_USER = root", "WORKING_GROUP = root", f"DATA_PATH = {master}",
            f"EXPORTS_FILENAME = {self.dir}/exports.cfg",
            f"MATOML_LISTEN_HOST = {self.ip}", "MATOML_LISTEN_PORT = 9419",
            f"MATOCS_LISTEN_HOST = {self.ip}", "MATOCS_LISTEN_PORT = 9420",
            f"MATOCL_LISTEN_HOST = {self.ip}", "MATOCL_LISTEN_PORT = 9421"])
        self.in_ns(["mfsmaster", "-c", f"{self.dir}/master.cfg", "start"], timeout=60)
        for i in range(3):
            cs = os.path.join(self.dir, f"cs{i}")
            os.makedirs(os.path.join(cs, "hdd"))
            self.cfg(os.path.join(cs, "hdd.cfg"), [os.path.join(cs, "hdd")])
            self.cfg(os.path.join(cs, "cs.cfg"), [
                "WORKING_USER = root", "WORKING_GROUP = root", f"DATA_PATH = {cs}",
                f"HDD_CONF_FILENAME = {cs}/hdd.cfg", "HDD_LEAVE_SPACE_DEFAULT = 64MiB",
                f"MASTER_HOST = {self.ip}", "MASTER_PORT = 9420", f"BIND_HOST = {self.ip}",
                f"CSSERV_LISTEN_HOST = {self.ip}", f"CSSERV_LISTEN_PORT = {9422 + i}",
                f"HDD_FSYNC_BEFORE_CLOSE = {1 if self.fsync else 0}"])
            self.in_ns(["mfschunkserver", "-c", f"{cs}/cs.cfg", "start"], timeout=60)
        self.in_ns(["mfsmount", self.mnt, "-H", self.ip, "-P", "9421"], timeout=60)
        # Tools talk to the master through the mount: from inside the namespace too.
        self.in_ns(["mfssetgoal", "-r", "3", self.mnt], timeout=60)
        for _ in range(60):  # a goal-3 write needs all three chunk servers registered
            r = self.in_ns(["mfscli", "-H", self.ip, "-P", "9421", "-SCS", "-s,"], check=False,
                           timeout=30)
            if r.stdout.count(self.ip) >= 3:
                return
            time.sleep(1)
        raise RuntimeError(f"{self.name}: chunk servers did not register")

    def down(self):
        sh(["umount", self.mnt], check=False, timeout=60)
        sh(["umount", "-l", self.mnt], check=False, timeout=60)
        # Nothing of a turn is kept, so its daemons are killed rather than stopped (a stop
        # waits seconds for the master to save metadata and chunk servers to wind down).
        # They are ours: their command lines name this turn's files.
        for _ in range(100):
            left = self.pids()
            if not left:
                return
            for pid in left.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: processes left after SIGKILL: {left}")

    def pids(self):
        out = {}
        for pid in pids_matching(f"{self.dir}/master.cfg"):
            out["mfsmaster"] = pid
        for i in range(3):
            for pid in pids_matching(f"{self.dir}/cs{i}/cs.cfg"):
                out[f"mfschunkserver{i}"] = pid
        for pid in pids_matching(self.mnt):
            if proc_name(pid).startswith("mfsmount"):
                out["mfsmount"] = pid
        return out


class Local:
    name = "local"
    label = "plain directory on the same disk (ext4)"

    def __init__(self, tmp):
        self.mnt = os.path.join(tmp, "local")

    def up(self):
        os.makedirs(self.mnt)

    def down(self):
        pass

    def pids(self):
        return {}


def parallel_rmtree(path, workers=8):
    """shutil.rmtree, with the tree's lower directories removed side by side: removing tens of
    thousands of chunk files waits on the disk more than on the CPU (8 threads: 8 s instead of
    12 for 60,000 files of 70 KB here)."""
    dirs = [path]
    for _ in range(6):  # down to where there are enough directories to share out
        if len(dirs) >= 32:
            break
        below = [e.path for d in dirs for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
        if not below:
            break
        dirs = below
    if dirs != [path]:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda d: shutil.rmtree(d, ignore_errors=True), dirs))
    shutil.rmtree(path, ignore_errors=True)


def dd_time(args):
    t0 = time.monotonic()
    sh(["dd", "status=none"] + args, timeout=1800)
    return time.monotonic() - t0


def fio_json(args, timeout=600):
    r = sh(["fio", "--output-format=json"] + args, timeout=timeout)
    return json.loads(r.stdout[r.stdout.index("{"):])


def metadata_ops(root, files, dirs=10):
    """create, stat (after dropping caches) and unlink of `files` files in `dirs` directories,
    one thread per directory; ops/s, and stat latencies."""
    per = files // dirs
    paths = [[os.path.join(root, f"d{d}", f"f{i}") for i in range(per)] for d in range(dirs)]
    for d in range(dirs):
        os.makedirs(os.path.join(root, f"d{d}"))
    lat = [[] for _ in range(dirs)]

    def run(fn):
        threads = [threading.Thread(target=fn, args=(d,)) for d in range(dirs)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return per * dirs / (time.monotonic() - t0)

    def create(d):
        for p in paths[d]:
            os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))

    def stat(d):
        for p in paths[d]:
            t = time.monotonic()
            os.stat(p)
            lat[d].append(time.monotonic() - t)

    def unlink(d):
        for p in paths[d]:
            os.unlink(p)

    out = {"create_ops": run(create)}
    drop_caches()
    out["stat_ops"] = run(stat)
    out["unlink_ops"] = run(unlink)
    all_lat = sorted(x for l in lat for x in l)
    out["stat_p50_us"] = all_lat[len(all_lat) // 2] * 1e6
    out["stat_p99_us"] = all_lat[int(len(all_lat) * 0.99)] * 1e6
    for d in range(dirs):
        os.rmdir(os.path.join(root, f"d{d}"))
    return out


def make_tarball(tmp, files):
    """A tarball of `files` small files (0 to 16,000 bytes) in 200 x 10 directories, written
    directly (no tree on disk to make and remove first)."""
    rnd = random.Random(7)
    tree = {}
    for i in range(files):
        d = f"./dir{i % 200:03d}/sub{(i // 200) % 10}"
        tree.setdefault(d, []).append(
            (f"file{i}.txt", rnd.randbytes(rnd.choice([0, 100, 1000, 4000, 9000, 16000]))))
    now = int(time.time())
    tarball = os.path.join(tmp, "small.tar")

    def entry(name, kind, mode, size=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, now
        ti.uname = ti.gname = "root"
        return ti
    with tarfile.open(tarball, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(entry(".", tarfile.DIRTYPE, 0o755))
        made = set()
        for d in sorted(tree):
            top = d.rsplit("/", 1)[0]
            if top not in made:
                made.add(top)
                tar.addfile(entry(top, tarfile.DIRTYPE, 0o755))
            tar.addfile(entry(d, tarfile.DIRTYPE, 0o755))
            for name, data in tree[d]:
                tar.addfile(entry(f"{d}/{name}", tarfile.REGTYPE, 0o644, len(data)),
                            io.BytesIO(data))
    return tarball


def run_round(system, cfg, tmp, src, tarball, fsync_write_only=False):
    """One turn's workloads (only the sequential write with fsync if `fsync_write_only`): their
    results, and the seconds each phase took."""
    m = system.mnt
    res = {}
    phases = {}
    mark = [time.monotonic()]

    def phase(name):
        now = time.monotonic()
        phases[name] = round(now - mark[0], 1)
        mark[0] = now

    pids = list(system.pids().values())
    seq = os.path.join(m, "seq")
    rand = os.path.join(m, "rand.dat")
    size = cfg.size_mib
    if not fsync_write_only:
        c0 = cpu_seconds(pids)
        t = dd_time([f"if={src}", f"of={seq}", "bs=1M"])
        c1 = cpu_seconds(pids)
        res["seq_write_mibs"] = size / t
        if pids:
            res["cpu_s_per_gib"] = (c1 - c0) / (size / 1024)
        os.unlink(seq)
    res["seq_write_fsync_mibs"] = size / dd_time([f"if={src}", f"of={seq}", "bs=1M",
                                                  "conv=fsync"])
    phase("seq_write")
    if fsync_write_only:
        os.unlink(seq)
        return res, phases
    drop_caches()
    res["seq_read_cold_mibs"] = size / dd_time([f"if={seq}", "of=/dev/null", "bs=1M"])
    res["seq_read_warm_mibs"] = size / dd_time([f"if={seq}", "of=/dev/null", "bs=1M"])
    if sh(["cmp", src, seq], check=False, timeout=600).returncode != 0:
        raise RuntimeError(f"{system.name}: the file read back differs from what was written")
    phase("seq_read")

    # The random workloads' file is the sequential one cut to its size (written the same way,
    # without the time of writing it once more).
    os.truncate(seq, cfg.rand_mib * MIB)
    os.rename(seq, rand)
    drop_caches()
    common = [f"--filename={rand}", f"--size={cfg.rand_mib}m", "--bs=4k", "--direct=1",
              "--ioengine=libaio", "--time_based", "--name=r", "--randrepeat=0"]
    j = fio_json(common + [f"--runtime={cfg.fio_s}", "--rw=randread", "--iodepth=16"])
    res["rand_read_iops"] = j["jobs"][0]["read"]["iops"]
    j = fio_json(common + [f"--runtime={cfg.fio_s}", "--rw=randwrite", "--iodepth=16"])
    res["rand_write_iops"] = j["jobs"][0]["write"]["iops"]
    # Latencies one at a time: 2 s gives tens of thousands of samples on every system.
    j = fio_json(common + ["--runtime=2", "--rw=randread", "--iodepth=1"])
    pct = j["jobs"][0]["read"]["clat_ns"]["percentile"]
    res["read4k_p50_us"] = pct["50.000000"] / 1000
    res["read4k_p99_us"] = pct["99.000000"] / 1000
    os.unlink(rand)
    phase("random")

    meta = os.path.join(m, "meta")
    os.makedirs(meta)
    res.update(metadata_ops(meta, cfg.files))
    os.rmdir(meta)
    phase("metadata")

    out = os.path.join(m, "tar")
    os.makedirs(out)
    t0 = time.monotonic()
    sh(["tar", "xf", tarball, "-C", out], timeout=1800)
    res["tar_extract_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    sh(["rm", "-rf", out], timeout=1800)
    res["rm_rf_s"] = time.monotonic() - t0
    phase("tar_rm")
    return res, phases


# metric -> (label, unit, higher is better, peer to compare with, target ratio)
METRICS = [
    ("seq_write_mibs", "sequential write, 1 MiB blocks", "MiB/s", True, "moosefs", 1.5),
    ("seq_write_fsync_mibs", "sequential write + fsync", "MiB/s", True, "moosefs-fsync", 1.5),
    ("seq_read_cold_mibs", "sequential read, cold", "MiB/s", True, "moosefs", 1.5),
    ("seq_read_warm_mibs", "sequential read, warm", "MiB/s", True, "moosefs", None),
    ("rand_read_iops", "random 4 KiB read, O_DIRECT, 16 in flight", "IOPS", True, "moosefs", 1.0),
    ("rand_write_iops", "random 4 KiB write, O_DIRECT, 16 in flight", "IOPS", True, "moosefs", 1.0),
    ("create_ops", "create (10 dirs, 10 threads)", "ops/s", True, "moosefs", 1.0),
    ("stat_ops", "stat, cold", "ops/s", True, "moosefs", 1.0),
    ("unlink_ops", "unlink", "ops/s", True, "moosefs", 1.0),
    ("tar_extract_s", "tar extract of small files", "s", False, "moosefs", 1.0),
    ("rm_rf_s", "rm -rf of the extracted tree", "s", False, "moosefs", 1.0),
    ("stat_p50_us", "stat latency p50", "µs", False, "moosefs", None),
    ("stat_p99_us", "stat latency p99", "µs", False, "moosefs", None),
    ("read4k_p50_us", "4 KiB read latency p50 (O_DIRECT)", "µs", False, "moosefs", None),
    ("read4k_p99_us", "4 KiB read latency p99 (O_DIRECT)", "µs", False, "moosefs", None),
    ("cpu_s_per_gib", "CPU seconds per GiB written (all processes)", "s", False, "moosefs", None),
]


def fmt(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "kernel": platform.release()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (development)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--systems", default="cairn,moosefs,moosefs-fsync,local")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--fsync-peer-full-rounds", type=int, default=1, metavar="N",
                    help="rounds in which MooseFS with fsync runs every workload, not only the "
                    "sequential write with fsync (default 1: its other figures are compared with "
                    "nothing, and running them every round takes the benchmark past 20 minutes)")
    args = ap.parse_args()

    class Cfg:
        pass
    cfg = Cfg()
    cfg.quick = args.quick
    cfg.rounds = args.rounds or (1 if args.quick else 3)
    cfg.fsync_peer_full_rounds = args.fsync_peer_full_rounds
    cfg.size_mib = 256 if args.quick else 1024
    cfg.rand_mib = 64 if args.quick else 256
    cfg.fio_s = 2 if args.quick else 3
    cfg.files = 2000 if args.quick else 10000
    cfg.tar_files = 2000 if args.quick else 20000
    names = args.systems.split(",")

    tmp = tempfile.mkdtemp(prefix="cairn-bench.", dir="/var/tmp")

    def make(name, base):
        if name == "cairn":
            return Cairn(base)
        if name == "moosefs":
            return MooseFS(base, False, "192.0.2.1")
        if name == "moosefs-fsync":
            return MooseFS(base, True, "192.0.2.2")
        if name == "local":
            return Local(base)
        sys.exit(f"unknown system {name}")
    systems = [make(n, tmp) for n in names]  # for their names and labels
    uses_mfs = any(isinstance(s, MooseFS) for s in systems)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    raw = {s.name: [] for s in systems}
    rss = {s.name: {} for s in systems}
    # A turn's files are removed while the next turn's system comes up (and before its
    # workloads start): the removal of tens of thousands of chunk files takes seconds.
    cleaning = [None]

    def clean_after(base, phases):
        t = time.monotonic()
        parallel_rmtree(base)
        phases["clean"] = round(time.monotonic() - t, 1)

    def wait_cleaning():
        if cleaning[0]:
            cleaning[0].join()
            cleaning[0] = None
    try:
        if uses_mfs:
            MooseFS.make_namespace()
        src = os.path.join(tmp, "src")
        with open(src, "wb") as f:
            for _ in range(cfg.size_mib):
                f.write(os.urandom(MIB))
        print(f"making a tarball of {cfg.tar_files} small files", flush=True)
        tarball = make_tarball(tmp, cfg.tar_files)
        for r in range(cfg.rounds):
            for n in names:
                # Every turn has a fresh instance to itself: the others are not running, so
                # neither their idle work nor what they left to write back lands in this turn.
                base = os.path.join(tmp, f"turn-{r + 1}-{n}")
                os.makedirs(base)
                s = make(n, base)
                if r == 0:
                    print(f"{n}: {s.label}", flush=True)
                # MooseFS with fsync is the peer of the fsync figure only: it runs every
                # workload in its first rounds, the write with fsync in the others.
                fsync_only = n == "moosefs-fsync" and r >= cfg.fsync_peer_full_rounds
                phases = {}
                try:
                    t_up = time.monotonic()
                    s.up()
                    phases["up"] = round(time.monotonic() - t_up, 1)
                    t0 = time.monotonic()
                    wait_cleaning()
                    os.sync()
                    for path in (src, tarball):  # both in the page cache for every turn
                        with open(path, "rb") as f:
                            while f.read(8 * MIB):
                                pass
                    phases["prep"] = round(time.monotonic() - t0, 1)
                    t0 = time.monotonic()
                    res, ran = run_round(s, cfg, tmp, src, tarball, fsync_only)
                    t_run = time.monotonic() - t0
                    phases.update(ran)
                    res["phases"] = phases
                    for k, pid in s.pids().items():
                        v = peak_rss_mib(pid)
                        if v is not None:
                            rss[n][k] = max(v, rss[n].get(k) or 0)
                finally:
                    try:
                        t_down = time.monotonic()
                        s.down()
                        phases["down"] = round(time.monotonic() - t_down, 1)
                    finally:
                        wait_cleaning()
                        cleaning[0] = threading.Thread(target=clean_after, args=(base, phases))
                        cleaning[0].start()
                raw[n].append(res)
                print(f"round {r + 1}/{cfg.rounds} {n}: {t_run:.0f} s ("
                      + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()) + " s; "
                      f"write + fsync {res['seq_write_fsync_mibs']:.0f} MiB/s"
                      + (f", cold read {res['seq_read_cold_mibs']:.0f} MiB/s, "
                         f"create {res['create_ops']:.0f}/s" if "create_ops" in res else "")
                      + ")", flush=True)
    finally:
        wait_cleaning()
        if uses_mfs:
            MooseFS.remove_namespace()
        shutil.rmtree(tmp, ignore_errors=True)

    median = {n: {k: statistics.median([x[k] for x in rs if k in x]) for k in rs[0]
                  if k != "phases"}
              for n, rs in raw.items() if rs}
    elapsed = time.monotonic() - started
    info = machine()
    print()
    print(f"{datetime.date.today().isoformat()}, {info['cpu']}, {info['cores']} cores, "
          f"{info['memory_gib']} GiB, Linux {info['kernel']}; medians of {cfg.rounds} rounds"
          f"{' (--quick)' if cfg.quick else ''}, {cfg.size_mib} MiB sequential, "
          f"{cfg.rand_mib} MiB random, {cfg.files} files, tarball of {cfg.tar_files}; "
          f"{elapsed / 60:.1f} min")
    print()
    cols = [s.name for s in systems]
    print("| workload | unit | " + " | ".join(cols) + " | cairn vs MooseFS | target |")
    print("|" + " --- |" * (len(cols) + 4))
    verdicts = {}
    for key, label, unit, higher, peer, target in METRICS:
        vals = [median.get(c, {}).get(key) for c in cols]
        if all(v is None for v in vals):
            continue
        ratio = None
        if "cairn" in median and peer in median and key in median["cairn"] and key in median[peer]:
            a, b = median["cairn"][key], median[peer][key]
            ratio = (a / b if higher else b / a) if a and b else None
        verdict = ""
        if target and ratio is not None:
            verdict = f"≥ {target}× {peer}: " + ("met" if ratio >= target else "not met")
            verdicts[key] = ratio >= target
        print(f"| {label} | {unit} | " + " | ".join(fmt(v) for v in vals) +
              f" | {fmt(ratio) + '×' if ratio else '–'} | {verdict} |")
    if "moosefs-fsync" in raw and 0 < cfg.fsync_peer_full_rounds < cfg.rounds:
        full = min(cfg.fsync_peer_full_rounds, len(raw["moosefs-fsync"]))
        print(f"\nmoosefs-fsync ran the sequential write with fsync in every round, its other "
              f"workloads in {full} of {cfg.rounds} (--fsync-peer-full-rounds): only that "
              "figure is compared.")
    print()
    print("peak resident memory (MiB): " + "; ".join(
        f"{n}: " + ", ".join(f"{k} {fmt(v)}" for k, v in procs.items() if v is not None)
        for n, procs in rss.items() if procs))
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info,
              "config": vars(cfg), "systems": {s.name: s.label for s in systems},
              "rounds": raw, "median": median, "peak_rss_mib": rss, "targets_met": verdicts,
              "elapsed_s": round(elapsed)}
    text = json.dumps(result, indent=1, sort_keys=True)
    print()
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
