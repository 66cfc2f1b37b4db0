# A stand-in for a NixOS system, built with plain `builtins.derivation` and
# /bin/sh (no nixpkgs): a toplevel whose `bin/switch-to-configuration`
# records what it did in /root/activations on the test host and, by
# `behaviour`, works (`ok`), fails (`fail`; `leak` prints /run/keys/* first), takes its time (`slow`), drops
# every SSH connection mid-switch (`drop`) or locks the deployer out
# (`lockout`: moves /root/.ssh/authorized_keys aside; any other system's
# switch puts it back, as a rollback to a good configuration would).
# `deps` small store paths named after `shared` are in its closure, so two
# systems with the same `shared` share them.
{ name, behaviour ? "ok", deps ? 2, shared ? "shared" }:
let
  file = n: text: builtins.derivation {
    name = n;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo '${text}' > $out" ];
  };
  dependencies = builtins.genList (i: file "dep-${shared}-${toString i}" "dependency ${toString i} of ${shared}") deps;
  own = file "config-${name}" "configuration ${name}";
  switch = ''
    #!/bin/sh
    goal="$1"
    out=@out@
    behaviour=@behaviour@
    echo "$goal $out" >> /root/activations
    case "$behaviour" in
      fail) echo "starting test.service"; echo "error: test.service failed to start (exit-code 4)" >&2; exit 4 ;;
      leak) echo "loading keys:"; cat /run/keys/* 2>/dev/null; echo; echo "error: app.service failed to start (exit-code 4)" >&2; exit 4 ;;
      slow) sleep 3 ;;
      drop)
        killed=0
        for d in /proc/[0-9]*; do
          p=$(basename "$d")
          [ "$p" = 1 ] && continue
          if [ "$(cat "$d/comm" 2>/dev/null)" = sshd ] && kill "$p"; then killed=$((killed + 1)); fi
        done
        sleep 2
        if [ "$killed" -gt 0 ]; then echo "dropped the SSH connections and carried on" >> /root/activations; fi ;;
    esac
    case "$goal" in
      switch|test)
        ln -sfn "$out" /run/current-system
        if [ "$behaviour" = lockout ]; then
          mv /root/.ssh/authorized_keys /root/.ssh/authorized_keys.locked-out
        elif [ -f /root/.ssh/authorized_keys.locked-out ]; then
          mv /root/.ssh/authorized_keys.locked-out /root/.ssh/authorized_keys
        fi ;;
      dry-activate) echo "would activate $out" ;;
    esac
    case "$goal" in switch|boot) echo "$out" > /root/boot-default ;; esac
    echo "done $goal $out" >> /root/activations
  '';
in
builtins.derivation {
  name = "nixos-system-${name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  inherit dependencies own behaviour switch;
  args = [ "-c" ''
    mkdir -p $out/bin
    echo "$dependencies $own" > $out/closure
    printf '%s' "$switch" | sed -e "s|@out@|$out|g" -e "s|@behaviour@|$behaviour|g" > $out/bin/switch-to-configuration
    chmod +x $out/bin/switch-to-configuration
  '' ];
}
