# Mastodon on its VM, from the configurator's `service` (see base.nix):
# nixpkgs' `services.mastodon` with local PostgreSQL and Redis, nginx with
# Let's Encrypt, media in the operator's Garage bucket, and the operator's
# admin account with the generated password.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  service = config.fediversity.service;
  cfg = config.services.mastodon;
  media = service.s3.buckets.media;

  # Mastodon builds media URLs as S3_PROTOCOL://S3_ALIAS_HOST/<key>; the
  # bucket's website URL (Garage's [s3_web] endpoint) gives both.
  publicUrl = if media.publicUrl == null then null else builtins.match "(https?)://(.*[^/])/*" media.publicUrl;

  # tootctl's names for the panel's registration modes.
  registrationsMode =
    {
      open = "open";
      approval = "approved";
      closed = "close";
    }
    .${service.settings.registrations};

  # Sets the admin's password from the credential, inside Mastodon's Rails
  # environment: tootctl can only print a generated one.
  setPassword = pkgs.writeText "fediversity-mastodon-admin-password.rb" ''
    user = Account.find_local!(ENV.fetch("ADMIN_NAME")).user
    user.password = File.read(ENV.fetch("ADMIN_PASSWORD_FILE")).strip
    user.save!
  '';
in
{
  config = lib.mkIf (service.application == "mastodon") {
    services.mastodon = {
      enable = true;
      localDomain = service.domain;
      configureNginx = true;
      # Recommended: CPU cores minus one; the small size has two.
      streamingProcesses = lib.mkDefault 1;
      # E-mail seam (the graph's `seams.email`): no mail provider yet, so no
      # local Postfix either; mails fail until one is configured here.
      smtp = {
        createLocally = false;
        fromAddress = "notifications@${service.domain}";
      };
      # Mastodon's object storage variables; with S3_ENDPOINT set, Mastodon
      # uses path-style requests, which Garage needs.
      extraConfig = {
        S3_ENABLED = "true";
        S3_BUCKET = media.name;
        S3_REGION = service.s3.region;
        S3_ENDPOINT = service.s3.endpoint;
        AWS_ACCESS_KEY_ID = service.s3.accessKeyId;
      }
      // lib.optionalAttrs (publicUrl != null) {
        S3_PROTOCOL = builtins.elemAt publicUrl 0;
        S3_ALIAS_HOST = builtins.elemAt publicUrl 1;
      };
      extraEnvFiles = [ config.fediversity.secretEnvFiles.mastodon-s3.path ];
    };

    # Every Mastodon unit requires mastodon-init-dirs, so the secret is in
    # place before any of them reads the environment file.
    fediversity.secretEnvFiles.mastodon-s3 = {
      variables.AWS_SECRET_ACCESS_KEY = service.s3.secretAccessKeyFile;
      requiredBy = [ "mastodon-init-dirs.service" ];
    };

    # The operator's admin account: created once, given the Owner role,
    # confirmed and approved, its password set from the uploaded file, and
    # the registration mode applied (it is a database setting, not an
    # environment variable). Idempotent; runs on every boot and switch.
    systemd.services.fediversity-mastodon-admin = {
      description = "Fediversity: Mastodon admin account and registration mode";
      wantedBy = [ "mastodon.target" ];
      after = [
        "mastodon-init-db.service"
        "fediversity-env-mastodon-s3.service"
      ];
      requires = [ "mastodon-init-db.service" ];
      # Mastodon's own environment, as its web unit has it (PATH is each
      # unit's own; the socket is the web server's).
      environment =
        removeAttrs config.systemd.services.mastodon-web.environment [
          "PATH"
          "SOCKET"
          "PORT"
        ]
        // {
          ADMIN_NAME = service.admin.name;
        };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        User = cfg.user;
        Group = cfg.group;
        WorkingDirectory = cfg.package;
        EnvironmentFile = [ "/var/lib/mastodon/.secrets_env" ] ++ cfg.extraEnvFiles;
        # systemd reads the root-owned file and hands Mastodon's user a copy.
        LoadCredential = [ "admin-password:${service.admin.passwordFile}" ];
      };
      # `tootctl accounts create` prints the password it generates: its
      # output stays out of the journal (ours replaces that password).
      # tootctl options as of Mastodon 4.x; not verified against a running
      # instance here.
      script = ''
        set -euo pipefail
        tootctl=${cfg.package}/bin/tootctl
        if ! "$tootctl" accounts modify "$ADMIN_NAME" --role Owner --confirm --approve >/dev/null 2>&1; then
          "$tootctl" accounts create "$ADMIN_NAME" \
            --email ${lib.escapeShellArg service.admin.email} --confirmed --role Owner >/dev/null
          "$tootctl" accounts modify "$ADMIN_NAME" --approve >/dev/null
        fi
        ADMIN_PASSWORD_FILE="$CREDENTIALS_DIRECTORY/admin-password" \
          ${cfg.package}/bin/rails runner ${setPassword}
        "$tootctl" settings registrations ${registrationsMode}
      '';
    };
  };
}
