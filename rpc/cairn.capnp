# Wire formats of cairn: the authentication gate, the meta service and the chunk service.
#
# Every connection between cairn processes starts at a Gate (the bootstrap capability). The Gate
# offers nothing but the mutual challenge and response (see rpc/auth.h); only a peer that proved
# knowledge of the cluster secret receives the capability of the real service.
#
# Errors a caller branches on travel as `err`, a Linux errno value (0 = success). Everything else
# (disconnects, overload, malformed messages) is a Cap'n Proto exception.

@0xc5b1f3e0a8d4e221;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cairn::proto");

enum Role {
  client @0;   # mount.cairn, ordinary file access
  server @1;   # chunk servers talking to meta or to each other
  admin @2;    # the cairn tool
  peer @3;     # another meta server (Raft traffic)
}

interface Gate {
  challenge @0 () -> (serverNonce :Data);
  # Step 1: the server hands out a fresh 32-byte nonce, remembered for this connection only.

  login @1 (clientNonce :Data, proof :Data, role :Role) -> (serverProof :Data, service :Capability);
  # Step 2: proof = HMAC-SHA256(secret, "cairn-client" || serverNonce || clientNonce || role).
  # The server answers with its own proof HMAC-SHA256(secret, "cairn-server" || clientNonce ||
  # serverNonce) so the client knows it talks to a member of the cluster, and the service.
}

# ---------------------------------------------------------------------------------------------
# Meta service

struct Attr {
  ino @0 :UInt64;
  mode @1 :UInt32;
  uid @2 :UInt32;
  gid @3 :UInt32;
  nlink @4 :UInt32;
  size @5 :UInt64;
  atimeNs @6 :Int64;
  mtimeNs @7 :Int64;
  ctimeNs @8 :Int64;
  rdev @9 :UInt32;
  dirCookie @10 :UInt64;  # directories: the cookie of the next name added (each add takes one)
}

struct DirEntry {
  name @0 :Text;
  ino @1 :UInt64;
  mode @2 :UInt32;     # file type bits only
  cookie @3 :UInt64;   # resume point: readdir(after = cookie) continues after this entry
  attr @4 :Attr;       # with ReaddirOp.attrs (readdirplus)
}

struct Replica {
  server @0 :UInt32;
  addr @1 :Text;
}

struct ChunkInfo {
  index @0 :UInt64;    # position in the file (offset / chunkSize)
  id @1 :UInt64;
  version @2 :UInt64;
  replicas @3 :List(Replica);
}

struct ServerInfo {
  id @0 :UInt32;
  addr @1 :Text;
  host @2 :Text;
  state @3 :Text;      # online, suspect, dead, draining (online and being emptied)
  capacityBytes @4 :UInt64;
  usedBytes @5 :UInt64;
  chunks @6 :UInt64;
  zone @7 :Text;
  rack @8 :Text;
  draining @9 :Bool;
  replicas @10 :UInt64;  # replicas the chunk table places on this server
  scrub @11 :ScrubProgress;
  assignedBytes @12 :UInt64;  # bytes of the chunks the table places here (what rebalance evens)
}

# A chunk server's background verification: the current pass and the last complete one.
struct ScrubProgress {
  passChunks @0 :UInt64;      # copies in the current pass
  doneChunks @1 :UInt64;      # of which verified
  lastPassEnd @2 :Int64;      # unix seconds when the last complete pass ended (0: none yet)
  corruptFound @3 :UInt64;    # damaged copies found since the server started
}

struct SetAttr {
  setMode @0 :Bool;
  mode @1 :UInt32;
  setUid @2 :Bool;
  uid @3 :UInt32;
  setGid @4 :Bool;
  gid @5 :UInt32;
  setSize @6 :Bool;
  size @7 :UInt64;
  setAtime @8 :Bool;
  atimeNs @9 :Int64;
  atimeNow @10 :Bool;
  setMtime @11 :Bool;
  mtimeNs @12 :Int64;
  mtimeNow @13 :Bool;
  setCtime @14 :Bool;
  ctimeNs @15 :Int64;
}

