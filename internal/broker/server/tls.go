package server

import (
	"crypto/tls"
	"fmt"

	"github.com/copilot-broker/copilot-broker/internal/ops"
)

// loadTLS returns the listeners' TLS configuration, or nil without
// --tls-cert.
func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: loading --tls-cert/--tls-key: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSClientCAFile != "" {
		pool, err := ops.LoadCertPool(cfg.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: --tls-client-ca: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// withALPN returns a copy of c offering protos: gRPC clients insist on
// negotiating h2.
func withALPN(c *tls.Config, protos ...string) *tls.Config {
	c = c.Clone()
	c.NextProtos = protos
	return c
}
