// API key and TLS for gRPC. The key is checked by a core auth metadata processor attached to the
// listening credentials (TLS or plaintext alike): it runs on the transport before the call is
// dispatched, so an unauthenticated call costs no handler thread and reaches no service. The
// C++ ServerCredentials wrapper exists because grpc::InsecureServerCredentials() refuses
// processors; core's insecure credentials accept one.
#include "server/auth.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace mlra {
namespace {

constexpr std::string_view kBearer = "bearer ";
constexpr std::string_view kOpenPrefix = "/grpc.health.v1.Health/";

std::string_view slice_view(const grpc_slice& s) {
  return {reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(s)), GRPC_SLICE_LENGTH(s)};
}

// Checks each call's metadata; the state is the ApiKeyAuth, owned by the processor.
void process_metadata(void* state, grpc_auth_context*, const grpc_metadata* md, size_t num_md,
                      grpc_process_auth_metadata_done_cb done, void* user_data) {
  const auto& auth = *static_cast<const ApiKeyAuth*>(state);
  const grpc_metadata* authorization = nullptr;
  bool open = false;
  for (size_t i = 0; i < num_md; ++i) {
    const std::string_view key = slice_view(md[i].key);
    if (key == ":path") open = slice_view(md[i].value).substr(0, kOpenPrefix.size()) == kOpenPrefix;
    if (key == "authorization" && !authorization) authorization = &md[i];
  }
  if (authorization && auth.api_key_matches(slice_view(authorization->value))) {
    done(user_data, authorization, 1, nullptr, 0, GRPC_STATUS_OK, nullptr);
  } else if (open) {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
  } else {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED,
         authorization ? "wrong API key"
                       : "missing API key: send metadata 'authorization: Bearer <key>'");
  }
}

void destroy_state(void* state) {
  delete static_cast<ApiKeyAuth*>(state);
}

// Core server credentials as a grpc::ServerCredentials (AddPortToServer is what Server calls).
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  explicit CoreServerCredentials(grpc_server_credentials* creds) : creds_(creds) {}
  ~CoreServerCredentials() override { grpc_server_credentials_release(creds_); }
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    throw std::logic_error("CoreServerCredentials: the API key processor is set at creation");
  }
  void set_api_key(std::string key) {
    grpc_auth_metadata_processor processor{process_metadata, destroy_state,
                                           new ApiKeyAuth(std::move(key))};
    grpc_server_credentials_set_auth_metadata_processor(creds_, processor);
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }
  grpc_server_credentials* creds_;
};

std::string read_pem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot read the TLS ") + what + " file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos)
    throw std::runtime_error(std::string("the TLS ") + what + " file " + path + " is not PEM");
  return text.str();
}

}  // namespace

bool ApiKeyAuth::api_key_matches(std::string_view header) const {
  if (key_.empty()) return true;
  if (header.size() < kBearer.size()) return false;
  for (size_t i = 0; i < kBearer.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != kBearer[i]) return false;
  const std::string_view given = header.substr(kBearer.size());
  // Every byte of the longer string is visited whatever the contents.
  unsigned diff = given.size() != key_.size() ? 1u : 0u;
  const size_t n = std::max(given.size(), key_.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char a = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    const unsigned char b = i < key_.size() ? static_cast<unsigned char>(key_[i]) : 0;
    diff |= unsigned(a ^ b);
  }
  return diff == 0;
}

std::string resolve_api_key(const std::string& configured) {
  if (!configured.empty()) return configured;
  const char* env = std::getenv("MLRA_API_KEY");
  return env ? std::string(env) : std::string();
}

std::shared_ptr<grpc::ServerCredentials> make_server_credentials(const AuthOptions& options) {
  grpc_server_credentials* core = nullptr;
  if (options.tls()) {
    const std::string cert = read_pem(options.tls_cert_file, "certificate");
    const std::string key = read_pem(options.tls_key_file, "key");
    grpc_ssl_pem_key_cert_pair pair{key.c_str(), cert.c_str()};
    core = grpc_ssl_server_credentials_create_ex(nullptr, &pair, 1,
                                                 GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, nullptr);
  } else {
    core = grpc_insecure_server_credentials_create();
  }
  if (!core) throw std::runtime_error("cannot create the gRPC server credentials");
  auto creds = std::make_shared<CoreServerCredentials>(core);
  if (!options.api_key.empty()) creds->set_api_key(options.api_key);
  return creds;
}

}  // namespace mlra
