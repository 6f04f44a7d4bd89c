#!/usr/bin/env bash
# POSIX ACLs on a real mount (point 1 of promise 8): access ACLs grant and deny as the kernel
# enforces them, the mode shows the mask and chmod rewrites it, an ACL that says no more than
# the mode is not kept, default ACLs are inherited by new files and directories (and then the
# umask does not apply, while it does elsewhere), another mount sees ACL changes, and
# rsync -aHAX carries a tree with hard links, ACLs, extended attributes, symlinks and a fifo
# there and back unchanged (a second rsync finds nothing to do).
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3
B="$T/b"
mount_extra "$B"
chmod 711 "$T"  # other users reach the mounts below it (its files keep their own modes)
as() { local u="$1"; shift; runuser -u "$u" -- "$@"; }
acl_of() { getfacl -cpE "$1" 2>/dev/null | grep -v '^$' | sort | tr '\n' ' '; }

mkdir "$M/acl"
chmod 755 "$M/acl"
echo secret > "$M/acl/f"
chmod 600 "$M/acl/f"
as nobody cat "$M/acl/f" >/dev/null 2>&1 && fail "nobody read a 0600 file"
setfacl -m u:nobody:r "$M/acl/f"
[ "$(as nobody cat "$M/acl/f")" = secret ] || fail "a user ACL entry did not grant read"
as nobody sh -c "echo x >> '$M/acl/f'" 2>/dev/null && fail "a read-only ACL entry granted write"
as daemon cat "$M/acl/f" >/dev/null 2>&1 && fail "an ACL for nobody let daemon read"
[ "$(stat -c %a "$M/acl/f")" = 640 ] || fail "mode does not show the mask: $(stat -c %a "$M/acl/f")"
[ "$(acl_of "$M/acl/f")" = "group::--- mask::r-- other::--- user::rw- user:nobody:r-- " ] ||
  fail "getfacl: $(acl_of "$M/acl/f")"
check "an access ACL grants a named user read, not write, not to others; the mode shows the mask"
chmod 600 "$M/acl/f"
as nobody cat "$M/acl/f" >/dev/null 2>&1 && fail "chmod 600 did not mask the ACL entry"
[ "$(acl_of "$M/acl/f")" = "group::--- mask::--- other::--- user::rw- user:nobody:r-- " ] ||
  fail "getfacl after chmod: $(acl_of "$M/acl/f")"
setfacl -b "$M/acl/f"
getfattr -n system.posix_acl_access "$M/acl/f" >/dev/null 2>&1 && fail "setfacl -b left an ACL"
setfacl -m u::rw,g::r,o::- "$M/acl/f"  # says no more than a mode
getfattr -n system.posix_acl_access "$M/acl/f" >/dev/null 2>&1 && fail "a minimal ACL was kept"
[ "$(stat -c %a "$M/acl/f")" = 640 ] || fail "a minimal ACL did not set the mode"
check "chmod rewrites the mask; setfacl -b removes the ACL; a minimal ACL only sets the mode"

# Default ACLs: inherited, and the umask gives way to them; the same steps on the local disk
# (ext4) give the same ACLs and modes.
for root in "$M/acl" "$L/acl"; do
  mkdir -p "$root/d"
  setfacl -d -m u:nobody:rwx,g::rx,o::- "$root/d"
  (umask 077 && echo new > "$root/d/file" && mkdir "$root/d/sub" && mkfifo "$root/d/fifo")
  (umask 027 && touch "$root/plain")
  (umask 077 && mkdir "$root/plaindir")
  (cd "$root" && for f in d d/file d/sub d/fifo plain plaindir; do
     echo "$f $(stat -c %a "$f") $(getfacl -cpE "$f" | tr '\n' ' ')"; done) > "$T/inherit.$(basename "$(dirname "$root")")"
done
diff "$T/inherit.mnt" "$T/inherit.local" || fail "inheritance differs from ext4"
grep -q "^d/file 660 .*user:nobody:rwx" "$T/inherit.mnt" || fail "a new file did not inherit: $(cat "$T/inherit.mnt")"
grep -q "^d/sub 770 .*default:user:nobody:rwx" "$T/inherit.mnt" || fail "a new directory did not inherit"
grep -q "^plain 640 " "$T/inherit.mnt" || fail "umask not applied without a default ACL"
[ "$(as nobody cat "$M/acl/d/file")" = new ] || fail "the inherited entry does not grant nobody read"
check "default ACLs are inherited by files, fifos and directories as on ext4; the umask applies only without one"

