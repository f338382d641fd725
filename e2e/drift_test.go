package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestIdentityDrift runs the drift of docs/operations.md ("Rolling out a
// new upstream profile") on real binaries: the sandbox retires the plugin
// version the fleet presents; the proxies' next answers are 466 and the
// broker shows IDENTITY_REJECTED within 10 s while every readiness stays
// up; the operator edits the broker's profile file and every proxy serves
// again within 2 s, with no restart; a malformed edit afterwards leaves the
// fleet on the profile it has.
func TestIdentityDrift(t *testing.T) {
	sb := startSandbox(t, sandboxOpts{})
	profile := filepath.Join(t.TempDir(), "upstream-profile.yaml")
	writeProfile := func(content string) {
		t.Helper()
		tmp := profile + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, profile); err != nil {
			t.Fatal(err)
		}
	}
	writeProfile("# the fleet's identity\neditor_version: vscode/1.140.0\neditor_plugin_version: copilot-chat/0.68.0\nuser_agent: GitHubCopilotChat/0.68.0\n")
	b := startBroker(t, sb, "--upstream-profile", profile, "--upstream-profile-poll", "100ms")
	proxies := []*proxyProc{startProxy(t, b, sb), startProxy(t, b, sb)}
	client := newHTTPClient(t)
	chat := func(px *proxyProc) (int, string) {
		req, _ := http.NewRequest("POST", px.url+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4.1","messages":[{"role":"user","content":"drift"}]}`))
		req.Header.Set("Authorization", "Bearer "+px.apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	get := func(url string, withKey bool) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if withKey {
			req.Header.Set("Authorization", "Bearer "+b.key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	account := func() *brokerv1.Account {
		code, body := get(b.httpURL+"/v1/accounts", true)
		var out brokerv1.ListAccountsResponse
		if code != 200 || (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(body), &out) != nil || len(out.GetAccounts()) == 0 {
			t.Fatalf("GET /v1/accounts = %d %s", code, body)
		}
		return out.GetAccounts()[0]
	}
	for i, px := range proxies {
		waitFor(t, startTimeout, fmt.Sprintf("proxy %d serving", i), func() bool { code, _ := chat(px); return code == 200 })
	}

	sb.admin(t, "POST", "retire", map[string]any{"editor_plugin_versions": []string{"copilot-chat/0.68.0"}}, nil)
	retired := time.Now()
	code, body := chat(proxies[0])
	if code != 466 || !strings.Contains(body, "--upstream-profile") {
		t.Fatalf("after the retirement: %d %s; want 466 telling to edit the profile file", code, body)
	}
	waitFor(t, 10*time.Second, "the broker's account IDENTITY_REJECTED", func() bool {
		return account().GetAccountStatus() == brokerv1.AccountStatus_ACCOUNT_STATUS_IDENTITY_REJECTED
	})
	alarm := time.Since(retired)
	a := account()
	if r := a.GetIdentityRejection(); r.GetProfileSource() != profile || r.GetOrigin() != "api" || !strings.Contains(r.GetDetail(), "466") {
		t.Errorf("identity rejection = %v; want origin api, the profile file and the 466", r)
	}
	if _, m := get(b.adminURL+"/metrics", false); !strings.Contains(m, `copilot_broker_identity_rejected_total{account="",origin="api"}`) {
		t.Error("broker /metrics lacks copilot_broker_identity_rejected_total{origin=\"api\"}")
	}
	if _, m := get(proxies[0].adminURL+"/metrics", false); !strings.Contains(m, `copilot_proxy_identity_rejected_total{account=""} 1`) {
		t.Error("proxy /metrics lacks copilot_proxy_identity_rejected_total 1")
	}
	if !strings.Contains(b.logs(), "profile_file="+profile) {
		t.Error("the broker's log does not name the profile file")
	}
	for _, url := range []string{b.adminURL + "/readyz", proxies[0].adminURL + "/readyz", proxies[1].adminURL + "/readyz"} {
		if code, body := get(url, false); code != 200 {
			t.Errorf("%s = %d %s during the drift; want readiness kept", url, code, body)
		}
	}

	writeProfile("# copilot-chat 0.68.0 retired\neditor_version: vscode/1.141.0\neditor_plugin_version: copilot-chat/0.70.0\nuser_agent: GitHubCopilotChat/0.70.0\n")
	edited := time.Now()
	var healed [2]time.Duration
	for i, px := range proxies {
		healed[i] = waitGoal(t, edited, 2*time.Second, fmt.Sprintf("proxy %d serving on the new profile", i), func() bool {
			code, _ := chat(px)
			return code == 200
		})
	}
	waitFor(t, 5*time.Second, "the broker's account OK again", func() bool {
		return account().GetAccountStatus() == brokerv1.AccountStatus_ACCOUNT_STATUS_OK
	})
	t.Logf("drift: alarm %v after the retirement; proxies serving %v and %v after the edit", alarm.Round(time.Millisecond),
		healed[0].Round(time.Millisecond), healed[1].Round(time.Millisecond))

	writeProfile("editor_version: [\n")
	waitFor(t, 5*time.Second, "the malformed profile refused", func() bool {
		_, m := get(b.adminURL+"/metrics", false)
		return strings.Contains(m, `copilot_broker_upstream_profile_reloads_total{result="invalid"} 1`)
	})
	if !strings.Contains(b.logs(), "upstream profile refused; keeping the current profile") {
		t.Error("no log line for the malformed profile")
	}
	for i, px := range proxies {
		if code, body := chat(px); code != 200 {
			t.Errorf("proxy %d after a malformed profile: %d %s; want the old profile kept", i, code, body)
		}
	}
}
