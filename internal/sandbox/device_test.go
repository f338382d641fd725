package sandbox

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type deviceAnswer struct {
	DeviceCode      string `json:"device_code"`
	UserCode        string `json:"user_code"`
	VerificationURI string `json:"verification_uri"`
	ExpiresIn       int    `json:"expires_in"`
	Interval        int    `json:"interval"`
}

type pollAnswer struct {
	Error       string `json:"error"`
	Interval    int    `json:"interval"`
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	Scope       string `json:"scope"`
}

var jsonAccept = http.Header{"Accept": {"application/json"}, "Content-Type": {"application/x-www-form-urlencoded"}}

func (e *env) startDevice() deviceAnswer {
	e.t.Helper()
	resp, body := e.do("POST", "/login/device/code", jsonAccept, "client_id=Iv1.b507a08c87ecfe98&scope=read:user")
	if resp.StatusCode != 200 {
		e.t.Fatalf("device code: %d %s", resp.StatusCode, body)
	}
	var d deviceAnswer
	mustUnmarshal(e.t, body, &d)
	return d
}

func (e *env) poll(deviceCode string) pollAnswer {
	e.t.Helper()
	form := url.Values{"client_id": {"Iv1.b507a08c87ecfe98"}, "device_code": {deviceCode}, "grant_type": {deviceGrantType}}
	resp, body := e.do("POST", "/login/oauth/access_token", jsonAccept, form.Encode())
	if resp.StatusCode != 200 {
		e.t.Fatalf("poll: %d %s; want 200", resp.StatusCode, body)
	}
	var p pollAnswer
	mustUnmarshal(e.t, body, &p)
	return p
}

func TestDeviceFlowApproved(t *testing.T) {
	e := newEnv(t, Config{DeviceInterval: 5 * time.Second, DeviceCodeLifetime: 900 * time.Second})
	d := e.startDevice()
	if d.Interval != 5 || d.ExpiresIn != 900 || d.VerificationURI != e.sb.URL+"/login/device" || len(d.UserCode) != 9 || d.DeviceCode == "" {
		t.Fatalf("device code answer = %+v; want interval 5, expires_in 900, our verification_uri, XXXX-XXXX", d)
	}
	steps := []struct {
		name      string
		before    func()
		wantError string
		wantIntvl int
	}{
		{"first poll", nil, "authorization_pending", 0},
		{"too fast", func() { e.clock.Advance(4 * time.Second) }, "slow_down", 10},
		{"still too fast for the new interval", func() { e.clock.Advance(9 * time.Second) }, "slow_down", 15},
		{"patient", func() { e.clock.Advance(15 * time.Second) }, "authorization_pending", 0},
		{"approved", func() {
			e.clock.Advance(15 * time.Second)
			if err := e.sb.ApproveDevice(strings.ToLower(d.UserCode)); err != nil {
				t.Fatalf("ApproveDevice(%q) = %v", d.UserCode, err)
			}
		}, "", 0},
		{"redeemed once", func() { e.clock.Advance(15 * time.Second) }, "incorrect_device_code", 0},
	}
	var token string
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		p := e.poll(d.DeviceCode)
		if p.Error != st.wantError || p.Interval != st.wantIntvl {
			t.Fatalf("%s: error %q interval %d; want %q %d", st.name, p.Error, p.Interval, st.wantError, st.wantIntvl)
		}
		if st.wantError == "" {
			if !strings.HasPrefix(p.AccessToken, "gho_") || p.TokenType != "bearer" || p.Scope != "read:user" {
				t.Fatalf("%s: %+v; want gho_ token, bearer, read:user", st.name, p)
			}
			token = p.AccessToken
		}
	}
	if resp, body := e.do("GET", "/copilot_internal/v2/token", ghHeader(token), ""); resp.StatusCode != 200 {
		t.Errorf("exchange with the device-flow token: %d %s; want 200", resp.StatusCode, body)
	}
}