struct MetaRequest {
  clientId @0 :UInt64;   # with seq: a retried mutation returns the first reply
  seq @1 :UInt64;
  op :union {
    lookup @2 :Named;
    getattr @3 :UInt64;
    setattr @4 :SetAttrOp;
    mknod @5 :MknodOp;            # regular files, directories, fifos, sockets, devices
    symlink @6 :SymlinkOp;
    link @7 :LinkOp;
    unlink @8 :Named;
    rmdir @9 :Named;
    rename @10 :RenameOp;
    readlink @11 :UInt64;
    readdir @12 :ReaddirOp;
    statfs @13 :Void;
    setxattr @14 :XattrOp;
    getxattr @15 :XattrOp;
    listxattr @16 :UInt64;
    removexattr @17 :XattrOp;
    chunkGet @18 :ChunkGetOp;
    chunkList @19 :UInt64;
    commitWrite @20 :CommitWriteOp;
    registerServer @21 :RegisterOp;
    heartbeat @22 :HeartbeatOp;
    status @23 :Void;
    clusterInfo @24 :Void;
    setKeyCheck @25 :Data;
    metaStatus @26 :Void;         # this meta server's own Raft view (never redirected)
    metaAdd @27 :MetaMember;      # add a meta server (admin)
    metaRemove @28 :UInt64;       # remove a meta server by id (admin)
    metaTransfer @29 :UInt64;     # hand leadership to this meta server (admin)
    format @30 :FormatOp;         # the first command of every cluster, proposed by its first leader
    chunkFail @31 :ChunkFailOp;   # a replica failed during a write: drop it, bump the version
    chunkRepair @32 :ChunkRepairOp;  # a repair finished: the new replica set and version
    chunkCorrupt @33 :ChunkCorruptOp;  # a replica failed its checksum (scrubber or reader)
    serverDrain @34 :ServerDrainOp;    # start or stop moving every replica off a chunk server
    chunkOrphans @35 :ChunkOrphansOp;  # copies a server holds that no file refers to
    setReplicas @36 :UInt32;           # change the cluster's replica count (admin)
    quotaSet @37 :QuotaSetOp;          # set, change or (both limits 0) remove a directory quota
    quotaGet @38 :UInt64;              # a directory's quota and usage (ENODATA: none)
    statfsAt @39 :UInt64;              # statfs seen from an inode: its quota, if any, is the size
    metaDump @40 :MetaDumpOp;          # a consistent copy of this meta server's store (fsck)
    fsckFix @41 :FsckFixOp;            # one repair found by cairn fsck, rechecked at apply
    rebalance @42 :RebalanceOp;        # start, stop or configure rebalancing (admin)
    rebalancePlan @43 :Float64;        # the moves a rebalance with this tolerance would make
    repairPause @44 :Bool;             # pause (true) or resume chunk repairs and moves (admin)
    watch @45 :WatchOp;                # a mount's long poll for other clients' changes; also
                                       # renews its session with the leader
    lock @46 :LockOp;                  # set or release a file lock (granted or the conflict)
    lockTest @47 :LockOp;              # F_GETLK: the lock that would conflict, if any
    sessionEnd @48 :UInt64;            # a client's session ended: its locks are released and
                                       # its open files closed (meta proposes it at expiry)
    sessionStart @49 :SessionOp;       # a client's session began (meta proposes it at the first
                                       # watch): a new leader knows whom to wait for
    openFile @50 :OpenRef;             # getattr for an open(): the file is open in the session
                                       # until closed (see WatchOp.closed)
    reclaim @51 :List(UInt64);         # files unlinked while open that no session holds open
                                       # any more: their data goes (meta proposes it)
    punch @52 :PunchOp;                # fallocate(PUNCH_HOLE): whole chunks of a file go
    offerFloor @53 :UInt64;            # chunk ids offered at create below this can no longer
                                       # be bound, and copies of them may be garbage (meta
                                       # proposes it, a while after handing them out)
    sync @55 :Void;                    # answered once everything meta answered before it is
                                       # on stable storage (fsync, fsyncdir)
    idGap @56 :UInt64;                 # inode and chunk ids jump this far ahead: a leader whose
                                       # store was rebuilt after its machine went down proposes
                                       # it, so that ids answered but never synced are not given
                                       # out a second time
  }
  # Every request of this client with a lower seq has had its reply (or been given up on):
  # meta forgets those replies. 0: not told (they are forgotten after the reply lifetime).
  ackedBelow @54 :UInt64;

