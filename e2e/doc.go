// Package e2e holds the end-to-end tests: they build the real sandbox, broker
// and proxy binaries once, run each as a separate process on free loopback
// ports, and drive them the way users do, with the official OpenAI and
// Anthropic Go SDKs, a plain HTTP client on the broker's REST gateway and a
// grpc.health.v1 client.
//
// Besides the client paths, one test per failure scenario of the design:
// two proxies sharing one broker's exchanges, the broker killed and restarted
// under streaming load, a GitHub outage longer than a refresh period, a
// revoked GitHub credential replaced through the token file, and SIGTERM to a
// proxy in the middle of a stream. The sandbox issues tokens that live a few
// seconds, so hours of lifecycle run in a couple of minutes.
//
// The package has no non-test code apart from this comment; `go test ./e2e`
// (part of `make test`) runs it.
package e2e
