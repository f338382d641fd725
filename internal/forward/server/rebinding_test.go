package server

import (
	"net/http"
	"strings"
	"testing"
)

// A proxy without keys on loopback serves only loopback Host values: a
// DNS-rebinding web page (Host: its own name, resolving to 127.0.0.1) gets
// 421 and no upstream call is made.
func TestNoKeysRefusesRebindingHost(t *testing.T) {
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.Keys = nil }})
	port := st.proxy.Addrs().HTTP[strings.LastIndexByte(st.proxy.Addrs().HTTP, ':'):]
	for _, tt := range []struct {
		host string
		want int
	}{
		{"rebind.attacker.example" + port, http.StatusMisdirectedRequest},
		{"localhost" + port, http.StatusOK},
		{"127.0.0.1" + port, http.StatusOK},
	} {
		req, _ := http.NewRequest("POST", st.base+"/v1/chat/completions", strings.NewReader(chatBody))
		req.Host = tt.host
		req.Header.Set("Content-Type", "application/json")
		resp, err := st.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("POST with Host %q and no keys = %d; want %d", tt.host, resp.StatusCode, tt.want)
		}
	}
}
