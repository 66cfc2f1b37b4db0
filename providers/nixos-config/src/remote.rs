//! The POSIX shell the target runs: the probe that says what it runs now,
//! the key upload, and the activation runner that is started detached
//! (`systemd-run`, or `setsid nohup` where systemd is not PID 1) so that a
//! dropped SSH connection cannot kill the switch, and that rolls back by
//! itself when activation fails or is not confirmed in time.
//!
//! The runner keeps its state in [`STATE_DIR`] (volatile, per boot):
//! `<id>.log` (the activation's output), `<id>.status` (one line, replaced
//! atomically), `<id>.confirm` (created by the deployer over a fresh
//! connection) and `active/` (the lock: at most one activation at a time).

use crate::process::shell_quote;

/// Where the runner keeps its files on the target.
pub const STATE_DIR: &str = "/run/fedi-nixos-config";

/// The NixOS system profile.
pub const PROFILE: &str = "/nix/var/nix/profiles/system";

/// Prints `key=value` lines: the user's uid, the running system, the
/// profile's system and generation link, whether `system` is valid in the
/// target's store, whether systemd runs, a running activation (`busy`, with
/// its system, goal and the system that ran before it), and the outcome of
/// the last activation when no deployer has collected it yet (`last`: its
/// id, system, goal, previous system and status line, tab-separated).
pub fn probe(system: &str) -> String {
    format!(
        r#"current=; profile=
echo "uid=$(id -u)"
[ -e /run/current-system ] && current=$(readlink -f /run/current-system)
[ -e {PROFILE} ] && profile=$(readlink -f {PROFILE})
echo "current=$current"
echo "profile=$profile"
echo "generation=$(readlink {PROFILE} 2>/dev/null || true)"
if [ -e {system} ] && nix-store --check-validity {system} >/dev/null 2>&1; then echo valid=1; else echo valid=0; fi
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then echo systemd=1; fi
dir={STATE_DIR}
pid=$(cat "$dir/active/pid" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  echo "busy=$(cat "$dir/active/id" 2>/dev/null)"
  echo "busy_system=$(cat "$dir/active/system" 2>/dev/null)"
  echo "busy_goal=$(cat "$dir/active/goal" 2>/dev/null)"
  echo "busy_previous=$(cat "$dir/active/previous" 2>/dev/null)"
elif [ -f "$dir/last" ]; then
  id=$(cut -f1 "$dir/last")
  if [ -n "$id" ] && [ ! -e "$dir/$id.reported" ] && [ -f "$dir/$id.status" ]; then
    printf 'last=%s\t%s\n' "$(cat "$dir/last")" "$(cat "$dir/$id.status")"
  fi
fi
exit 0
"#,
        system = shell_quote(system),
    )
}

/// Writes stdin to `dir/name` atomically; prints `changed` or `unchanged`
/// (same content, owner, group and mode).
///
/// Nothing is done through a path another user could swap: the file is
/// made in a new directory with an unpredictable name (`mktemp -d`, 0700,
/// root's) entered with `cd`, so `cat`, `chown` and `chmod` act on a name
/// only root can create or replace, even when a service user can write
/// `dir` (a symbolic link planted there, or the staging directory renamed
/// away, changes nothing). The file is then renamed over the destination
/// with `mv -T`, which replaces a symbolic link there instead of following
/// it. Staging directories of a crashed upload of the same name are
/// removed.
pub fn upload_key(dir: &str, name: &str, owner: &str, group: &str, mode: &str) -> String {
    format!(
        r#"set -e
dir={dir}; name={name}; dest={dir}/{name}
(umask 022; mkdir -p "$dir")
umask 077
for old in "$dir/.$name.fedi-upload."*; do
  if [ -d "$old" ] && [ ! -L "$old" ]; then rm -rf -- "$old"; fi
done
stage=$(mktemp -d "$dir/.$name.fedi-upload.XXXXXXXXXX")
cd "$stage"
cat > key
chown -h {owner}:{group} key
chmod {mode} key
sync key 2>/dev/null || true
if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s key "$dest" && [ "$(stat -c %U:%G:%a "$dest")" = "$(stat -c %U:%G:%a key)" ]; then
  result=unchanged
else
  mv -fT key "$dest"; result=changed
fi
cd /
rm -rf -- "$stage"
echo "$result"
"#,
        dir = shell_quote(dir),
        name = shell_quote(name),
        owner = shell_quote(owner),
        group = shell_quote(group),
        mode = shell_quote(mode),
    )
}

/// Takes the lock, records what it activates (`system`, `goal`, the
/// `previous` running system) beside it, stores the runner (given on stdin)
/// and starts it detached; returns once the runner's pid is recorded, so a
/// deployer that dies right after this still finds the activation busy.
/// Prints `launched ...`, then waits on the host like [`wait_status`] (at
/// most about `wait_seconds`) for the activation to get past
/// `switch-to-configuration` and prints the status line: one round trip
/// from start to outcome. Exits 3 printing `busy <id>` when another
/// activation runs.
pub fn launch(id: &str, system: &str, goal: &str, wait_seconds: u64) -> String {
    format!(
        r#"set -e
dir={STATE_DIR}; id={id}
(umask 077; mkdir -p "$dir")
# The lock is complete before anyone can see it: made in a new directory,
# renamed into place (a rename onto a lock, which is never empty, fails).
# It holds the launching shell's pid until the runner's is recorded, so a
# lock whose runner has not started yet is still held.
umask 077
new=$(mktemp -d "$dir/.active.XXXXXXXXXX")
echo "$id" > "$new/id"
printf '%s\n' {system} > "$new/system"
printf '%s\n' {goal} > "$new/goal"
previous=; [ -e /run/current-system ] && previous=$(readlink -f /run/current-system)
printf '%s\n' "$previous" > "$new/previous"
echo "$$" > "$new/launcher"
held() {{
  l=$1
  p=$(cat "$l/pid" 2>/dev/null || true)
  if [ -n "$p" ]; then kill -0 "$p" 2>/dev/null; return; fi
  p=$(cat "$l/launcher" 2>/dev/null || true)
  if [ -n "$p" ]; then kill -0 "$p" 2>/dev/null; return; fi
  # Neither (a lock being made by an older version): held for 60 s.
  [ $(( $(date +%s) - $(stat -c %Y "$l" 2>/dev/null || echo 0) )) -lt 60 ]
}}
taken=0
for attempt in 1 2 3; do
  if mv -T "$new" "$dir/active" 2>/dev/null; then taken=1; break; fi
  [ -d "$dir/active" ] || continue
  if held "$dir/active"; then rm -rf "$new"; echo "busy $(cat "$dir/active/id" 2>/dev/null)"; exit 3; fi
  # A stale lock (its runner and launcher are gone): move it away
  # atomically, and put it back if it turns out to be a fresh one.
  stale="$dir/.stale.$$.$attempt"
  mv -T "$dir/active" "$stale" 2>/dev/null || continue
  if held "$stale"; then mv -T "$stale" "$dir/active" 2>/dev/null || true; rm -rf "$new"; echo "busy $(cat "$stale/id" "$dir/active/id" 2>/dev/null | head -n 1)"; exit 3; fi
  rm -rf "$stale"
done
if [ "$taken" != 1 ]; then rm -rf "$new"; echo "busy $(cat "$dir/active/id" 2>/dev/null)"; exit 3; fi
cat > "$dir/$id.sh"
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  systemd-run --unit="fedi-nixos-config-$id" --collect --quiet --setenv=PATH="$PATH" -- /bin/sh "$dir/$id.sh"
  n=0
  while [ ! -s "$dir/active/pid" ] && [ ! -e "$dir/$id.status" ] && [ "$n" -lt 1000 ]; do sleep 0.01; n=$((n + 1)); done
  echo "launched with systemd-run"
else
  setsid nohup /bin/sh "$dir/$id.sh" </dev/null >/dev/null 2>&1 &
  {{ echo "$!" > "$dir/active/pid.tmp" && mv -f "$dir/active/pid.tmp" "$dir/active/pid"; }} 2>/dev/null || true
  echo "launched with setsid"
fi
{wait}"#,
        id = shell_quote(id),
        system = shell_quote(system),
        goal = shell_quote(goal),
        wait = wait_status(id, true, wait_seconds),
    )
}

/// Waits on the host (no round trips) until the runner's status line is
/// final (`done`, `failed`, `unconfirmed`) or, with `activated_is_enough`, `activated`, or
/// until about `seconds` passed; prints the status line, or `none`. Checks every 10 ms for the first half second, then every 50 ms,
/// then every 200 ms.
pub fn wait_status(id: &str, activated_is_enough: bool, seconds: u64) -> String {
    format!(
        r#"dir={STATE_DIR}; id={id}; enough={enough}; limit={limit}; n=0
while :; do
  s=$(cat "$dir/$id.status" 2>/dev/null || echo none)
  case "$s" in
    done*|failed*|unconfirmed*) break ;;
    activated*) [ "$enough" = 1 ] && break ;;
  esac
  [ "$n" -ge "$limit" ] && break
  n=$((n + 1))
  if [ "$n" -le 50 ]; then sleep 0.01; elif [ "$n" -le 150 ]; then sleep 0.05; else sleep 0.2; fi
done
printf '%s\n' "$s"
"#,
        id = shell_quote(id),
        enough = if activated_is_enough { 1 } else { 0 },
        limit = 150 + seconds * 5,
    )
}

