#!/usr/bin/env bash
# git and sqlite3 work on the mount: commits, fsck, clone; transactions and integrity_check.
source "$(dirname "$0")/lib.sh"
cluster_up

cd "$M"
mkdir repo && cd repo
git init -q
git config user.email t@cairn.test
git config user.name tester
for i in $(seq 1 20); do
  echo "line $i" >> notes.txt
  head -c 20000 /dev/urandom | base64 > "data$((i % 5)).txt"
  git add -A
  git commit -qm "commit $i"
done
[ "$(git log --oneline | wc -l)" = 20 ] || fail "git log shows $(git log --oneline | wc -l) commits"
git fsck --full --strict 2>&1 | tee "$L/fsck.out"
git gc -q
git fsck --full --strict || fail "git fsck after gc"
cd "$M"
git clone -q repo clone
diff -r --exclude=.git repo clone || fail "clone differs"
[ "$(git -C clone log --oneline | wc -l)" = 20 ] || fail "clone history"
check "git: 20 commits, fsck, gc, clone"

db="$M/test.db"
sqlite3 "$db" "create table t(id integer primary key, v text); create index tv on t(v);"
for b in $(seq 0 9); do
  {
    echo "begin;"
    for i in $(seq 1 200); do echo "insert into t(v) values('row $b-$i $(printf '%0100d' $i)');"; done
    echo "commit;"
  } | sqlite3 "$db"
done
sqlite3 "$db" "update t set v = v || '-x' where id % 3 = 0; delete from t where id % 7 = 0;"
[ "$(sqlite3 "$db" 'pragma integrity_check;')" = ok ] || fail "sqlite integrity_check"
expect=$((2000 - 2000 / 7))
[ "$(sqlite3 "$db" 'select count(*) from t;')" = "$expect" ] || fail "sqlite row count"
sqlite3 "$db" "pragma journal_mode=wal; insert into t(v) values('wal');" >/dev/null
[ "$(sqlite3 "$db" 'pragma integrity_check;')" = ok ] || fail "sqlite integrity_check in WAL mode"
check "sqlite3: 2000 rows, updates, deletes, WAL, integrity_check ok"
