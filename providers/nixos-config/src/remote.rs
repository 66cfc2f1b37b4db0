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

/// Prints `key=value` lines: the running system, the profile's system and
/// generation link, whether `system` is valid in the target's store,
/// whether systemd runs, and a running activation.
pub fn probe(system: &str) -> String {
    format!(
        r#"current=; profile=
[ -e /run/current-system ] && current=$(readlink -f /run/current-system)
[ -e {PROFILE} ] && profile=$(readlink -f {PROFILE})
echo "current=$current"
echo "profile=$profile"
echo "generation=$(readlink {PROFILE} 2>/dev/null || true)"
if nix-store --check-validity {system} >/dev/null 2>&1; then echo valid=1; else echo valid=0; fi
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then echo systemd=1; fi
pid=$(cat {STATE_DIR}/active/pid 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "busy=$(cat {STATE_DIR}/active/id 2>/dev/null)"; fi
exit 0
"#,
        system = shell_quote(system),
    )
}

/// Writes stdin to `dir/name` atomically (a temporary file in the same
/// directory, owner and mode set before the rename); prints `changed` or
/// `unchanged` (same content, owner, group and mode).
pub fn upload_key(dir: &str, name: &str, owner: &str, group: &str, mode: &str) -> String {
    format!(
        r#"set -e
dir={dir}; dest={dir}/{name}; tmp={dir}/.{name}.fedi-tmp
(umask 022; mkdir -p "$dir")
umask 077
rm -f "$tmp"
cat > "$tmp"
chown {owner}:{group} "$tmp"
chmod {mode} "$tmp"
sync "$tmp" 2>/dev/null || true
if [ -f "$dest" ] && cmp -s "$tmp" "$dest" && [ "$(stat -c %U:%G:%a "$dest")" = "$(stat -c %U:%G:%a "$tmp")" ]; then
  rm -f "$tmp"; echo unchanged
else
  mv -f "$tmp" "$dest"; echo changed
fi
"#,
        dir = shell_quote(dir),
        name = shell_quote(name),
        owner = shell_quote(owner),
        group = shell_quote(group),
        mode = shell_quote(mode),
    )
}

/// Takes the lock, stores the runner (given on stdin) and starts it
/// detached. Exits 3 printing `busy <id>` when another activation runs.
pub fn launch(id: &str) -> String {
    format!(
        r#"set -e
dir={STATE_DIR}; id={id}
(umask 077; mkdir -p "$dir")
if ! mkdir "$dir/active" 2>/dev/null; then
  pid=$(cat "$dir/active/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "busy $(cat "$dir/active/id" 2>/dev/null)"; exit 3; fi
  rm -rf "$dir/active"; mkdir "$dir/active"
fi
echo "$id" > "$dir/active/id"
cat > "$dir/$id.sh"
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  systemd-run --unit="fedi-nixos-config-$id" --collect --quiet --setenv=PATH="$PATH" -- /bin/sh "$dir/$id.sh"
  echo "launched with systemd-run"
else
  setsid nohup /bin/sh "$dir/$id.sh" </dev/null >/dev/null 2>&1 &
  echo "launched with setsid"
fi
"#,
        id = shell_quote(id),
    )
}

/// Prints the runner's status line, or `none`.
pub fn status(id: &str) -> String {
    format!(
        "cat {STATE_DIR}/{id}.status 2>/dev/null || echo none",
        id = shell_quote(id)
    )
}

/// Prints the last lines of the activation's output.
pub fn log_tail(id: &str) -> String {
    format!(
        "tail -n 20 {STATE_DIR}/{id}.log 2>/dev/null || true",
        id = shell_quote(id)
    )
}

/// Confirms the activation (magic rollback) and prints the status line.
pub fn confirm(id: &str) -> String {
    format!(
        "touch {STATE_DIR}/{id}.confirm && cat {STATE_DIR}/{id}.status",
        id = shell_quote(id)
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
  waited=0
  while [ "$waited" -lt $((confirm * 5)) ]; do
    if [ -e "$dir/$id.confirm" ]; then status "done ${{new_gen:--}}"; exit 0; fi
    sleep 0.2; waited=$((waited + 1))
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
