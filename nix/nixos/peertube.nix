# PeerTube on its VM, from the configurator's `service` (see base.nix):
# nixpkgs' `services.peertube` with local PostgreSQL and Redis, nginx with
# Let's Encrypt, videos in the operator's two public Garage buckets, and the
# generated admin password for PeerTube's `root` account.
{
  config,
  lib,
  ...
}:
let
  service = config.fediversity.service;
  buckets = service.s3.buckets;
  registrations = service.settings.registrations;

  bucket = b: {
    bucket_name = b.name;
    prefix = "";
    # Object URLs get this scheme and host instead of the S3 endpoint's.
    base_url = if b.publicUrl == null then "" else lib.removeSuffix "/" b.publicUrl;
  };
in
{
  config = lib.mkIf (service.application == "peertube") {
    services.peertube = {
      enable = true;
      localDomain = service.domain;
      enableWebHttps = true;
      listenWeb = 443;
      configureNginx = true;
      database.createLocally = true;
      redis.createLocally = true;
      # E-mail seam (the graph's `seams.email`): no mail provider yet.
      smtp.createLocally = false;
      # Read by the peertube user itself (the unit `cat`s it).
      secrets.secretsFile = config.fediversity.generatedSecrets.peertube.path;
      # Read by systemd as root (EnvironmentFile=).
      serviceEnvironmentFile = config.fediversity.secretEnvFiles.peertube.path;
      # PeerTube's production.yaml keys; options of the web interface that
      # an admin saves later (local-production.json) take precedence.
      settings = {
        admin.email = service.admin.email;
        signup = {
          enabled = registrations != "closed";
          requires_approval = registrations == "approval";
          requires_email_verification = false;
        };
        transcoding.enabled = service.settings.transcoding;
        object_storage = {
          enabled = true;
          # PeerTube addresses buckets virtual-host style
          # (https://<bucket>.<endpoint>): Garage's [s3_api] root_domain
          # must be set for this endpoint.
          endpoint = service.s3.endpoint;
          inherit (service.s3) region;
          # Garage has no object ACLs; both buckets are public websites.
          # Private and internal videos are therefore readable by whoever
          # knows their object URL: no private bucket in the graph yet.
          upload_acl = {
            public = null;
            private = null;
          };
          streaming_playlists = bucket buckets.streaming-playlists;
          web_videos = bucket buckets.web-videos;
        };
        # User exports would go to a bucket of their own, private, which the
        # graph does not have: off until it does.
        export.users.enabled = false;
      };
    };
    services.nginx.virtualHosts.${service.domain} = {
      enableACME = true;
      forceSSL = true;
    };

    # The S3 key through the AWS SDK's environment variables (PeerTube
    # reads them when the configuration's credentials are empty). The id is
    # no secret; the secret comes from the deployment's key file.
    systemd.services.peertube.environment.AWS_ACCESS_KEY_ID = service.s3.accessKeyId;

    fediversity.generatedSecrets.peertube = {
      bytes = 32;
      encoding = "hex";
      owner = "peertube";
      requiredBy = [ "peertube.service" ];
    };
    fediversity.secretEnvFiles.peertube = {
      variables = {
        AWS_SECRET_ACCESS_KEY = service.s3.secretAccessKeyFile;
        # PeerTube creates its admin account, `root` (the name is fixed),
        # with this password on its first start.
        PT_INITIAL_ROOT_PASSWORD = service.admin.passwordFile;
      };
      requiredBy = [ "peertube.service" ];
    };
  };
}
