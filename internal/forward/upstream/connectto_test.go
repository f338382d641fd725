package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

func TestParseConnectTo(t *testing.T) {
	tests := []struct {
		in      []string
		want    ConnectTo // nil: an error
		wantErr bool
	}{
		{in: nil, want: ConnectTo{}},
		{in: []string{"api.githubcopilot.com:443:127.0.0.1:8443"}, want: ConnectTo{"api.githubcopilot.com:443": "127.0.0.1:8443"}},
		{in: []string{"API.GithubCopilot.com:443:10.0.0.1:443, a.example:443:[::1]:9000", "[::2]:80:b.example:8080"},
			want: ConnectTo{"api.githubcopilot.com:443": "10.0.0.1:443", "a.example:443": "[::1]:9000", "[::2]:80": "b.example:8080"}},
		{in: []string{"", " , "}, want: ConnectTo{}},
		{in: []string{"a:443:b"}, wantErr: true},
		{in: []string{"a:443:b:"}, wantErr: true},
		{in: []string{":443:b:1"}, wantErr: true},
		{in: []string{"a::b:1"}, wantErr: true},
		{in: []string{"a:443:b:1:2"}, wantErr: true},
		{in: []string{"a:443:b:70000"}, wantErr: true},
		{in: []string{"a:443:b:0"}, wantErr: true},
		{in: []string{"a:x:b:1"}, wantErr: true},
		{in: []string{"a:443:[::1:1"}, wantErr: true},
		{in: []string{"a:443:[::1]x:1"}, wantErr: true},
		{in: []string{"a:443:b:1", "A:443:c:2"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseConnectTo(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("ParseConnectTo(%q) = %v, %v; want %v (error %t)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestTransportConnectTo checks that a mapped host:port is dialled at its
// target while TLS verifies the request's own host: the test server's
// certificate names example.com, so a request for example.com succeeds
// through the mapping and one for a name the certificate lacks fails.
func TestTransportConnectTo(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host+" "+r.TLS.ServerName)
	}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	target := srv.Listener.Addr().String()
	ct, err := ParseConnectTo([]string{"example.com:443:" + target, "api.githubcopilot.com:443:" + target})
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTransport(Config{RootCAs: roots, ConnectTo: ct})
	defer tr.CloseIdleConnections()
	tr.Proxy = nil
	client := &http.Client{Transport: tr}

	resp, err := client.Get("https://example.com/x")
	if err != nil {
		t.Fatalf("GET via connect-to: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := string(b); got != "example.com example.com" {
		t.Errorf("upstream saw Host and SNI %q; want the URL's host for both", got)
	}

	_, err = client.Get("https://api.githubcopilot.com/x")
	var cerr *tls.CertificateVerificationError
	if !errors.As(err, &cerr) {
		t.Errorf("GET of a name the certificate lacks = %v; want a certificate verification error", err)
	}
}
