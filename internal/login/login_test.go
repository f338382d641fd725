package login

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// virtualClock runs the client's waits in virtual time: each wait is
// recorded, moves the sandbox's fake clock by the same amount (or by less,
// to act like a client polling too soon) and fires at once.
type virtualClock struct {
	upstream *clock.Fake
	mu       sync.Mutex
	waits    []time.Duration
	// shortBy, when set, is how much less than the wait the upstream clock
	// moves on wait number i (0-based).
	shortBy func(i int) time.Duration
}

func (v *virtualClock) Now() time.Time { return v.upstream.Now() }

func (v *virtualClock) NewTimer(d time.Duration) clock.Timer {
	t := &virtualTimer{v: v, c: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc is not used by the login client; it completes [clock.Clock].
func (v *virtualClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return v.upstream.AfterFunc(d, f)
}

func (v *virtualClock) wait(d time.Duration) {
	v.mu.Lock()
	i := len(v.waits)
	v.waits = append(v.waits, d)
	v.mu.Unlock()
	if v.shortBy != nil {
		d -= v.shortBy(i)
	}
	v.upstream.Advance(d)
}

func (v *virtualClock) recorded() []time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.waits)
}

type virtualTimer struct {
	v *virtualClock
	c chan time.Time
}

func (t *virtualTimer) C() <-chan time.Time { return t.c }

func (t *virtualTimer) Stop() bool {
	select {
	case <-t.c:
	default:
	}
	return true
}

