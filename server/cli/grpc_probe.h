// Client-side probes of the two standard services every mlra-serve exposes: grpc.health.v1
// Health/Check and reflection's list of services. They use gRPC's generic stub with hand-encoded
// messages (both are one or two fields), because Debian ships no C++ stubs for those protos.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

namespace mlra {

enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
const char* serving_status_name(ServingStatus status);

struct HealthResult {
  grpc::Status status;  // NOT_FOUND when `service` is not registered
  ServingStatus serving = ServingStatus::kUnknown;
};

// Health/Check for `service` ("" = the whole server).
HealthResult check_health(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                          std::chrono::milliseconds timeout);

// Fully qualified names of the services listed by server reflection (v1alpha).
grpc::Status list_services(const std::shared_ptr<grpc::Channel>& channel,
                           std::chrono::milliseconds timeout, std::vector<std::string>& names);

}  // namespace mlra
