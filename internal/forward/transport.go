package forward

import (
	"net/http"

	transport "github.com/copilot-broker/copilot-broker/internal/forward/upstream"
)

// The upstream transport lives in package upstream; these names keep the
// proxy's wiring (package server, tests, bench) as it was.

// DefaultResponseHeaderTimeout is upstream.DefaultResponseHeaderTimeout.
const DefaultResponseHeaderTimeout = transport.DefaultResponseHeaderTimeout

// TransportConfig is upstream.Config.
type TransportConfig = transport.Config

// ConnectTo is upstream.ConnectTo.
type ConnectTo = transport.ConnectTo

// NewTransport is upstream.NewTransport.
func NewTransport(cfg TransportConfig) *http.Transport { return transport.NewTransport(cfg) }

// ParseConnectTo is upstream.ParseConnectTo.
func ParseConnectTo(entries []string) (ConnectTo, error) { return transport.ParseConnectTo(entries) }
