// Optional transport security for the nodes: TLS on the serving port (optionally requiring
// client certificates), TLS to the upstream node, and a shared bearer token.
//
// Off by default: nodes listen on loopback in plain text, which is what a single machine or a
// pod-local sidecar needs. Across machines, give every node the same --auth-token-file and a
// certificate, and the prefill and scout nodes the CA that signed the decode node's.
//
// The bearer token travels as gRPC metadata "authorization: Bearer <token>" on every kvwire.v1
// call (the nodes add it to their own upstream calls). It is checked by the kvwire services
// only: the gRPC health service and reflection stay open, so probes need no secret. Over plain
// text the token is visible on the wire; pair it with TLS off the loopback interface.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace kvwire::transport {

struct SecurityOptions {
  // PEM files. Serve TLS when both are set; the pair is also presented as this node's client
  // certificate on its upstream calls when those use TLS.
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA bundle: when set (with a certificate), clients must present a certificate it signed.
  std::string tls_client_ca_file;
  // PEM CA bundle that signed the upstream node's certificate: when set, upstream calls (prefill
  // -> decode, scout -> big node) use TLS and verify the peer with it.
  std::string upstream_ca_file;
  // The shared secret (file contents, surrounding whitespace removed); empty: no token.
  std::string auth_token;
};

// Reads a token file: its contents without surrounding whitespace. InvalidArgument when empty
// or when it holds anything but visible ASCII (it is sent as an HTTP/2 header value),
// NotFound when unreadable.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Credentials for the serving port. InvalidArgument for half a key pair or a client CA without
// a certificate; NotFound for unreadable files.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityOptions& options);

// Credentials for the upstream channel (insecure unless upstream_ca_file is set).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeUpstreamCredentials(
    const SecurityOptions& options);

// The metadata key and value a client sends with `token`.
inline constexpr char kAuthorizationMetadata[] = "authorization";
std::string BearerValue(const std::string& token);

// OK when `token` is empty or the call carries it; UNAUTHENTICATED otherwise. Compares in
// constant time.
absl::Status CheckBearer(const grpc::ServerContextBase& context, const std::string& token);

}  // namespace kvwire::transport
