package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// MaxProfileSize bounds an upstream profile file: a real one is a few
// hundred bytes.
const MaxProfileSize = 64 << 10

// MaxProfileHeaders bounds the extra fixed headers of a profile.
const MaxProfileHeaders = 32

// Profile is the upstream profile: the editor identity and any extra fixed
// headers, held by the broker and pushed to proxies with the token stream
// (docs/protocol.md section 8). It is a value; Headers is never modified
// once the profile is made, so profiles may be shared.
type Profile struct {
	Editor
	// Headers are extra fixed headers sent on the token exchange and on
	// every Copilot API call, canonical names to values.
	Headers map[string]string
}

// DefaultProfile returns the built-in profile: [Default] and no extra
// headers.
func DefaultProfile() Profile { return Profile{Editor: Default()} }

// profileFile is the file form of a Profile. Every key may be left out.
type profileFile struct {
	EditorVersion       *string           `json:"editor_version"`
	EditorPluginVersion *string           `json:"editor_plugin_version"`
	UserAgent           *string           `json:"user_agent"`
	IntegrationID       *string           `json:"integration_id"`
	ExchangeAPIVersion  *string           `json:"exchange_api_version"`
	APIVersion          *string           `json:"api_version"`
	Headers             map[string]string `json:"headers"`
}

// ParseProfile reads a profile file's content, JSON or YAML with the keys
// editor_version, editor_plugin_version, user_agent, integration_id,
// exchange_api_version, api_version and headers. A key left out keeps
// base's value; an unknown key is an error (a misspelt key would otherwise
// be ignored silently). The result is validated.
func ParseProfile(data []byte, base Profile) (Profile, error) {
	if len(data) > MaxProfileSize {
		return Profile{}, fmt.Errorf("profile larger than %d bytes", MaxProfileSize)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return Profile{}, errors.New("profile is empty")
	}
	js := trimmed
	if trimmed[0] != '{' {
		var err error
		if js, err = yaml.YAMLToJSON(trimmed); err != nil {
			return Profile{}, fmt.Errorf("profile: not JSON, and not YAML: %w", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var f profileFile
	if err := dec.Decode(&f); err != nil {
		return Profile{}, fmt.Errorf("profile: %w", err)
	}
	if dec.More() {
		return Profile{}, errors.New("profile: more than one document")
	}
	p := base
	for _, kv := range []struct {
		from *string
		to   *string
	}{
		{f.EditorVersion, &p.Version}, {f.EditorPluginVersion, &p.PluginVersion}, {f.UserAgent, &p.UserAgent},
		{f.IntegrationID, &p.IntegrationID}, {f.ExchangeAPIVersion, &p.ExchangeAPIVersion}, {f.APIVersion, &p.APIVersion},
	} {
		if kv.from != nil {
			*kv.to = strings.TrimSpace(*kv.from)
		}
	}
	if f.Headers != nil {
		p.Headers = make(map[string]string, len(f.Headers))
		for k, v := range f.Headers {
			p.Headers[http.CanonicalHeaderKey(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	if err := p.Validate(); err != nil {
		return Profile{}, err
	}
	p.Editor = p.WithDefaults()
	return p, nil
}

// reservedHeaders may not be set as a profile's extra headers: the proxy and
// the broker set them per call, or they carry credentials or framing.
var reservedHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Length", "Content-Type",
	"Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer", "Keep-Alive",
	"X-Request-Id", "X-Initiator", "X-Agent-Task-Id", "X-Interaction-Type", "Openai-Intent",
	"Copilot-Vision-Request", "Anthropic-Beta", "Anthropic-Version", "Accept", "Accept-Encoding",
	"Editor-Version", "Editor-Plugin-Version", "User-Agent", "Copilot-Integration-Id", "X-Github-Api-Version",
}

// Validate checks the editor identity ([Editor.Validate]) and the extra
// headers: at most [MaxProfileHeaders], valid names, no line breaks in
// values, none of the headers set per call or by the identity's own keys.
func (p Profile) Validate() error {
	errs := []error{p.Editor.Validate()}
	if len(p.Headers) > MaxProfileHeaders {
		errs = append(errs, fmt.Errorf("headers: %d, at most %d", len(p.Headers), MaxProfileHeaders))
	}
	for _, k := range slices.Sorted(mapKeys(p.Headers)) {
		switch {
		case !validHeaderName(k):
			errs = append(errs, fmt.Errorf("header name %q is not a valid token", k))
		case slices.Contains(reservedHeaders, http.CanonicalHeaderKey(k)):
			errs = append(errs, fmt.Errorf("header %s is set by the broker or proxy itself (use the profile's own key where there is one)", k))
		case strings.ContainsAny(p.Headers[k], "\r\n\x00"):
			errs = append(errs, fmt.Errorf("header %s: line breaks not allowed", k))
		}
	}
	return errors.Join(errs...)
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// Revision is a short digest of the profile's content: equal profiles have
// equal revisions in every process, so broker replicas reading the same
// file push the same revision and proxies do not flap between them.
func (p Profile) Revision() string {
	e := p.WithDefaults()
	h := sha256.New()
	for _, v := range []string{e.Version, e.PluginVersion, e.UserAgent, e.IntegrationID, e.ExchangeAPIVersion, e.APIVersion} {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	for _, k := range slices.Sorted(mapKeys(p.Headers)) {
		h.Write([]byte(k))
		h.Write([]byte{1})
		h.Write([]byte(p.Headers[k]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// Override returns p with every non-empty field of flags in place of p's,
// and the names of the flags that did override a different value.
func (p Profile) Override(flags Editor) (Profile, []string) {
	var names []string
	for _, kv := range []struct {
		name string
		from string
		to   *string
	}{
		{"--editor-version", flags.Version, &p.Version}, {"--editor-plugin-version", flags.PluginVersion, &p.PluginVersion},
		{"--user-agent", flags.UserAgent, &p.UserAgent}, {"--integration-id", flags.IntegrationID, &p.IntegrationID},
		{"--exchange-api-version", flags.ExchangeAPIVersion, &p.ExchangeAPIVersion}, {"--github-api-version", flags.APIVersion, &p.APIVersion},
	} {
		if kv.from != "" && kv.from != *kv.to {
			*kv.to = kv.from
			names = append(names, kv.name)
		}
	}
	return p, names
}

// SetExtraHeaders sets the profile's extra fixed headers on h.
func (p Profile) SetExtraHeaders(h http.Header) {
	for k, v := range p.Headers {
		h[k] = []string{v}
	}
}
