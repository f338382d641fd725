package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// ErrUnknownUserCode is returned when a device-flow user code is not pending.
var ErrUnknownUserCode = errors.New("sandbox: unknown user code")

const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// DeviceState is the state of one device code.
type DeviceState string

// Device code states.
const (
	DevicePending  DeviceState = "pending"
	DeviceApproved DeviceState = "approved"
	DeviceDenied   DeviceState = "denied"
	DeviceExpired  DeviceState = "expired"
)

// DeviceCode describes a device code for tests and the admin API; it holds no
// secret.
type DeviceCode struct {
	UserCode  string      `json:"user_code"`
	ClientID  string      `json:"client_id"`
	Scope     string      `json:"scope"`
	State     DeviceState `json:"state"`
	Polls     int         `json:"polls"`
	ExpiresAt time.Time   `json:"expires_at"`
}

type deviceEntry struct {
	DeviceCode
	deviceCode string
	interval   time.Duration
	lastPoll   time.Time
	token      string // GitHub token handed out once approved
}

type deviceState struct {
	byDevice    map[string]*deviceEntry
	byUser      map[string]*deviceEntry
	autoApprove int
}

func (d *deviceState) init() {
	d.byDevice = map[string]*deviceEntry{}
	d.byUser = map[string]*deviceEntry{}
}

// params reads a form, query or JSON body as flat strings.
func params(r *http.Request) (url.Values, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		var m map[string]any
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&m); err != nil {
			return nil, fmt.Errorf("decoding JSON body: %w", err)
		}
		v := r.URL.Query()
		for k, x := range m {
			v.Set(k, fmt.Sprint(x))
		}
		return v, nil
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 1<<16)
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("decoding form: %w", err)
	}
	return r.Form, nil
}

// writeOAuth answers v as JSON when asked for it, else form-encoded, as
// GitHub's OAuth endpoints do.
func writeOAuth(w http.ResponseWriter, r *http.Request, status int, v url.Values) {
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		m := make(map[string]any, len(v))
		for k := range v {
			if n, err := strconv.Atoi(v.Get(k)); err == nil && (k == "interval" || k == "expires_in") {
				m[k] = n
			} else {
				m[k] = v.Get(k)
			}
		}
		writeJSON(w, status, m)
		return
	}
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, v.Encode())
}

func oauthError(code, desc string) url.Values {
	return url.Values{
		"error":             {code},
		"error_description": {desc},
		"error_uri":         {"https://docs.github.com/developers/apps/authorizing-oauth-apps#error-codes-for-the-device-flow"},
	}
}

func userCode() string {
	const alphabet = "BCDFGHJKLMNPQRSTVWXZ23456789"
	b := []byte(randomToken(8))
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:4]) + "-" + string(b[4:])
}

func wholeSeconds(d time.Duration) int {
	return max(int((d+time.Second-1)/time.Second), 1)
}

func (s *Server) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	p, err := params(r)
	if err != nil {
		writeOAuth(w, r, http.StatusBadRequest, oauthError("invalid_request", err.Error()))
		return
	}
	if p.Get("client_id") == "" {
		writeOAuth(w, r, http.StatusBadRequest, oauthError("incorrect_client_credentials", "The client_id is missing."))
		return
	}
	now := s.clock.Now()
	e := &deviceEntry{
		DeviceCode: DeviceCode{
			UserCode:  userCode(),
			ClientID:  p.Get("client_id"),
			Scope:     p.Get("scope"),
			State:     DevicePending,
			ExpiresAt: now.Add(s.cfg.DeviceCodeLifetime),
		},
		deviceCode: hexRandom(20),
		interval:   s.cfg.DeviceInterval,
	}
	s.mu.Lock()
	s.device.byDevice[e.deviceCode] = e
	s.device.byUser[e.UserCode] = e
	s.mu.Unlock()
	writeOAuth(w, r, http.StatusOK, url.Values{
		"device_code":      {e.deviceCode},
		"user_code":        {e.UserCode},
		"verification_uri": {s.baseURL(r) + "/login/device"},
		"expires_in":       {strconv.Itoa(wholeSeconds(s.cfg.DeviceCodeLifetime))},
		"interval":         {strconv.Itoa(wholeSeconds(s.cfg.DeviceInterval))},
	})
}

func (s *Server) handleAccessToken(w http.ResponseWriter, r *http.Request) {
	p, err := params(r)
	if err != nil {
		writeOAuth(w, r, http.StatusBadRequest, oauthError("invalid_request", err.Error()))
		return
	}
	if p.Get("grant_type") != deviceGrantType {
		writeOAuth(w, r, http.StatusOK, oauthError("unsupported_grant_type", "The grant type is not supported."))
		return
	}
	writeOAuth(w, r, http.StatusOK, s.poll(p.Get("client_id"), p.Get("device_code")))
}