  # Chunks [first, first + count) of a regular file are dropped (the client zeroes the partial
  # edges of the hole itself); mtime and ctime become the command's time.
  struct PunchOp { ino @0 :UInt64; first @1 :UInt64; count @2 :UInt64; }

  struct SessionOp {
    client @0 :UInt64;
    host @1 :Text;
    mount @2 :Text;
  }

  # An open of a file by a client: `gen` grows with every first open of a file in that client, so
  # a close that arrives after a later reopen does not close it.
  struct OpenRef { ino @0 :UInt64; gen @1 :UInt64; }

  struct WatchOp {
    epoch @0 :UInt64;     # of the feed the changes after `after` come from (0: start)
    after @1 :UInt64;
    waitMs @2 :UInt32;    # answer after at most this long when nothing changes (max 30000)
    host @3 :Text;        # who holds the session (shown by cairn status)
    mount @4 :Text;
    closed @5 :List(OpenRef);   # files this client closed since its last watch
    opened @6 :List(OpenRef);   # with resync: every file the client has open
    resync @7 :Bool;            # the first watch of a new feed (a new leader): `opened` is whole
  }

  enum LockType { read @0; write @1; unlock @2; }

  struct LockOp {
    ino @0 :UInt64;
    owner @1 :UInt64;     # the kernel's lock owner; the client is the request's clientId
    pid @2 :UInt32;
    type @3 :LockType;
    start @4 :UInt64;
    end @5 :UInt64;       # exclusive; 2^64-1: to any end of file
    flock @6 :Bool;       # flock(2) lock (whole file), else POSIX record lock
  }

  struct MetaDumpOp {
    token @0 :UInt64;       # 0: make a new copy (answered with its token); else continue it
    offset @1 :UInt64;      # the reply carries up to 4 MiB from here
  }

  enum FsckFixKind {
    dropEntry @0;      # an entry whose inode does not exist: remove it (and its readdir cookie)
    setNlink @1;       # an inode's link count: set `value` when it is still `expect`
    relink @2;         # an inode no entry refers to: link it into /lost+found as #INO
    dropChunk @3;      # a chunk past the end of its file: drop it (its copies become garbage)
    setParent @4;      # a directory's parent pointer: set `value` when it is still `expect`
    setInodeCount @5;  # the inode counter (statfs): set `value` when it is still `expect`
  }

  struct FsckFixOp {
    kind @0 :FsckFixKind;
    parent @1 :UInt64;
    name @2 :Text;
    ino @3 :UInt64;
    expect @4 :UInt64;
    value @5 :UInt64;
    index @6 :UInt64;
    id @7 :UInt64;
  }

  struct RebalanceOp {
    active @0 :Bool;          # run (true) or stop (false) a rebalance now
    tolerance @1 :Float64;    # used fraction of every server within this of the mean (0.05: 5 points)
    setAuto @2 :Bool;         # instead of the above, change only the automatic setting (and the
    auto @3 :Bool;            # tolerance it uses): start a rebalance whenever a new server joins
  }

  struct ChunkCorruptOp {
    id @0 :UInt64;
    server @1 :UInt32;      # the server holding the bad copy (0: look it up by addr)
    addr @2 :Text;
    version @3 :UInt64;     # the version of the bad copy (0: unknown); a report about an older
                            # version than the chunk's is ignored (that copy is gone already)
  }

