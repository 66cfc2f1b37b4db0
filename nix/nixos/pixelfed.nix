# Pixelfed on its VM, from the configurator's `service` (see base.nix):
# nixpkgs' `services.pixelfed` with its local database and Redis, nginx with
# Let's Encrypt, media in the operator's Garage bucket, and the operator's
# admin account with the generated password.
{
  config,
  lib,
  ...
}:
let
  service = config.fediversity.service;
  media = service.s3.buckets.media;
  registrations = service.settings.registrations;
  secrets = config.fediversity;
in
{
  config = lib.mkIf (service.application == "pixelfed") {
    services.pixelfed = {
      enable = true;
      domain = service.domain;
      # Sourced into Pixelfed's .env by its set-up unit, which reads it
      # through systemd (LoadCredential) as root.
      secretFile = secrets.secretEnvFiles.pixelfed.path;
      nginx = {
        enableACME = true;
        forceSSL = true;
      };
      # Variable names from Pixelfed's .env.example and config/*.php; not
      # verified against a running instance here.
      settings = {
        OPEN_REGISTRATION = registrations != "closed";
        # Curated registration: sign-ups wait for an admin's approval.
        INSTANCE_CUR_REG = registrations == "approval";
        # E-mail seam (the graph's `seams.email`): no mail provider yet, so
        # mails go to the log and addresses are not verified by mail.
        ENFORCE_EMAIL_VERIFICATION = false;
        MAIL_DRIVER = "log";
        MAIL_FROM_ADDRESS = "notifications@${service.domain}";
        # Media in the bucket; Garage needs path-style requests.
        PF_ENABLE_CLOUD = true;
        FILESYSTEM_CLOUD = "s3";
        AWS_ACCESS_KEY_ID = service.s3.accessKeyId;
        AWS_DEFAULT_REGION = service.s3.region;
        AWS_BUCKET = media.name;
        AWS_ENDPOINT = service.s3.endpoint;
        AWS_USE_PATH_STYLE_ENDPOINT = true;
      }
      // lib.optionalAttrs (media.publicUrl != null) {
        AWS_URL = media.publicUrl;
      };
    };

    # Laravel's application key is the VM's own; the S3 secret comes from
    # the deployment.
    fediversity.generatedSecrets.pixelfed-app-key = {
      bytes = 32;
      encoding = "base64";
    };
    fediversity.secretEnvFiles.pixelfed = {
      variables = {
        APP_KEY = {
          file = secrets.generatedSecrets.pixelfed-app-key.path;
          prefix = "base64:";
        };
        AWS_SECRET_ACCESS_KEY = service.s3.secretAccessKeyFile;
      };
      requiredBy = [ "pixelfed-data-setup.service" ];
    };

    # The operator's admin account, created once after Pixelfed's set-up.
    # `user:create` takes the password as an option (visible to local
    # processes while it runs) and prints nothing of it.
    systemd.services.fediversity-pixelfed-admin = {
      description = "Fediversity: Pixelfed admin account";
      wantedBy = [ "multi-user.target" ];
      after = [ "pixelfed-data-setup.service" ];
      requires = [ "pixelfed-data-setup.service" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        StateDirectory = "fediversity";
        LoadCredential = [ "admin-password:${service.admin.passwordFile}" ];
      };
      script = ''
        set -euo pipefail
        marker=/var/lib/fediversity/pixelfed-admin-created
        if [ -e "$marker" ]; then exit 0; fi
        # The nixpkgs module's wrapper: artisan as the pixelfed user.
        /run/current-system/sw/bin/pixelfed-manage user:create \
          --name=${lib.escapeShellArg service.admin.name} \
          --username=${lib.escapeShellArg service.admin.name} \
          --email=${lib.escapeShellArg service.admin.email} \
          --password="$(cat "$CREDENTIALS_DIRECTORY/admin-password")" \
          --is_admin=1 --confirm_email=1 >/dev/null
        touch "$marker"
      '';
    };
  };
}
