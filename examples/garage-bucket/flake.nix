# The buckets Mastodon and PeerTube need on the hosting provider's Garage,
# each with an access key whose secret lands in a 0600 file on the deploying
# machine (hand it to the service with nixos-config's secrets).
#
#   nix flake lock --override-input fediversity-providers path:../..
#   nixops4 apply
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    nixops4.url = "github:nixops4/nixops4";
    fediversity-providers.url = "path:../..";
  };

  outputs =
    inputs@{ flake-parts, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      imports = [ inputs.nixops4.modules.flake.default ];
      systems = [ "x86_64-linux" ];
      nixops4 =
        { providers, members, ... }:
        let
          # The hosting provider's Garage; the admin token stays in a file.
          garage = {
            adminEndpoint = "https://garage-admin.hoster.example";
            adminToken.file = "/run/secrets/garage-admin-token";
            s3Endpoint = "https://s3.hoster.example";
            region = "garage";
            webEndpoint = "https://web.hoster.example";
          };
          deployment = members.example.members;
        in
        {
          providers.local = inputs.nixops4.modules.nixops4Provider.local;
          providers.garage = inputs.fediversity-providers.modules.nixops4Provider.garage-bucket;

          members.example = {
            members.state = {
              type = providers.local.state_file;
              inputs.name = "nixops4-state.json";
            };

            # Mastodon: one bucket for media, served publicly.
            members.mastodon-media = {
              type = providers.garage.bucket;
              state = deployment.state;
              inputs = {
                inherit garage;
                name = "mastodon-alice-example";
                website = { };
                # The operator chose to keep data when Mastodon is disabled.
                onDelete = "keep";
              };
            };
            members.mastodon-key = {
              type = providers.garage.key;
              state = deployment.state;
              inputs = {
                inherit garage;
                name = "mastodon-alice-example";
                secretKeyPath = "/var/lib/fediversity/secrets/mastodon-s3";
                permissions = [
                  {
                    bucket = deployment.mastodon-media.outputs.name;
                    read = true;
                    write = true;
                  }
                ];
                verify = true;
              };
            };

            # PeerTube: separate public buckets for streaming playlists and
            # web videos, readable by browsers from any origin.
            members.peertube-playlists = {
              type = providers.garage.bucket;
              state = deployment.state;
              inputs = {
                inherit garage;
                name = "peertube-alice-playlists";
                website = { };
                corsRules = [
                  {
                    allowedOrigins = [ "*" ];
                    allowedMethods = [ "GET" "HEAD" ];
                    allowedHeaders = [ "*" ];
                  }
                ];
                onDelete = "purge";
              };
            };
            members.peertube-videos = {
              type = providers.garage.bucket;
              state = deployment.state;
              inputs = {
                inherit garage;
                name = "peertube-alice-videos";
                website = { };
                corsRules = [
                  {
                    allowedOrigins = [ "*" ];
                    allowedMethods = [ "GET" "HEAD" ];
                    allowedHeaders = [ "*" ];
                  }
                ];
                onDelete = "purge";
              };
            };
            members.peertube-key = {
              type = providers.garage.key;
              state = deployment.state;
              inputs = {
                inherit garage;
                name = "peertube-alice-example";
                secretKeyPath = "/var/lib/fediversity/secrets/peertube-s3";
                permissions = [
                  {
                    bucket = deployment.peertube-playlists.outputs.name;
                    read = true;
                    write = true;
                  }
                  {
                    bucket = deployment.peertube-videos.outputs.name;
                    read = true;
                    write = true;
                  }
                ];
              };
            };
          };
        };
    };
}
