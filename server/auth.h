// Optional authentication of the frontends: an API key every call must carry as
// `authorization: Bearer <key>` metadata (gRPC; the HTTP frontend checks the same header with
// ApiKeyAuth::api_key_matches), and TLS for gRPC from PEM certificate and key files.
// The key comes from the config (`api_key`) or the environment (MLRA_API_KEY); it is never
// logged, never written out with the config, and consumed from the call's metadata once checked,
// so handlers never see it. grpc.health.v1.Health stays open: orchestrator probes send no
// metadata, and health says only SERVING or NOT_SERVING.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <grpcpp/security/server_credentials.h>

namespace mlra {

struct AuthOptions {
  std::string api_key;        // empty: no key required
  std::string tls_cert_file;  // PEM certificate (chain); set together with tls_key_file: TLS
  std::string tls_key_file;   // PEM private key
  bool tls() const { return !tls_cert_file.empty(); }
};

class ApiKeyAuth {
 public:
  explicit ApiKeyAuth(std::string key) : key_(std::move(key)) {}
  bool required() const { return !key_.empty(); }
  // True when no key is required, or `header` is "Bearer <key>" (the scheme in any case). The
  // comparison takes the same time wherever the first difference is.
  bool api_key_matches(std::string_view header) const;

 private:
  std::string key_;
};

// `configured`, or MLRA_API_KEY from the environment when `configured` is empty.
std::string resolve_api_key(const std::string& configured);

// Credentials for ServerBuilder::AddListeningPort: TLS when the options name a certificate,
// plaintext otherwise; with an API key, every call but health checks without the matching
// `authorization` metadata ends UNAUTHENTICATED before any handler runs. Throws
// std::runtime_error naming a certificate or key file that cannot be read or is not PEM.
std::shared_ptr<grpc::ServerCredentials> make_server_credentials(const AuthOptions& options);

}  // namespace mlra
