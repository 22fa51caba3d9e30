#include "server/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <exception>
#include <cerrno>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

// Debian's civetweb (the exposer's HTTP server) starts its threads with a fixed 100 KiB stack,
// and glibc carves each thread's static TLS out of its stack. libtorch's dependencies alone
// (OpenBLAS, glog, ...) need ~105 KiB of static TLS, so in a node every civetweb thread fails
// to start ("Cannot create threads", EINVAL) and /metrics cannot be served. This definition
// in the executable (exported: see CMakeLists.txt) takes precedence over libc's and raises
// requested stack sizes below 1 MiB to 1 MiB; larger requests, and threads started without a
// size, are untouched. Stacks are reserved, not committed, so the cost is address space only.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn libc = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (libc == nullptr) return EINVAL;
  return libc(attr, std::max<size_t>(size, size_t{1} << 20));
}

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