# Another mount sees an ACL change (cached ACLs are invalidated with the inode).
echo shared > "$M/acl/g"
chmod 600 "$M/acl/g"
as nobody cat "$B/acl/g" >/dev/null 2>&1 && fail "nobody read g on B"
setfacl -m u:nobody:r "$M/acl/g"
end=$((SECONDS + 5))
until [ "$(as nobody cat "$B/acl/g" 2>/dev/null)" = shared ]; do
  [ $SECONDS -lt $end ] || fail "mount B did not see the ACL granted on A"
  sleep 0.2
done
check "an ACL set on one mount takes effect on another within 5 s"

# rsync -aHAX there and back.
S="$L/src"
mkdir -p "$S/dir/deep"
head -c 300000 /dev/urandom > "$S/dir/big"
echo one > "$S/one"
ln "$S/one" "$S/dir/one-hard"
ln "$S/one" "$S/dir/deep/one-hard2"
ln -s ../one "$S/dir/link"
mkfifo "$S/fifo"
setfacl -m u:nobody:rw,g:daemon:r "$S/dir/big"
setfacl -d -m u:nobody:rx "$S/dir/deep"
setfattr -n user.colour -v blue "$S/one"
setfattr -n user.empty "$S/dir/big"
chmod 2750 "$S/dir"
touch -d '2001-02-03 04:05:06' "$S/dir/deep"
rsync -aHAX "$S/" "$M/tree/"
rsync -aHAX "$M/tree/" "$L/back/"
changes="$(rsync -aHAXn --itemize-changes "$S/" "$M/tree/")"
[ -z "$changes" ] || fail "a second rsync to cairn would change: $changes"
diff -r "$S" "$L/back" >/dev/null 2>&1 || true  # fifos make diff complain; content below
for f in one dir/big dir/one-hard; do cmp "$S/$f" "$L/back/$f" || fail "content of $f"; done
[ "$(stat -c %i "$M/tree/one")" = "$(stat -c %i "$M/tree/dir/deep/one-hard2")" ] || fail "hard links not kept on cairn"
[ "$(stat -c %h "$M/tree/one")" = 3 ] || fail "nlink of the hard-linked file: $(stat -c %h "$M/tree/one")"
[ "$(stat -c %i "$L/back/one")" = "$(stat -c %i "$L/back/dir/one-hard")" ] || fail "hard links not kept back"
[ -p "$M/tree/fifo" ] && [ -p "$L/back/fifo" ] || fail "fifo not kept"
[ "$(readlink "$M/tree/dir/link")" = ../one ] || fail "symlink not kept"
sorted() { (cd "$1" && find . | LC_ALL=C sort | xargs -d '\n' "${@:2}" 2>/dev/null); }
sorted "$S" getfacl -p > "$T/acl.src"
sorted "$M/tree" getfacl -p > "$T/acl.cairn"
sorted "$L/back" getfacl -p > "$T/acl.back"
diff "$T/acl.src" "$T/acl.cairn" || fail "ACLs differ on cairn"
diff "$T/acl.src" "$T/acl.back" || fail "ACLs differ after the way back"
sorted "$S" getfattr -d -h > "$T/xattr.src" || true
sorted "$M/tree" getfattr -d -h > "$T/xattr.cairn" || true
diff "$T/xattr.src" "$T/xattr.cairn" || fail "extended attributes differ on cairn"
grep -q 'user.colour="blue"' "$T/xattr.cairn" || fail "user.colour missing"
# Whole seconds: rsync leaves a time alone that is in the same second already (as for any
# destination), so a tree made just now keeps the new entries' own times.
(cd "$S" && find . -printf '%p %m %U %G %T@\n' | sed 's/\.[0-9]*$//' | sort) > "$T/meta.src"
(cd "$M/tree" && find . -printf '%p %m %U %G %T@\n' | sed 's/\.[0-9]*$//' | sort) > "$T/meta.cairn"
(cd "$L/back" && find . -printf '%p %m %U %G %T@\n' | sed 's/\.[0-9]*$//' | sort) > "$T/meta.back"
diff "$T/meta.src" "$T/meta.cairn" || fail "modes, owners or times differ on cairn"
grep -q "^./dir/deep 2755 0 0 981173106$\|^./dir/deep 755 0 0 981173106$" "$T/meta.cairn" || fail "an old mtime was not kept: $(grep deep "$T/meta.cairn")"
diff "$T/meta.src" "$T/meta.back" || fail "modes, owners or times differ after the round trip"
check "rsync -aHAX keeps hard links, ACLs, default ACLs, xattrs, symlinks, a fifo, modes and times, both ways; a second run changes nothing"
