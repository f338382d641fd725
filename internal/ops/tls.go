package ops

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// LoadCertPool reads a PEM file of CA certificates (a broker's client CA, a
// proxy's broker CA) into a pool. A file with no certificate in it is an
// error, not an empty pool that would refuse every peer.
func LoadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates found", path)
	}
	return pool, nil
}

// ClientTLS is a client's TLS to a server it dials (the proxy and `broker
// keys` to the broker): all fields empty means plaintext.
type ClientTLS struct {
	// Enable turns TLS on with the system roots; any file implies it.
	Enable bool
	// CAFile holds the CA certificates of the server's certificate.
	CAFile string
	// CertFile and KeyFile are the client certificate for mutual TLS.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
}

// Config builds the TLS configuration, or nil for plaintext.
func (c ClientTLS) Config() (*tls.Config, error) {
	if !c.Enable && c.CAFile == "" && c.CertFile == "" && c.KeyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := LoadCertPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("broker TLS CA: %w", err)
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("--broker-tls-cert and --broker-tls-key go together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
