#include "server/metrics/metrics_server.h"

#include <arpa/inet.h>

#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace kvwire::metrics {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    std::string_view host, int port, std::shared_ptr<prometheus::Registry> registry) {
  std::string ip = host == "localhost" ? "127.0.0.1" : std::string(host);
  in_addr parsed{};
  if (inet_pton(AF_INET, ip.c_str(), &parsed) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics host '", std::string(host), "' is not a numeric IPv4 address or localhost"));
  }
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", port, " is out of range"));
  }
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->registry_ = std::move(registry);
  server->host_ = ip;
  const std::string address = absl::StrCat(ip, ":", port);
  try {
    // Two threads: scrapes are rare and cheap; the node's own threads matter more.
    server->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", address, "num_threads", "2"});
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address));
  }
  server->port_ = ports.front();
  server->exposer_->RegisterCollectable(server->registry_);
  return server;
}

MetricsServer::~MetricsServer() = default;

std::string MetricsServer::address() const { return absl::StrCat(host_, ":", port_); }

}  // namespace kvwire::metrics
