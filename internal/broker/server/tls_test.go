package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	client                    tls.Certificate
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srvDER, srvKey := issue(2, x509.ExtKeyUsageServerAuth)
	srvKeyDER, _ := x509.MarshalECPrivateKey(srvKey)
	cliDER, cliKey := issue(3, x509.ExtKeyUsageClientAuth)
	pki := testPKI{
		caFile:   write("ca.pem", "CERTIFICATE", caDER),
		certFile: write("server.pem", "CERTIFICATE", srvDER),
		keyFile:  write("server-key.pem", "EC PRIVATE KEY", srvKeyDER),
		pool:     x509.NewCertPool(),
		client:   tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey},
	}
	pki.pool.AddCert(ca)
	return pki
}

func TestTLSAndMutualTLS(t *testing.T) {
	pki := newPKI(t)
	sb := startSandbox(t, sandbox.Config{})
	tests := []struct {
		name       string
		clientCA   string
		clientCert bool
		wantOK     bool
	}{
		{"tls", "", false, true},
		{"mtls with a client certificate", pki.caFile, true, true},
		{"mtls without a client certificate", pki.caFile, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startBroker(t, sb, Config{TLSCertFile: pki.certFile, TLSKeyFile: pki.keyFile, TLSClientCAFile: tt.clientCA})
			ctx := timeout(t, 10*time.Second)
			tc := &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"}
			if tt.clientCert {
				tc.Certificates = []tls.Certificate{pki.client}
			}
			cc := e.conn(grpc.WithTransportCredentials(credentials.NewTLS(tc)))
			_, err := brokerv1.NewTokenBrokerServiceClient(cc).GetToken(ctx, &brokerv1.GetTokenRequest{})
			if (err == nil) != tt.wantOK {
				t.Errorf("gRPC GetToken() over TLS = %v; want success %v", err, tt.wantOK)
			}
			tr := &http.Transport{TLSClientConfig: tc}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Get("https://" + e.srv.Addrs().HTTP + "/v1/token")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = &httpStatusError{resp.StatusCode}
				}
			}
			if (err == nil) != tt.wantOK {
				t.Errorf("REST GET /v1/token over TLS = %v; want success %v", err, tt.wantOK)
			}
		})
	}
}

type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return http.StatusText(e.code) }
