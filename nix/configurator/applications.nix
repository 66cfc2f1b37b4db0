# What each application offers the operator (its panel settings) and what it
# needs from the hosting provider (VM size, buckets). This is the
# application side of the architecture note: operator-facing options and the
# resources behind them. Adding an application is adding an entry here and
# its NixOS service module on the glue side.
let
  # VM sizes per application: { cores, memory (MiB), disk (GiB) }.
  sizes = {
    # Mastodon: Rails, Sidekiq, PostgreSQL, Redis, Elasticsearch-less.
    mastodon = {
      small = { cores = 2; memory = 4096; diskGib = 32; };
      medium = { cores = 4; memory = 8192; diskGib = 64; };
      large = { cores = 8; memory = 16384; diskGib = 128; };
    };
    # Pixelfed: PHP, a queue worker, PostgreSQL; media lives in the bucket.
    pixelfed = {
      small = { cores = 2; memory = 2048; diskGib = 20; };
      medium = { cores = 2; memory = 4096; diskGib = 40; };
      large = { cores = 4; memory = 8192; diskGib = 80; };
    };
    # PeerTube: transcoding is CPU-bound and needs scratch disk for the
    # originals before they move to the buckets.
    peertube = {
      small = { cores = 2; memory = 4096; diskGib = 40; };
      medium = { cores = 4; memory = 8192; diskGib = 100; };
      large = { cores = 8; memory = 16384; diskGib = 200; };
    };
  };

  # Browsers (PeerTube's player on any instance that federates the video)
  # fetch segments and files straight from the bucket.
  corsGetAnyOrigin = [
    {
      allowedOrigins = [ "*" ];
      allowedMethods = [ "GET" "HEAD" ];
      allowedHeaders = [ "*" ];
      maxAgeSeconds = 3600;
    }
  ];

  common = {
    enable = {
      type = "bool";
      description = "whether the operator runs this application";
    };
    subdomain = {
      type = "string";
      optional = true;
      description = "the application's name under the operator's domain; default: the application's name";
      check =
        v:
        if builtins.match "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" v == null then
          "must be one DNS label (lowercase letters, digits and inner `-`), not \"${v}\""
        else
          null;
    };
    size = {
      type = "enum";
      values = [ "small" "medium" "large" ];
      optional = true;
      default = "medium";
      description = "the VM size";
    };
    onDisable = {
      type = "enum";
      values = [ "keep" "purge" ];
      optional = true;
      default = "keep";
      description = "what happens to the application's stored media when it is disabled";
    };
  };

  registrations = {
    type = "enum";
    values = [ "open" "approval" "closed" ];
    optional = true;
    default = "approval";
    description = "who may sign up: anyone, after the operator's approval, or nobody";
  };
in
{
  mastodon = {
    description = "Mastodon, microblogging";
    settings = common // {
      inherit registrations;
    };
    sizes = sizes.mastodon;
    # One media bucket, served publicly (S3_ALIAS_HOST).
    buckets = {
      media = {
        website = true;
        corsRules = null;
      };
    };
    # Mastodon mails confirmations and notifications.
    email = true;
  };

  pixelfed = {
    description = "Pixelfed, photo sharing";
    settings = common // {
      inherit registrations;
    };
    sizes = sizes.pixelfed;
    # One media bucket, served publicly.
    buckets = {
      media = {
        website = true;
        corsRules = null;
      };
    };
    email = true;
  };

  peertube = {
    description = "PeerTube, video hosting";
    settings = common // {
      registrations = registrations;
      transcoding = {
        type = "bool";
        optional = true;
        default = true;
        description = "whether uploads are transcoded to several resolutions";
      };
    };
    sizes = sizes.peertube;
    # PeerTube's object storage: separate public buckets for HLS streaming
    # playlists and for web videos, both read by browsers from any origin.
    buckets = {
      streaming-playlists = {
        website = true;
        corsRules = corsGetAnyOrigin;
      };
      web-videos = {
        website = true;
        corsRules = corsGetAnyOrigin;
      };
    };
    email = true;
  };
}