  struct QuotaSetOp {
    ino @0 :UInt64;
    limitBytes @1 :UInt64;    # 0: unlimited
    limitInodes @2 :UInt64;   # 0: unlimited
  }

  struct ServerDrainOp {
    server @0 :UInt32;
    drain @1 :Bool;
  }

  struct ChunkOrphansOp {
    server @0 :UInt32;
    ids @1 :List(UInt64);
  }

  struct ChunkRepairOp {
    ino @0 :UInt64;
    index @1 :UInt64;
    id @2 :UInt64;
    version @3 :UInt64;         # the version the repair started from
    newVersion @4 :UInt64;
    servers @5 :List(UInt32);
  }

  struct ChunkFailOp {
    ino @0 :UInt64;
    index @1 :UInt64;
    id @2 :UInt64;
    version @3 :UInt64;
    failedAddr @4 :Text;
  }

  struct FormatOp {
    chunkSizeBytes @0 :UInt64;
    replicas @1 :UInt32;
    clusterId @2 :Text;
    members @3 :List(MetaMember);
  }

  struct Named { parent @0 :UInt64; name @1 :Text; }
  struct SetAttrOp {
    ino @0 :UInt64; attr @1 :SetAttr;
    # Set: the client's written size and mtime are committed first, in the same command (as
    # commitWrite; its errors are this op's). Never together with a size change.
    commit @2 :CommitWriteOp;
  }
  struct MknodOp {
    parent @0 :UInt64; name @1 :Text; mode @2 :UInt32; rdev @3 :UInt32;
    uid @4 :UInt32; gid @5 :UInt32; exclusive @6 :Bool;
    openGen @7 :UInt64;   # not 0: created by open(O_CREAT), open in the session from now on
    umask @8 :UInt32;     # the creator's umask: applied unless the parent has a default ACL
    firstChunk @9 :Bool;  # a new regular file: offer a chunk id and replicas for its first
                          # chunk (offeredChunk), which the creator's first commit binds
  }
  struct SymlinkOp { parent @0 :UInt64; name @1 :Text; target @2 :Text; uid @3 :UInt32; gid @4 :UInt32; }
  struct LinkOp { ino @0 :UInt64; newParent @1 :UInt64; newName @2 :Text; }
  struct RenameOp {
    parent @0 :UInt64; name @1 :Text; newParent @2 :UInt64; newName @3 :Text;
    flags @4 :UInt32;   # RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2
  }
  struct ReaddirOp {
    ino @0 :UInt64; after @1 :UInt64; maxEntries @2 :UInt32;
    attrs @3 :Bool;   # each entry's attributes too (the kernel's readdirplus: no lookup after),
                      # and the directory's own in parentAttr
  }
  struct XattrOp { ino @0 :UInt64; name @1 :Text; value @2 :Data; flags @3 :UInt32; }
  struct ChunkGetOp { ino @0 :UInt64; index @1 :UInt64; allocate @2 :Bool; }
  struct CommitWriteOp {
    ino @0 :UInt64; size @1 :UInt64; mtimeNs @2 :Int64;
    # A chunk offered at create and written since: recorded as the file's chunk at its index
    # (index 0, version 1), unless another is there already, which fails the commit with EEXIST
    # and names that one in boundChunk.
    bind @3 :ChunkInfo;
  }
  struct RegisterOp {
    uuid @0 :Text; addr @1 :Text; host @2 :Text;
    capacityBytes @3 :UInt64; usedBytes @4 :UInt64; chunks @5 :UInt64;
    zone @6 :Text; rack @7 :Text;   # failure-domain labels (empty: none)
  }
  struct HeartbeatOp {
    server @0 :UInt32; capacityBytes @1 :UInt64; usedBytes @2 :UInt64; chunks @3 :UInt64;
    # A page of the chunk ids this server holds, ascending, starting after `inventoryAfter`;
    # successive heartbeats walk the whole store so meta can find orphaned copies.
    inventoryAfter @4 :UInt64;
    inventory @5 :List(UInt64);
    scrub @6 :ScrubProgress;
  }
}

