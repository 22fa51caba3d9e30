// Serves a prometheus-cpp registry over HTTP at /metrics (prometheus-cpp's Exposer, civetweb).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace kvwire::metrics {

class MetricsServer {
 public:
  // Serves `registry` (kept alive by the server) at http://HOST:PORT/metrics. `host` is a
  // numeric IPv4 address, "localhost" or "0.0.0.0"; port 0 lets the OS choose (port() says
  // which). UnavailableError when the address cannot be bound, InvalidArgument for a bad host
  // or port.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      std::string_view host, int port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  // "HOST:PORT" with the bound port.
  std::string address() const;

 private:
  MetricsServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string host_;
  int port_ = 0;
};

}  // namespace kvwire::metrics
