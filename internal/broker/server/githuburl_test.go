package server

import (
	"context"
	"strings"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// The GitHub token is sent to --github-api-url: plain http only on loopback.
func TestStartRefusesPlainHTTPGitHubAPIURLBeyondLoopback(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://github.example.com", false},
		{"http://10.0.0.7:8787", false},
		{"ftp://github.example.com", false},
		{"https://user:pw@github.example.com", false},
		{"https://github.example.com/api/v3", true},
		{"http://127.0.0.1:8787", true},
		{"http://localhost:8787", true},
		{"http://[::1]:8787", true},
	} {
		err := Config{GitHubAPIURL: tt.url, GitHubToken: secret.New("ghu_x")}.withDefaults().validate()
		if (err == nil) != tt.ok {
			t.Errorf("validate() with --github-api-url %s = %v; want ok %v", tt.url, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("error quotes the URL's password: %v", err)
		}
	}
	if _, err := Start(context.Background(), Config{GitHubAPIURL: "http://github.example.com", GitHubToken: secret.New("ghu_x"),
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}); err == nil {
		t.Error("Start() with a plain http GitHub URL beyond loopback = nil; want an error")
	}
}