struct MetaMember {
  id @0 :UInt64;
  addr @1 :Text;
}

struct MetaNodeStatus {
  id @0 :UInt64;
  addr @1 :Text;
  role @2 :Text;
  term @3 :UInt64;
  commit @4 :UInt64;
  applied @5 :UInt64;
  leader @6 :UInt64;
  lastIndex @7 :UInt64;
  snapshotIndex @8 :UInt64;
  members @9 :List(MetaMember);
  matches @10 :List(UInt64);    # leader only: each member's acknowledged index, same order
}

struct StatFs {
  blockSize @0 :UInt32;
  totalBytes @1 :UInt64;
  freeBytes @2 :UInt64;
  files @3 :UInt64;
  freeFiles @4 :UInt64;
}

struct ClusterStatus {
  servers @0 :List(ServerInfo);
  chunksTotal @1 :UInt64;
  underReplicated @2 :UInt64;
  lost @3 :UInt64;
  replicas @4 :UInt32;
  metaAddr @5 :Text;
  repairsRunning @6 :UInt32;
  repairQueue @7 :UInt64;       # chunks waiting for a copy, a trim or a move off a draining server
  repairedChunks @8 :UInt64;    # since this leader took over
  repairedBytes @9 :UInt64;
  repairBytesPerSec @10 :UInt64;  # over the last minute
  garbagePending @11 :UInt64;   # copies waiting for deletion (grace period or a server's return)
  overReplicated @12 :UInt64;
  rebalance @13 :RebalanceStatus;
  corruptFound @14 :UInt64;     # damaged copies the chunk servers' scrubbers found
  metaMembers @15 :UInt32;      # meta servers in the Raft configuration
  repairsPaused @16 :Bool;      # an operator paused repairs (cairn repair pause)
  clients @17 :List(ClientSession);  # mounts with a live session on this leader
  unlinkedOpen @18 :UInt64;     # files unlinked while open, kept until their last close
}

struct QuotaInfo {
  ino @0 :UInt64;
  limitBytes @1 :UInt64;
  limitInodes @2 :UInt64;
  usedBytes @3 :UInt64;
  usedInodes @4 :UInt64;
}

# What clients must drop from their caches because another client changed it.
struct Change {
  origin @0 :UInt64;    # the client id that made the change (it needs no invalidation)
  ino @1 :UInt64;       # name empty: this inode's attributes or data changed
  parent @2 :UInt64;    # name set: the entry (parent, name) appeared, vanished or changed
  name @3 :Text;
}

struct ChangePage {
  epoch @0 :UInt64;     # the feed's identity: a new leader starts a new one
  next @1 :UInt64;      # ask for the changes after this next time
  lost @2 :Bool;        # changes were missed (new feed or overflow): caches may be stale for up
                        # to the attribute timeout
  changes @3 :List(Change);
  confirmed @4 :Bool;   # built after a linearizable read, and holding every change there is:
                        # every change committed before the watch was sent is in this page or
                        # an earlier one (what the mount's own caches are trusted on)
}

struct LockReply {
  granted @0 :Bool;     # lock: set (or released); lockTest: no conflict
  conflict @1 :LockHolder;
}

struct LockHolder {
  client @0 :UInt64;
  owner @1 :UInt64;
  pid @2 :UInt32;
  write @3 :Bool;
  start @4 :UInt64;
  end @5 :UInt64;
}

struct ClientSession {
  id @0 :UInt64;
  host @1 :Text;
  mount @2 :Text;
  idleMs @3 :UInt64;    # since its last watch
  openFiles @4 :UInt64; # files it has open
}

struct DumpPiece {
  token @0 :UInt64;
  totalBytes @1 :UInt64;
  data @2 :Data;
}

