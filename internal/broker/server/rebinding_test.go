package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/sandbox"
)

// A broker without keys on loopback serves REST only to loopback Host
// values: a DNS-rebinding web page cannot read the token.
func TestNoKeysRefusesRebindingHost(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{})
	client := httpClient(t)
	addr := e.srv.Addrs().HTTP
	port := addr[strings.LastIndexByte(addr, ':'):]
	for _, tt := range []struct {
		host string
		want int
	}{
		{"rebind.attacker.example" + port, http.StatusMisdirectedRequest},
		{"localhost" + port, http.StatusOK},
		{addr, http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/token", nil)
		req.Host = tt.host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET /v1/token with Host %q and no keys = %d; want %d", tt.host, resp.StatusCode, tt.want)
		}
		if tt.want != http.StatusOK && strings.Contains(string(b), "tid=") {
			t.Errorf("refused answer carries a token: %s", b)
		}
	}
}
