package ops

import (
	"crypto/x509"
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
