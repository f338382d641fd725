package ops

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestLoopbackHostsOnly(t *testing.T) {
	h := LoopbackHostsOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), "127.0.0.1:4141")
	named := LoopbackHostsOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), "devbox.lan:4141")
	tests := []struct {
		handler http.Handler
		host    string
		want    int
	}{
		{h, "127.0.0.1:4141", 200},
		{h, "localhost:4141", 200},
		{h, "LOCALHOST", 200},
		{h, "app.localhost:4141", 200},
		{h, "127.1.2.3", 200},
		{h, "[::1]:4141", 200},
		{h, "[::ffff:127.0.0.1]:4141", 200},
		{h, "", 200},
		// Rebinding names and other addresses.
		{h, "rebind.attacker.example:4141", 421},
		{h, "localhost.attacker.example", 421},
		{h, "10.0.0.5:4141", 421},
		{h, "0.0.0.0:4141", 421},
		{named, "devbox.lan:4141", 200},
		{named, "other.lan:4141", 421},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/v1/models", nil)
		r.Host = tt.host
		w := httptest.NewRecorder()
		tt.handler.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("Host %q = %d; want %d", tt.host, w.Code, tt.want)
		}
	}
}