# One replica move of a rebalance: a copy of `chunk` goes from server `from` to server `to`.
struct Move {
  chunk @0 :UInt64;
  ino @1 :UInt64;
  index @2 :UInt64;
  from @3 :UInt32;
  to @4 :UInt32;
  bytes @5 :UInt64;
}

struct RebalanceStatus {
  active @0 :Bool;
  auto @1 :Bool;
  tolerance @2 :Float64;
  movesDone @3 :UInt64;       # since this rebalance started (this leader)
  bytesMoved @4 :UInt64;
  movesRunning @5 :UInt32;
  spread @6 :Float64;         # largest distance of a server's used fraction from the mean,
                              # relative to the mean (0.1: 10% above or below it)
  startedNs @7 :Int64;
  balanced @8 :Bool;          # every server within the tolerance, or closer than one chunk
}

struct ClusterInfo {
  clusterId @0 :Text;
  chunkSizeBytes @1 :UInt64;
  blockSizeBytes @2 :UInt32;
  replicas @3 :UInt32;
  keyCheck @4 :Data;     # a block sealed with the data key; empty until the first client sets it
}

struct MetaReply {
  err @0 :Int32;          # errno, 0 on success
  union {
    none @1 :Void;
    attr @2 :Attr;
    target @3 :Text;
    entries @4 :List(DirEntry);
    statfs @5 :StatFs;
    value @6 :Data;
    names @7 :List(Text);
    chunk @8 :ChunkInfo;
    chunks @9 :List(ChunkInfo);
    serverId @10 :UInt32;
    status @11 :ClusterStatus;
    info @12 :ClusterInfo;
    metaStatus @15 :MetaNodeStatus;
    quota @16 :QuotaInfo;
    dump @17 :DumpPiece;
    moves @18 :List(Move);
    changes @19 :ChangePage;
    lock @20 :LockReply;
  }
  leader @13 :Text;       # set with err = EAGAIN when this server is not the leader
  garbage @14 :List(UInt64);  # heartbeat reply: chunks this server must delete
  # mknod, symlink, link, unlink, rmdir: the directory's attributes after the change, so that
  # the client answers the kernel's next getattr of it without asking again.
  parentAttr @21 :Attr;
  listEnd @22 :Bool;      # readdir: the directory has no entries after these
  offeredChunk @23 :ChunkInfo;  # mknod with firstChunk: a chunk not yet recorded (see bind)
  boundChunk @24 :ChunkInfo;    # commit refused with EEXIST: the chunk already at that index
}

# One entry of the meta log: a mutation with everything the state machine needs to apply it
# deterministically (time, placement), decided by the leader before it is logged.
struct Command {
  timeNs @0 :Int64;
  request @1 :MetaRequest;
  placement @2 :List(UInt32);   # chunk servers chosen for a chunk allocation
  gcGraceNs @3 :Int64;          # garbage younger than this is not handed out yet
}

interface Meta {
  call @0 (request :MetaRequest) -> (reply :MetaReply);
}

# Raft traffic between meta servers (see meta/raft/core.h for the meaning of each field).
struct RaftEntry {
  term @0 :UInt64;
  index @1 :UInt64;
  type @2 :UInt8;
  data @3 :Data;
}

struct RaftMessage {
  type @0 :UInt8;
  from @1 :UInt64;
  to @2 :UInt64;
  term @3 :UInt64;
  index @4 :UInt64;
  logTerm @5 :UInt64;
  commit @6 :UInt64;
  reject @7 :Bool;
  rejectHint @8 :UInt64;
  context @9 :UInt64;
  transfer @10 :Bool;
  entries @11 :List(RaftEntry);
  hasSnapshot @12 :Bool;
  snapshotIndex @13 :UInt64;
  snapshotTerm @14 :UInt64;
  snapshotVoters @15 :List(UInt64);
  snapshotData @16 :Data;     # a compacted LMDB copy of the state machine
  fromAddr @17 :Text;         # the sender's address, so a newly added member can answer
}