func TestDeviceFlowEndings(t *testing.T) {
	tests := []struct {
		name string
		act  func(e *env, userCode string)
		want string
	}{
		{"denied", func(e *env, c string) { _ = e.sb.DenyDevice(c) }, "access_denied"},
		{"expired by admin", func(e *env, c string) { _ = e.sb.ExpireDevice(c) }, "expired_token"},
		{"expired by time", func(e *env, c string) { e.clock.Advance(15 * time.Minute) }, "expired_token"},
		{"unapproved", func(e *env, c string) { e.clock.Advance(time.Minute) }, "authorization_pending"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			d := e.startDevice()
			tt.act(e, d.UserCode)
			if p := e.poll(d.DeviceCode); p.Error != tt.want {
				t.Errorf("poll = %q; want %q", p.Error, tt.want)
			}
			if tt.want != "authorization_pending" {
				if err := e.sb.ApproveDevice(d.UserCode); !errors.Is(err, ErrUnknownUserCode) {
					t.Errorf("ApproveDevice after %s = %v; want ErrUnknownUserCode", tt.name, err)
				}
			}
		})
	}
}

func TestDeviceAutoApprove(t *testing.T) {
	e := newEnv(t, Config{DeviceAutoApproveAfter: 3, DeviceInterval: time.Second})
	d := e.startDevice()
	for i, want := range []string{"authorization_pending", "authorization_pending", ""} {
		e.clock.Advance(time.Second)
		if p := e.poll(d.DeviceCode); p.Error != want {
			t.Fatalf("poll %d = %q; want %q", i+1, p.Error, want)
		}
	}
}

func TestDeviceRequestShapes(t *testing.T) {
	e := newEnv(t, Config{})
	// JSON body in, form-encoded answer out when JSON is not asked for.
	resp, body := e.do("POST", "/login/device/code", http.Header{"Content-Type": {"application/json"}},
		`{"client_id":"Iv1.b507a08c87ecfe98","scope":"read:user"}`)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		t.Fatalf("device code without Accept: %d %s %s; want 200 form-encoded", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	v, err := url.ParseQuery(string(body))
	if err != nil || v.Get("device_code") == "" || v.Get("interval") != "5" {
		t.Fatalf("form answer %q: %v; want device_code and interval=5", body, err)
	}
	bad := []struct{ name, path, body, want string }{
		{"missing client_id", "/login/device/code", "scope=read:user", "incorrect_client_credentials"},
		{"wrong grant type", "/login/oauth/access_token", "client_id=x&device_code=y&grant_type=password", "unsupported_grant_type"},
		{"unknown device code", "/login/oauth/access_token", "client_id=x&device_code=y&grant_type=" + url.QueryEscape(deviceGrantType), "incorrect_device_code"},
		{"other client", "/login/oauth/access_token", "client_id=other&device_code=" + v.Get("device_code") + "&grant_type=" + url.QueryEscape(deviceGrantType), "incorrect_client_credentials"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, body := e.do("POST", tt.path, jsonAccept, tt.body)
			var p pollAnswer
			mustUnmarshal(t, body, &p)
			if p.Error != tt.want {
				t.Errorf("POST %s %q: error %q; want %q", tt.path, tt.body, p.Error, tt.want)
			}
		})
	}
}

func TestDevicePage(t *testing.T) {
	e := newEnv(t, Config{})
	d := e.startDevice()
	if resp, body := e.do("GET", "/login/device", nil, ""); resp.StatusCode != 200 || !strings.Contains(string(body), "Enter the code") {
		t.Errorf("GET /login/device: %d %s; want a page asking for the code", resp.StatusCode, body)
	}
	if _, body := e.do("GET", "/login/device?user_code="+d.UserCode, nil, ""); !strings.Contains(string(body), "approved") {
		t.Errorf("entering the code: %s; want approved", body)
	}
	if p := e.poll(d.DeviceCode); p.AccessToken == "" {
		t.Errorf("poll after the page approved: %+v; want a token", p)
	}
}
