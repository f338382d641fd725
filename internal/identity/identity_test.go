package identity

import (
	"flag"
	"net/http"
	"strings"
	"testing"
)

func TestDefaultsAreOneMatchedRelease(t *testing.T) {
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	// The newest matched set of docs/protocol.md section 8: the plugin
	// version and the User-Agent name one release.
	_, plugin, _ := ParseVersion(d.PluginVersion)
	if !strings.HasSuffix(d.UserAgent, "/"+plugin.String()) {
		t.Errorf("User-Agent %q does not carry the plugin version %s", d.UserAgent, plugin)
	}
	if d.ExchangeAPIVersion != "2025-04-01" || d.APIVersion != "2026-08-01" {
		t.Errorf("API versions = %s, %s; want 2025-04-01 (exchange), 2026-08-01 (API)", d.ExchangeAPIVersion, d.APIVersion)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		e    Editor
		ok   bool
	}{
		{"zero takes defaults", Editor{}, true},
		{"insider suffix", Editor{Version: "vscode/1.112.0-insider"}, true},
		{"no name", Editor{Version: "1.111.0"}, false},
		{"two numbers", Editor{PluginVersion: "copilot-chat/0.42"}, false},
		{"bad api version", Editor{APIVersion: "2025-5-1"}, false},
		{"line break", Editor{UserAgent: "a\r\nX-Evil: 1"}, false},
	}
	for _, tt := range tests {
		if err := tt.e.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v; want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestParseVersion(t *testing.T) {
	name, v, err := ParseVersion("copilot-chat/0.42.1")
	if err != nil || name != "copilot-chat" || v != (Version{0, 42, 1}) {
		t.Fatalf("ParseVersion = %q %v %v", name, v, err)
	}
	if !(Version{0, 26, 7}).Less(v) || v.Less(Version{0, 26, 7}) || v.Less(v) {
		t.Error("Less is not an order on versions")
	}
	for _, bad := range []string{"", "copilot-chat", "copilot-chat/", "copilot-chat/a.b.c", "/1.2.3", "x/1.2.3.4", "x/99999999.0.0"} {
		if _, _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", bad)
		}
	}
}

func TestHeaders(t *testing.T) {
	e := Editor{Version: "vscode/2.0.0"}
	ex, api := http.Header{}, http.Header{}
	e.SetExchangeHeaders(ex)
	e.SetAPIHeaders(api)
	for h, want := range map[string]string{"Editor-Version": "vscode/2.0.0", "Editor-Plugin-Version": DefaultEditorPluginVersion,
		"User-Agent": DefaultUserAgent, "X-Github-Api-Version": DefaultExchangeAPIVersion} {
		if got := ex.Get(h); got != want {
			t.Errorf("exchange %s = %q; want %q", h, got, want)
		}
	}
	if ex.Get("Copilot-Integration-Id") != "" {
		t.Error("the exchange carries Copilot-Integration-Id; the reference client sends it only to the Copilot API")
	}
	for h, want := range map[string]string{"Editor-Version": "vscode/2.0.0", "Copilot-Integration-Id": "vscode-chat", "X-Github-Api-Version": DefaultAPIVersion} {
		if got := api.Get(h); got != want {
			t.Errorf("API %s = %q; want %q", h, got, want)
		}
	}
}

func TestRegisterFlags(t *testing.T) {
	for _, tt := range []struct {
		use        Use
		has, lacks []string
	}{
		{Exchange, []string{"editor-version", "editor-plugin-version", "user-agent", "exchange-api-version"}, []string{"integration-id", "github-api-version"}},
		{API, []string{"editor-version", "integration-id", "github-api-version"}, []string{"exchange-api-version"}},
	} {
		var e Editor
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		e.RegisterFlags(fs, tt.use)
		for _, n := range tt.has {
			if fs.Lookup(n) == nil {
				t.Errorf("use %d: no --%s", tt.use, n)
			}
		}
		for _, n := range tt.lacks {
			if fs.Lookup(n) != nil {
				t.Errorf("use %d: unexpected --%s", tt.use, n)
			}
		}
		if err := fs.Parse([]string{"--editor-version", "vscode/3.0.0"}); err != nil {
			t.Fatal(err)
		}
		if e.Version != "vscode/3.0.0" || e.PluginVersion != "" {
			t.Errorf("use %d: after parse %+v", tt.use, e)
		}
	}
}