// poll advances the device code's state machine by one poll.
func (s *Server) poll(clientID, deviceCode string) url.Values {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.device.byDevice[deviceCode]
	switch {
	case e == nil:
		return oauthError("incorrect_device_code", "The device_code provided is not valid.")
	case e.ClientID != clientID:
		return oauthError("incorrect_client_credentials", "The client_id is not valid.")
	}
	e.Polls++
	if e.State == DevicePending && !now.Before(e.ExpiresAt) {
		e.State = DeviceExpired
	}
	switch e.State {
	case DeviceExpired:
		return oauthError("expired_token", "The device_code has expired.")
	case DeviceDenied:
		return oauthError("access_denied", "The authorization request was denied.")
	}
	if e.State == DevicePending {
		tooFast := !e.lastPoll.IsZero() && now.Sub(e.lastPoll) < e.interval
		e.lastPoll = now
		if tooFast {
			e.interval += 5 * time.Second
			v := oauthError("slow_down", "Too many requests have been made in the same timeframe.")
			v.Set("interval", strconv.Itoa(wholeSeconds(e.interval)))
			return v
		}
		if s.device.autoApprove > 0 && e.Polls >= s.device.autoApprove {
			s.approveLocked(e)
		}
	}
	if e.State == DeviceApproved {
		// A code is good for one token; later polls find it gone.
		delete(s.device.byDevice, e.deviceCode)
		delete(s.device.byUser, e.UserCode)
		return url.Values{"access_token": {e.token}, "token_type": {"bearer"}, "scope": {e.Scope}}
	}
	return oauthError("authorization_pending", "The authorization request is still pending.")
}

func (s *Server) approveLocked(e *deviceEntry) {
	e.State = DeviceApproved
	e.token = "gho_" + randomToken(36)
	s.githubTokens[e.token] = &ghToken{acct: s.defaultAcct, accepted: true}
	s.log.Info("sandbox: device code approved", "user_code", e.UserCode,
		"fingerprint", secret.New(e.token).Fingerprint())
}

// setDeviceState moves a pending user code to state.
func (s *Server) setDeviceState(code string, state DeviceState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.device.byUser[strings.ToUpper(strings.TrimSpace(code))]
	if e != nil && e.State == DevicePending && !s.clock.Now().Before(e.ExpiresAt) {
		e.State = DeviceExpired
	}
	if e == nil || e.State != DevicePending {
		return fmt.Errorf("%w: %q", ErrUnknownUserCode, code)
	}
	switch state {
	case DeviceApproved:
		s.approveLocked(e)
	case DeviceExpired:
		e.State = DeviceExpired
		e.ExpiresAt = s.clock.Now()
	default:
		e.State = state
	}
	return nil
}

// ApproveDevice approves a pending user code: the next poll of its device
// code gets a new gho_ token, which the exchange then accepts.
func (s *Server) ApproveDevice(userCode string) error {
	return s.setDeviceState(userCode, DeviceApproved)
}

// DenyDevice refuses a pending user code: polls get access_denied.
func (s *Server) DenyDevice(userCode string) error { return s.setDeviceState(userCode, DeviceDenied) }

// ExpireDevice expires a pending user code: polls get expired_token.
func (s *Server) ExpireDevice(userCode string) error {
	return s.setDeviceState(userCode, DeviceExpired)
}

// SetDeviceAutoApprove approves every pending device code on its nth poll;
// n <= 0 turns auto-approval off.
func (s *Server) SetDeviceAutoApprove(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.device.autoApprove = max(n, 0)
}

// DeviceCodes lists the device codes not yet redeemed, in no fixed order.
func (s *Server) DeviceCodes() []DeviceCode {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceCode, 0, len(s.device.byUser))
	for _, e := range s.device.byUser {
		out = append(out, e.DeviceCode)
	}
	return out
}

// handleDevicePage is the page a user visits to enter a code; posting the
// form approves it, standing in for GitHub's sign-in and consent screens.
func (s *Server) handleDevicePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	msg := "Enter the code displayed on your device."
	if code := r.URL.Query().Get("user_code"); code != "" {
		if err := s.ApproveDevice(code); err != nil {
			msg = "That code is not valid or has expired."
		} else {
			msg = "Device approved: you can return to your device."
		}
	}
	_, _ = fmt.Fprintf(w, `<!doctype html><title>Device activation (sandbox)</title>
<h1>Device activation</h1><p>%s</p>
<form method="get" action="/login/device"><input name="user_code" placeholder="XXXX-XXXX"><button>Continue</button></form>
`, html.EscapeString(msg))
}