func (t *virtualTimer) Reset(d time.Duration) bool {
	t.Stop()
	t.v.wait(d)
	t.c <- t.v.Now()
	return true
}

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// setup starts a sandbox on a fake clock with a 5 s device interval.
func setup(t *testing.T, cfg sandbox.Config) (*sandbox.Running, *virtualClock) {
	t.Helper()
	fc := clock.NewFake(t0)
	cfg.Clock = fc
	if cfg.DeviceInterval == 0 {
		cfg.DeviceInterval = 5 * time.Second
	}
	sb, err := sandbox.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	return sb, &virtualClock{upstream: fc}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRunDeviceFlow(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name string
		// prepare runs before the flow; onCode for every code shown (n
		// counts from 0).
		prepare     func(sb *sandbox.Running, vc *virtualClock)
		onCode      func(t *testing.T, sb *sandbox.Running, n int, c Code)
		restarts    int
		lifetime    time.Duration // of device codes; default 15 min
		wantErr     error
		wantCodes   int
		wantWaits   []time.Duration
		wantTokenOK bool
	}{
		{
			name:      "authorization_pending twice, then approved",
			prepare:   func(sb *sandbox.Running, _ *virtualClock) { sb.SetDeviceAutoApprove(3) },
			wantCodes: 1, wantWaits: []time.Duration{5 * s, 5 * s, 5 * s}, wantTokenOK: true,
		},
		{
			name: "slow_down adds 5 s to the interval",
			prepare: func(sb *sandbox.Running, vc *virtualClock) {
				sb.SetDeviceAutoApprove(3)
				// The second poll comes 3 s early by the server's clock.
				vc.shortBy = func(i int) time.Duration {
					if i == 1 {
						return 3 * s
					}
					return 0
				}
			},
			wantCodes: 1, wantWaits: []time.Duration{5 * s, 5 * s, 10 * s}, wantTokenOK: true,
		},
		{
			name:    "expired_token starts again with a new code",
			prepare: func(sb *sandbox.Running, _ *virtualClock) { sb.SetDeviceAutoApprove(1) },
			onCode: func(t *testing.T, sb *sandbox.Running, n int, c Code) {
				if n == 0 {
					if err := sb.ExpireDevice(c.UserCode); err != nil {
						t.Error(err)
					}
				}
			},
			wantCodes: 2, wantWaits: []time.Duration{5 * s, 5 * s}, wantTokenOK: true,
		},
		{
			name: "expired_token with no restarts left",
			onCode: func(t *testing.T, sb *sandbox.Running, _ int, c Code) {
				if err := sb.ExpireDevice(c.UserCode); err != nil {
					t.Error(err)
				}
			},
			restarts: -1, wantErr: ErrExpired, wantCodes: 1, wantWaits: []time.Duration{5 * s},
		},
		{
			name:     "code lifetime runs out while pending",
			restarts: -1, lifetime: 12 * s, wantErr: ErrExpired, wantCodes: 1,
			// The sandbox's codes live 12 s here: polls at 5 s and 10 s are
			// pending, the one at 15 s is too late.
			wantWaits: []time.Duration{5 * s, 5 * s, 5 * s},
		},
		{
			name: "access_denied stops",
			onCode: func(t *testing.T, sb *sandbox.Running, _ int, c Code) {
				if err := sb.DenyDevice(c.UserCode); err != nil {
					t.Error(err)
				}
			},
			wantErr: ErrAccessDenied, wantCodes: 1, wantWaits: []time.Duration{5 * s},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lifetime := tt.lifetime
			if lifetime == 0 {
				lifetime = 15 * time.Minute
			}
			sb, vc := setup(t, sandbox.Config{DeviceCodeLifetime: lifetime})
			if tt.prepare != nil {
				tt.prepare(sb, vc)
			}
			var codes []Code
			tok, err := Run(ctxT(t), Config{
				GitHubURL: sb.URL, Clock: vc, Restarts: tt.restarts,
				Prompt: func(c Code) {
					// The code was asked for with the Copilot client ID and scope.
					for _, dc := range sb.DeviceCodes() {
						if dc.UserCode == c.UserCode && (dc.ClientID != DefaultClientID || dc.Scope != DefaultScope) {
							t.Errorf("device code asked for with client %q scope %q; want %q, %q", dc.ClientID, dc.Scope, DefaultClientID, DefaultScope)
						}
					}
					if c.VerificationURI != sb.URL+"/login/device" || c.ExpiresIn != lifetime {
						t.Errorf("Code = %+v; want the sandbox's verification URI and lifetime %v", c, lifetime)
					}
					if tt.onCode != nil {
						tt.onCode(t, sb, len(codes), c)
					}
					codes = append(codes, c)
				},
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run() = %v; want %v", err, tt.wantErr)
			}
			if len(codes) != tt.wantCodes {
				t.Errorf("codes shown = %d; want %d", len(codes), tt.wantCodes)
			}
			if diff := cmp.Diff(tt.wantWaits, vc.recorded()); diff != "" {
				t.Errorf("waits between polls (-want +got):\n%s", diff)
			}
			if tt.wantTokenOK {
				if tok.IsZero() || tok.Reveal()[:4] != "gho_" {
					t.Errorf("Run() token fingerprint %q; want a gho_ token", tok.Fingerprint())
				}
				if n := len(sb.DeviceCodes()); n != len(codes)-1 {
					t.Errorf("device codes left = %d; want only the expired ones", n)
				}
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	oauth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"error":"device_flow_disabled","error_description":"Device flow is disabled."}`))
	}))
	defer oauth.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer broken.Close()
	prompt := func(Code) { t.Error("prompted without a code") }
	tests := []struct {
		name, url string
		check     func(error) bool
	}{
		{"oauth error", oauth.URL, func(err error) bool {
			var oe *OAuthError
			return errors.As(err, &oe) && oe.Code == "device_flow_disabled"
		}},
		{"bad gateway", broken.URL, func(err error) bool { return err != nil }},
		{"plain http beyond loopback", "http://github.example.com", func(err error) bool { return err != nil }},
		{"not a URL", "github.com", func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(ctxT(t), Config{GitHubURL: tt.url, Prompt: prompt})
			if !tt.check(err) {
				t.Errorf("Run(%s) = %v; want the matching error", tt.url, err)
			}
		})
	}
	oauth.Client().CloseIdleConnections()
}

// A device code answer without an interval means 5 s between polls.
func TestRunDefaultInterval(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/login/device/code" {
			_, _ = w.Write([]byte(`{"device_code":"dc","user_code":"ABCD-1234","verification_uri":"https://example.test/device","expires_in":900}`))
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"gho_abc","token_type":"bearer"}`))
	}))
	defer srv.Close()
	vc := &virtualClock{upstream: clock.NewFake(t0)}
	tok, err := Run(ctxT(t), Config{GitHubURL: srv.URL, Clock: vc, Prompt: func(Code) {}})
	if err != nil || tok.Reveal() != "gho_abc" {
		t.Fatalf("Run() = %s, %v; want the token", tok.Fingerprint(), err)
	}
	if diff := cmp.Diff([]time.Duration{5 * time.Second}, vc.recorded()); diff != "" {
		t.Errorf("waits before polling (-want +got):\n%s", diff)
	}
	srv.Client().CloseIdleConnections()
}