interface MetaPeer {
  raft @0 (messages :List(RaftMessage)) -> ();
  snapshotChunk @1 (header :RaftMessage, offset :UInt64, data :Data, last :Bool) -> ();
  # A snapshot travels in pieces of at most 4 MiB, in order; `header` is the SNAPSHOT message
  # (without data). The receiver steps its core once the last piece is on disk.
}

# ---------------------------------------------------------------------------------------------
# Chunk service. A chunk is a sequence of fixed-size blocks; the chunk server stores each block's
# bytes and its opaque `aux` (the client's nonce and AEAD tag) and a CRC32 of both, and never
# sees a key.

struct Block {
  present @0 :Bool;     # false: never written (a hole)
  crc @1 :UInt32;       # crc32 of aux || data
  aux @2 :Data;
  data @3 :Data;
}

struct ChunkRef {
  id @0 :UInt64;
  version @1 :UInt64;
}

interface Chunk {
  write @0 (chunk :ChunkRef, firstBlock :UInt32, blocks :List(Block), chain :List(Text), sync :Bool)
      -> (err :Int32, failedAddr :Text);
  # Writes blocks firstBlock.. and forwards them to every server of chain at once (each with an
  # empty chain: the first server orders the writes for all). Answers once every server has the
  # blocks (in its page cache, or on disk when sync). failedAddr names the replica that failed,
  # the first in the chain's order when several did. sync and truncate go on the same way.

  read @1 (chunk :ChunkRef, firstBlock :UInt32, count :UInt32) -> (err :Int32, blocks :List(Block));
  sync @2 (chunk :ChunkRef, chain :List(Text)) -> (err :Int32, failedAddr :Text);
  truncate @3 (chunk :ChunkRef, blocks :UInt32, chain :List(Text)) -> (err :Int32, failedAddr :Text);
  # Drops every block at or after `blocks`.
  remove @4 (ids :List(UInt64)) -> (removed :UInt32);
  list @5 () -> (chunks :List(ChunkRef));

  setVersion @6 (chunk :ChunkRef) -> (err :Int32);
  # Raises this replica's version (never lowers it): writes with the old version then fail
  # with ESTALE. Used by repair to fence writers while a new replica is filled.

  replicate @7 (chunk :ChunkRef, target :Text, rateBytesPerSec :UInt64) -> (err :Int32, bytes :UInt64);
  # Copies every present block of this replica to `target` (server to server, never through
  # clients), at most at the given rate, then has the target sync it.

  listPage @8 (after :UInt64, max :UInt32) -> (chunks :List(ChunkRef));
  # Up to `max` (at most 65536) copies with ids above `after`, ascending.

  verify @9 (id :UInt64, firstBlock :UInt32, count :UInt32)
      -> (err :Int32, version :UInt64, checked :UInt32, bad :List(UInt32), next :UInt32);
  # Verifies the checksums of blocks firstBlock.. (at most `count`, at most 256) of this copy.
  # `next` is where to continue (0: the copy is done); ENOENT when this server has no copy.

  writeAt @10 (chunk :ChunkRef, blocks :List(Block), at :List(UInt32), chain :List(Text), sync :Bool)
      -> (err :Int32, failedAddr :Text);
  # As write, for blocks scattered over the chunk: blocks[i] goes to block at[i] (one entry per
  # block, strictly ascending). Random block writes to one chunk travel in one call. A method of
  # its own, not a field of write: a server that predates it refuses it (unimplemented) instead
  # of writing the blocks one after another from firstBlock.

  locate @11 (chunk :ChunkRef) -> (err :Int32, path :Text, bootId :Text, device :UInt64, inode :UInt64);
  # The absolute path of this server's file of the chunk (its version checked and raised as by
  # read), so that a client on the same host reads the copy from the file itself instead of
  # through this server (see fs/local_chunks.h); with the host's boot id
  # (/proc/sys/kernel/random/boot_id) and the file's device and inode numbers, by which the
  # client knows the file it opens is this server's file and not one at the same path on
  # another host. ENOENT when there is no copy here.
}