/// Marks the activation's outcome as collected by a deployer, so that a
/// later probe does not offer it as the outcome of a crashed deployment.
pub fn reported(id: &str) -> String {
    format!("touch {STATE_DIR}/{id}.reported", id = shell_quote(id))
}

/// Marks the (final) outcome collected and prints the last lines of the
/// activation's output.
pub fn log_tail(id: &str) -> String {
    format!(
        "{reported}; tail -n 20 {STATE_DIR}/{q}.log 2>/dev/null || true",
        reported = reported(id),
        q = shell_quote(id)
    )
}

/// Confirms the activation (magic rollback), then waits on the host for the
/// runner's final status (at most about `seconds`), prints it and, when
/// final, marks it collected.
pub fn confirm(id: &str, seconds: u64) -> String {
    format!(
        "touch {STATE_DIR}/{q}.confirm && {wait}\
         case \"$s\" in done*|failed*|unconfirmed*) {reported} ;; esac\n",
        q = shell_quote(id),
        wait = wait_status(id, false, seconds),
        reported = reported(id),
    )
}

/// What the runner does, in order:
///
/// 1. for `switch` and `boot`, sets the system profile to the new system (a
///    new generation);
/// 2. runs `<system>/bin/switch-to-configuration <goal>`, its output to the
///    log;
/// 3. on failure rolls back: the profile to the previous generation (the
///    failed one deleted), and the previously running system re-activated
///    (`switch`, `test`) or its boot entry re-installed (`boot`);
/// 4. with magic rollback, waits `confirm_seconds` for the deployer to
///    confirm over a fresh connection, and rolls back the same way when it
///    does not.
///
/// Status lines: `running`; `activated <gen>` (waiting for confirmation);
/// `done <gen>`; `failed <exit> <gen-rolled-back-to> <rollback>`;
/// `unconfirmed <gen-rolled-back-to> <rollback>`, where `<gen>` is `-` when
/// there is none and `<rollback>` is `rolled-back`, `rollback-failed` or
/// `nothing-to-roll-back`.
pub fn runner(id: &str, system: &str, goal: &str, magic: bool, confirm_seconds: u64) -> String {
    format!(
        r#"#!/bin/sh
# fedi-nixos-config activation runner
dir={STATE_DIR}; id={id}; system={system}; goal={goal}; magic={magic}; confirm={confirm_seconds}
profile={PROFILE}
echo $$ > "$dir/active/pid"
printf '%s\t%s\t%s\t%s\n' "$id" "$system" "$goal" "$(cat "$dir/active/previous" 2>/dev/null)" > "$dir/last"
trap 'rm -rf "$dir/active"' EXIT
exec </dev/null >>"$dir/$id.log" 2>&1
status() {{ printf '%s\n' "$*" > "$dir/$id.status.tmp"; mv -f "$dir/$id.status.tmp" "$dir/$id.status"; }}
generation() {{ l=$(readlink "$profile" 2>/dev/null) || return 0; l=${{l#system-}}; printf '%s' "${{l%-link}}"; }}
previous=
[ -e /run/current-system ] && previous=$(readlink -f /run/current-system)
previous_gen=$(generation)
new_gen=
rollback() {{
  result=rolled-back
  if [ -n "$new_gen" ] && [ "$new_gen" != "$previous_gen" ]; then
    if [ -n "$previous_gen" ]; then
      nix-env -p "$profile" --switch-generation "$previous_gen" || result=rollback-failed
      nix-env -p "$profile" --delete-generations "$new_gen" || true
    else
      rm -f "$profile" "$profile-$new_gen-link"
    fi
  fi
  case "$goal" in
    switch|test)
      if [ -n "$previous" ] && [ -x "$previous/bin/switch-to-configuration" ]; then
        echo "fedi-nixos-config: rolling back to $previous"
        "$previous/bin/switch-to-configuration" "$goal" || result=rollback-failed
      elif [ -z "$previous_gen" ]; then result=nothing-to-roll-back; fi ;;
    boot)
      if [ -n "$previous_gen" ]; then
        "$profile/bin/switch-to-configuration" boot || result=rollback-failed
      else result=nothing-to-roll-back; fi ;;
    *) result=nothing-to-roll-back ;;
  esac
}}
echo "fedi-nixos-config: $goal $system (previous generation ${{previous_gen:-none}}, running ${{previous:-none}})"
status running
if [ "$goal" = switch ] || [ "$goal" = boot ]; then
  if ! nix-env -p "$profile" --set "$system"; then status "failed 1 ${{previous_gen:--}} nothing-to-roll-back"; exit 0; fi
  new_gen=$(generation)
fi
"$system/bin/switch-to-configuration" "$goal"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "fedi-nixos-config: switch-to-configuration $goal exited with $rc; rolling back"
  rollback
  status "failed $rc ${{previous_gen:--}} $result"
  exit 0
fi
if [ "$magic" = 1 ]; then
  status "activated ${{new_gen:--}}"
  waited=0 # centiseconds: look every 10 ms for 2 s, then every 50 ms
  while [ "$waited" -lt $((confirm * 100)) ]; do
    if [ -e "$dir/$id.confirm" ]; then status "done ${{new_gen:--}}"; exit 0; fi
    if [ "$waited" -lt 200 ]; then sleep 0.01; waited=$((waited + 1)); else sleep 0.05; waited=$((waited + 5)); fi
  done
  if [ -e "$dir/$id.confirm" ]; then status "done ${{new_gen:--}}"; exit 0; fi
  echo "fedi-nixos-config: not confirmed within $confirm s; rolling back"
  rollback
  status "unconfirmed ${{previous_gen:--}} $result"
  exit 0
fi
status "done ${{new_gen:--}}"
"#,
        id = shell_quote(id),
        system = shell_quote(system),
        goal = shell_quote(goal),
        magic = if magic { 1 } else { 0 },
    )
}
