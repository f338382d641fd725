package server

import (
	"slices"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/broker"
)

// newProxies is the broker's view of its proxies (ProxyService): it merges
// the usage limits of the accounts the broker serves into their status.
// svc is filled in later (the service needs the view first).
func newProxies(cfg Config, metrics *broker.Metrics, svc **broker.Service) (*broker.Proxies, error) {
	return broker.NewProxies(broker.ProxiesConfig{
		MaxProxies: cfg.MaxProxies, Expiry: cfg.ProxyExpiry,
		KnownAccount: func(name string) bool {
			return *svc != nil && slices.Contains((*svc).Accounts(), name)
		},
		Registerer: metrics.Registry(), Clock: cfg.Clock, Logger: cfg.Logger.With("component", "proxies"),
	})
}

// registerProxies serves the ProxyService over p on the gRPC server (which
// must not serve yet).
func (s *Server) registerProxies(p *broker.Proxies) {
	s.proxySvc = broker.NewProxyService(p, s.cfg.ProxyReportInterval)
	brokerv1.RegisterProxyServiceServer(s.grpc, s.proxySvc)
}
